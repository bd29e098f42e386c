r"""The numbers Chapter 5 reads off Figure 1, for one run or summarized over seeds.

Per pair of runs (a plain network and a BN network trained alike),
:func:`figure1_metrics` measures what the chapter states about Figure 1:

* ``steps_to_90`` -- the first evaluated step with test accuracy >= 90 %;
* ``late_accuracy`` -- the mean test accuracy over the last 10,000 steps
  (:func:`late_accuracy`), which averages out the evaluation-to-evaluation
  jitter of the curve;
* ``early_max_accuracy`` -- the highest test accuracy in the first 1,000
  steps (is the network still at chance?);
* ``band_growth`` -- how much the 15--85 percentile band of the watched
  sigmoid input widens between steps 5--10k and the last 5,000 steps
  (:func:`band_width`, a ratio minus one).

:func:`summarize_seeds` does this for every seed of a multi-seed run and keeps,
besides those scalars, the test-accuracy curves (for bands in a figure) and the
percentile records thinned to every ``keep_every`` steps, as JSON-ready data
small enough to commit. :func:`read_seed_histories` loads the per-seed histories
that ``python -m bnkit.experiments figure1 --seeds ...`` writes;
:func:`write_seed_summary` turns them into the committed file.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, Mapping, Optional, Sequence, Union

import numpy as np

from ..stats import Spread, spread
from .training import History

__all__ = ["NETWORKS", "band_width", "late_accuracy", "figure1_metrics", "read_seed_histories",
           "summarize_seeds", "write_seed_summary", "load_seed_summary", "metric_spread", "curves"]

#: The two networks of Figure 1, as the command line names their files.
NETWORKS = ("plain", "bn")
_FORMAT = "bnkit.experiments.figure1_summary"


def band_width(history: History, first: int, last: int) -> float:
    """Median over the records at steps in ``[first, last]`` of the 85th minus the 15th percentile of z.

    Uses the outer two of the recorded percentile levels (15 and 85 by default).
    Raises ``ValueError`` when no record falls in the window.
    """
    keep = (history.record_steps >= first) & (history.record_steps <= last)
    if not keep.any():
        raise ValueError(f"no percentile record between steps {first} and {last}")
    p = history.percentiles[keep]
    return float(np.median(p[:, -1] - p[:, 0]))


def late_accuracy(history: History, first: int) -> float:
    """Mean test accuracy over the evaluations at steps >= ``first``."""
    keep = history.eval_steps >= first
    if not keep.any():
        raise ValueError(f"no evaluation at or after step {first}")
    return float(history.test_accuracy[keep].mean())


def figure1_metrics(history: History, last_window: int = 10_000, early: int = 1000,
                    band_early: Sequence[int] = (5_000, 10_000), band_last: int = 5_000,
                    threshold: float = 0.9) -> Dict[str, Optional[float]]:
    r"""The scalars the chapter reads off one network's Figure-1 run.

    Parameters
    ----------
    history : a run of :func:`~bnkit.experiments.train` with
        evaluations and percentile records.
    last_window : ``late_accuracy`` averages the last ``last_window`` steps.
    early : ``early_max_accuracy`` is the best accuracy at steps <= ``early``.
    band_early, band_last : ``band_growth`` is
        ``band_width(last band_last steps) / band_width(band_early) - 1``.
    threshold : for ``steps_to_90`` (None if never reached).

    Returns
    -------
    dict with ``steps_to_90``, ``late_accuracy``, ``early_max_accuracy``,
    ``band_growth``, ``final_accuracy``.
    """
    end = int(history.steps_done)
    s90 = history.steps_to(threshold)
    early_keep = history.eval_steps <= early
    return {
        "steps_to_90": None if s90 is None else int(s90),
        "late_accuracy": late_accuracy(history, end - last_window),
        "early_max_accuracy": float(history.test_accuracy[early_keep].max()),
        "band_growth": band_width(history, end - band_last, end) / band_width(history, *band_early) - 1,
        "final_accuracy": history.final_accuracy,
    }


def read_seed_histories(folder: Union[str, os.PathLike], data: str, seeds: Sequence[int]) -> Dict[str, list]:
    """The histories the command line wrote for ``--seeds``: ``{"plain": [...], "bn": [...]}``, in seed order.

    Reads ``{folder}/figure1-{data}-seed{s}-{net}.npz``.
    """
    folder = Path(folder)
    out: Dict[str, list] = {net: [] for net in NETWORKS}
    for s in seeds:
        for net in NETWORKS:
            path = folder / f"figure1-{data}-seed{int(s)}-{net}.npz"
            if not path.is_file():
                raise FileNotFoundError(f"{path} is missing: run python -m bnkit.experiments figure1 "
                                        f"--data {data} --seeds ... --out {folder}")
            out[net].append(History.load(path))
    return out


def _rounded(a, digits: int = 4) -> list:
    return np.round(np.asarray(a, dtype=np.float64), digits).tolist()


def summarize_seeds(histories: Mapping[str, Sequence[History]], seeds: Sequence[int],
                    command: str = "", keep_every: int = 500) -> Dict[str, Any]:
    """Per-seed metrics and curves of a multi-seed Figure 1, as JSON-ready data.

    Parameters
    ----------
    histories : ``{"plain": [History, ...], "bn": [...]}``, one per seed.
    seeds : the seeds, in the same order.
    command : the command line that produced the histories (kept in the file).
    keep_every : keep the percentile records every ``keep_every`` steps
        (the accuracy curve is kept at every evaluation).

    Returns
    -------
    dict with ``format``, ``command``, ``seeds``, ``settings`` (model and
    training configuration of the first run), and per network
    ``networks[net] = {"metrics": {name: [one value per seed]}, "eval_steps",
    "test_accuracy" (seeds x E), "record_steps", "percentiles" (seeds x R x 3)}``.
    """
    seeds = [int(s) for s in seeds]
    out: Dict[str, Any] = {"format": _FORMAT, "version": 1, "command": command, "seeds": seeds}
    first = histories[NETWORKS[0]][0]
    out["settings"] = {"train": {k: v for k, v in first.config["train"].items() if k != "seed"},
                       "model": {k: v for k, v in first.config["model"].items() if k not in ("seed", "batch_norm")}}
    out["networks"] = {}
    for net in NETWORKS:
        hs = list(histories[net])
        if len(hs) != len(seeds):
            raise ValueError(f"{net}: {len(hs)} histories for {len(seeds)} seeds")
        for h, s in zip(hs, seeds):
            if h.config["train"]["seed"] != s:
                raise ValueError(f"{net}: a history of seed {h.config['train']['seed']} where seed {s} belongs")
        metrics = [figure1_metrics(h) for h in hs]
        keep = hs[0].record_steps % keep_every == 0
        out["networks"][net] = {
            "metrics": {k: [m[k] for m in metrics] for k in metrics[0]},
            "eval_steps": hs[0].eval_steps.tolist(),
            "test_accuracy": [_rounded(h.test_accuracy) for h in hs],
            "record_steps": hs[0].record_steps[keep].tolist(),
            "percentiles": [_rounded(h.percentiles[keep]) for h in hs],
            "seconds": [round(float(h.seconds), 1) for h in hs],
        }
    return out


def write_seed_summary(folder: Union[str, os.PathLike], path: Union[str, os.PathLike], data: str = "mnist-5k",
                       seeds: Sequence[int] = (0, 1, 2), command: str = "") -> Path:
    """:func:`read_seed_histories` then :func:`summarize_seeds`, written as JSON to ``path``."""
    summary = summarize_seeds(read_seed_histories(folder, data, seeds), seeds, command=command)
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(summary, separators=(",", ":")) + "\n")
    return path


def load_seed_summary(path: Union[str, os.PathLike]) -> Dict[str, Any]:
    """Read a file written by :func:`write_seed_summary`."""
    summary = json.loads(Path(path).read_text())
    if summary.get("format") != _FORMAT:
        raise ValueError(f"{path}: not a Figure-1 seed summary (format {summary.get('format')!r})")
    return summary


def metric_spread(summary: Mapping[str, Any], net: str, metric: str) -> Spread:
    """:class:`~bnkit.stats.Spread` over seeds of one metric of one network.

    Raises ``ValueError`` when a seed has no value (``steps_to_90`` of a run
    that never reached 90 %).
    """
    values = summary["networks"][net]["metrics"][metric]
    if any(v is None for v in values):
        raise ValueError(f"{net} {metric}: some seeds have no value ({values})")
    return spread(values)


def curves(summary: Mapping[str, Any], net: str, what: str = "test_accuracy"):
    """``(steps, values)`` of one network: ``test_accuracy`` (seeds, E) or ``band`` (seeds, R), the 15--85 width."""
    n = summary["networks"][net]
    if what == "test_accuracy":
        return np.asarray(n["eval_steps"]), np.asarray(n["test_accuracy"])
    if what == "band":
        p = np.asarray(n["percentiles"])
        return np.asarray(n["record_steps"]), p[..., -1] - p[..., 0]
    raise ValueError(f"what must be 'test_accuracy' or 'band', got {what!r}")
