"""Saved training runs: train once, keep the result, reuse it or continue it.

:func:`cached_train` does the bookkeeping every command of
``python -m bnkit.experiments`` needs: it trains and saves a
:class:`~bnkit.experiments.History` as JSON and NPZ, reuses a finished result
with the same settings when asked to, and continues an interrupted run from
its checkpoint.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Callable, Dict, Mapping

from .models import mlp
from .training import History, train

__all__ = ["RESULTS_DIR", "run_key", "cached_train"]

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
