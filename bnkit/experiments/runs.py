"""Saved training runs: train once, keep the result, reuse it or continue it.

:func:`cached_train` does the bookkeeping every command of
``python -m bnkit.experiments`` needs: it trains and saves a
:class:`~bnkit.experiments.History` as JSON and NPZ, reuses a finished result
with the same settings when asked to, and continues an interrupted run from
its checkpoint.

:func:`save_histories` and :func:`load_histories` keep many runs (labelled,
several seeds each) in one compact JSON file, numbers rounded to a few
significant digits: the form in which a chapter ships the result of a long
command.
"""

from __future__ import annotations

import gzip
import json
import math
from pathlib import Path
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Union

from .models import mlp
from .training import History, train

__all__ = ["RESULTS_DIR", "run_key", "cached_train", "save_histories", "load_histories"]

_COMPACT_FORMAT = "bnkit.experiments.histories"

#: Where the commands write their results unless told otherwise.
RESULTS_DIR = Path("results")


def run_key(model_kwargs: Mapping[str, Any], train_kwargs: Mapping[str, Any], data_name: str) -> Dict[str, Any]:
    """The settings that identify a run, as plain JSON data (what :func:`cached_train` compares)."""
    return json.loads(json.dumps({"data": data_name, "model": dict(model_kwargs), "train": dict(train_kwargs)},
                                 default=repr))


def cached_train(stem: Path, data, data_name: str, model_kwargs: Mapping[str, Any],
                 train_kwargs: Mapping[str, Any], resume: bool = False, progress: bool = True,
                 description: str = "train", log: Callable[[str], None] = print) -> History:
    """Train ``mlp(**model_kwargs)`` with ``train(..., **train_kwargs)``, or reuse a saved result.

    Writes ``{stem}.json`` and ``{stem}.npz`` (the :class:`~bnkit.experiments.History`) and, while
    running, ``{stem}.ckpt`` (deleted when the run finishes). With ``resume``:
    a finished result whose settings equal these is loaded instead of
    trained; otherwise an existing checkpoint is continued. The settings are
    stored in ``history.config["key"]`` (:func:`run_key`).
    """
    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    key = run_key(model_kwargs, train_kwargs, data_name)
    json_path = stem.with_suffix(".json")
    if resume and json_path.is_file():
        old = History.load(json_path)
        if old.config.get("key") == key and (old.steps_done >= train_kwargs["steps"] or old.diverged):
            log(f"reusing {json_path}")
            return old
        log(f"{json_path} has other settings or is unfinished: training again")
    model = mlp(**model_kwargs)
    history = train(model, data, checkpoint=stem.with_suffix(".ckpt"), resume=resume, progress=progress,
                    description=description, **train_kwargs)
    history.config["key"] = key
    history.save(json_path)
    history.save(stem.with_suffix(".npz"))
    return history


def _rounded(value, digits: int):
    if isinstance(value, list):
        return [_rounded(v, digits) for v in value]
    if isinstance(value, float) and math.isfinite(value) and value != 0.0:
        return float(f"{value:.{digits}g}")
    return value


def save_histories(histories: Mapping[str, Sequence[History]], path: Union[str, Path],
                   keys: Optional[Sequence[str]] = None, digits: int = 5,
                   meta: Optional[Mapping[str, Any]] = None) -> Path:
    """Write labelled lists of histories (e.g. one per seed) to one compact JSON file.

    Every recorded array is kept, the logged series only for ``keys`` (all
    when None); every float is rounded to ``digits`` significant digits.
    ``meta`` (JSON data) is stored alongside. A path ending in ``.gz`` is
    written gzip-compressed. Read back with :func:`load_histories`. Returns
    the path.
    """
    if digits < 1:
        raise ValueError(f"digits must be >= 1, got {digits}")
    out = {}
    for label, hs in histories.items():
        entries = []
        for h in hs:
            d = h.to_dict()
            d["arrays"] = {k: _rounded(v, digits) for k, v in d["arrays"].items()}
            d["logs"] = {k: {"steps": v["steps"], "values": _rounded(v["values"], digits)}
                         for k, v in d["logs"].items() if keys is None or k in keys}
            entries.append(d)
        out[label] = entries
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps({"format": _COMPACT_FORMAT, "version": 1, "digits": int(digits), "meta": dict(meta or {}),
                       "histories": out}, allow_nan=False, separators=(",", ":")) + "\n"
    if path.suffix == ".gz":
        path.write_bytes(gzip.compress(text.encode(), mtime=0))  # mtime 0: the same runs give the same bytes
    else:
        path.write_text(text)
    return path


def load_histories(path: Union[str, Path]) -> Dict[str, List[History]]:
    """The labelled lists of histories written by :func:`save_histories` (its ``meta`` is in the file's ``"meta"``)."""
    path = Path(path)
    d = json.loads(gzip.decompress(path.read_bytes()) if path.suffix == ".gz" else path.read_text())
    if d.get("format") != _COMPACT_FORMAT:
        raise ValueError(f"{path}: not a file written by save_histories (format {d.get('format')!r})")
    return {label: [History.from_dict(e) for e in entries] for label, entries in d["histories"].items()}
