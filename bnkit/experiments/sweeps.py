r"""The same experiment over several seeds, and sweeps of one setting (Chapter 5).

A comparison in the book rests on several seeds. Here a *seed* fixes both
sources of randomness of a run: the initial weights (``mlp(seed=...)``) and
the order of the minibatches (``train(seed=...)``). The data and the test set
stay fixed.

* :class:`Run` -- one experimental setting: the arguments of
  :func:`~bnkit.experiments.mlp` and of
  :func:`~bnkit.experiments.train`, without the seed.
* :func:`run_seeds` -- every setting once per seed; the runs are independent,
  so they can be spread over worker processes (``processes=2``, or a
  :class:`WorkerPool` kept for several calls). Each run is single-threaded and
  seeded, so the results do not depend on the number of processes.
* :class:`WorkerPool` -- worker processes that load the data once and serve
  every :func:`run_seeds` and :func:`sweep` call they are given; starting
  workers (each imports torch) costs seconds, so a chapter starts them once.
* :func:`sweep` -- one setting (``"lr"``, ``"init_std"``, ...) swept over
  values, for several networks and seeds: a :class:`Sweep` holding the final
  test accuracy of every run, with per-cell :class:`~bnkit.stats.Spread`,
  a printable table, and :meth:`Sweep.working` (the values at which every
  seed reaches a threshold).

The workers are started with ``spawn``: in a script, call these functions under
``if __name__ == "__main__":``, as ``multiprocessing`` requires.
"""

from __future__ import annotations

import inspect
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from ..stats import Spread, spread
from .models import MLP, mlp
from .training import History, as_tensors, train

__all__ = ["Run", "WorkerPool", "run_seeds", "Sweep", "sweep", "MODEL_OPTIONS", "TRAIN_OPTIONS"]

#: Arguments of :func:`~bnkit.experiments.mlp` a :class:`Run` may set (``seed`` comes from the seed list).
MODEL_OPTIONS = tuple(p for p in inspect.signature(mlp).parameters if p != "seed")
#: Arguments of :func:`~bnkit.experiments.train` a :class:`Run` may set (not the model, data, seed or callbacks).
TRAIN_OPTIONS = tuple(p for p in inspect.signature(train).parameters
                      if p not in ("model", "data", "seed", "callback", "callback_every", "checkpoint",
                                   "checkpoint_every", "resume", "progress", "description", "num_threads"))


@dataclass(frozen=True)
class Run:
    """One experimental setting, to be repeated over seeds.

    Parameters
    ----------
    model : mapping
        Keyword arguments of :func:`~bnkit.experiments.mlp` (any of
        :data:`MODEL_OPTIONS`; not ``seed``).
    train : mapping
        Keyword arguments of :func:`~bnkit.experiments.train` (any
        of :data:`TRAIN_OPTIONS`, ``steps`` required; not ``seed``).
    """

    model: Mapping[str, Any] = field(default_factory=dict)
    train: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self):
        for what, given, allowed in (("model", self.model, MODEL_OPTIONS), ("train", self.train, TRAIN_OPTIONS)):
            unknown = sorted(set(given) - set(allowed))
            if unknown:
                raise ValueError(f"Run {what} options {unknown} are not allowed; choose from {list(allowed)} "
                                 f"(the seed is given to run_seeds)")
        if "steps" not in self.train:
            raise ValueError("Run needs train={'steps': ...}")


# --------------------------------------------------------------------------- #
# running: in this process, or in worker processes
# --------------------------------------------------------------------------- #
_worker_data: Dict[str, Any] = {}  # the data tensors, set once in each worker process


def _init_worker(data) -> None:
    _worker_data["tensors"] = as_tensors(data)


def _train_one(job: Tuple[Run, int, bool], tensors=None) -> Tuple[History, Optional[MLP]]:
    run, seed, keep_model = job
    tensors = _worker_data["tensors"] if tensors is None else tensors
    model = mlp(**dict(run.model), seed=seed)
    history = train(model, tensors, seed=seed, num_threads=1, **dict(run.train))
    return history, (model if keep_model else None)


class WorkerPool:
    """``processes`` worker processes holding ``data``, for several :func:`run_seeds` / :func:`sweep` calls.

    Use it as a context manager, or call :meth:`close` when done. The workers
    are started with ``spawn`` (which works in notebooks and on every OS) and
    receive ``data`` once, when they start.

    Parameters
    ----------
    data : as for :func:`run_seeds`; the calls that use this pool must pass
        the same object.
    processes : int >= 1
    """

    def __init__(self, data, processes: int = 2):
        if not isinstance(processes, int) or isinstance(processes, bool) or processes < 1:
            raise ValueError(f"processes must be a positive int, got {processes!r}")
        self.data, self.processes = data, processes
        self._executor = ProcessPoolExecutor(processes, mp_context=multiprocessing.get_context("spawn"),
                                             initializer=_init_worker, initargs=(data,))

    def map(self, jobs: Sequence[Tuple[Run, int, bool]]) -> List[Tuple[History, Optional[MLP]]]:
        """Train each ``(run, seed, keep_model)`` job: ``(History, trained model or None)`` in order.

        A worker that dies raises ``BrokenProcessPool``.
        """
        return list(self._executor.map(_train_one, jobs))

    def close(self) -> None:
        """Stop the workers (idempotent)."""
        self._executor.shutdown()

    def __enter__(self) -> "WorkerPool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"WorkerPool(processes={self.processes})"


def run_seeds(runs: Mapping[str, Run], data, seeds: Sequence[int] = (0, 1, 2), processes: int = 1,
              return_models: bool = False, pool: Optional[WorkerPool] = None):
    """Train every setting of ``runs`` once per seed.

    Parameters
    ----------
    runs : mapping label -> :class:`Run`
    data : dict of arrays or tensors (``x_train``, ``y_train``, ``x_test``,
        ``y_test``) or a data-set name (:func:`~bnkit.experiments.as_tensors`).
    seeds : distinct ints; seed ``s`` builds ``mlp(..., seed=s)`` and trains
        with ``train(..., seed=s)`` (weights and minibatch order).
    processes : 1 runs everything here, in order; ``n > 1`` spreads the runs
        over ``n`` worker processes (started with ``spawn``, which works in
        notebooks and on every OS). Each run uses one thread either way, so the
        results are identical.
    return_models : also return the trained networks.
    pool : a :class:`WorkerPool` made with this same ``data`` to run in
        (then ``processes`` is not used).

    Returns
    -------
    histories : dict label -> list of :class:`~bnkit.experiments.History`, one per seed, in the
        order of ``seeds``; with ``return_models``, ``(histories, models)``
        where ``models`` is laid out the same way.
    """
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if not isinstance(processes, int) or processes < 1:
        raise ValueError(f"processes must be a positive int, got {processes!r}")
    for label, run in runs.items():
        if not isinstance(run, Run):
            raise TypeError(f"runs[{label!r}] must be a Run, got {type(run).__name__}")
    keys = [(label, s) for label in runs for s in seeds]
    jobs = [(runs[label], s, return_models) for label, s in keys]
    if pool is not None:
        if not isinstance(pool, WorkerPool):
            raise TypeError(f"pool must be a WorkerPool, got {type(pool).__name__}")
        if pool.data is not data:
            raise ValueError("pool holds other data: make the WorkerPool with the data passed here")
        results = pool.map(jobs)
    elif processes == 1 or len(jobs) == 1:
        tensors = as_tensors(data)
        results = [_train_one(job, tensors) for job in jobs]
    else:
        with WorkerPool(data, min(processes, len(jobs))) as own:
            results = own.map(jobs)
    histories: Dict[str, List[History]] = {label: [] for label in runs}
    models: Dict[str, List[MLP]] = {label: [] for label in runs}
    for (label, _), (history, model) in zip(keys, results):
        histories[label].append(history)
        models[label].append(model)
    return (histories, models) if return_models else histories


# --------------------------------------------------------------------------- #
# sweeps of one setting
# --------------------------------------------------------------------------- #
@dataclass
class Sweep:
    r"""Final test accuracies of a sweep: every network, every value, every seed.

    Attributes
    ----------
    param : str
        The swept argument (of :func:`~bnkit.experiments.mlp` or of
        :func:`~bnkit.experiments.train`).
    values : tuple of float
        Its values, in order.
    networks : tuple of str
        The networks' labels.
    seeds : tuple of int
    accuracy : numpy.ndarray
        Shape (networks, values, seeds): test accuracy in [0, 1] at the end
        of each run (for a run that diverged, the accuracy measured when it
        stopped).
    diverged : numpy.ndarray
        Booleans, the same shape: whether the training loss became
        non-finite (training then stops).
    steps : int
        SGD steps per run.
    weight_norm : numpy.ndarray
        Shape (networks, values, seeds, L): :math:`\lVert W_\ell \rVert`
        (Frobenius) of each of the L hidden layers' weights at the end of
        the run.
    weight_change : numpy.ndarray
        The same shape: :math:`\lVert W_\ell - W_\ell^{(0)} \rVert / \lVert W_\ell^{(0)} \rVert`:
        how far training moved each hidden layer's weights from their
        initial values, relative to their initial size.
    """

    param: str
    values: Tuple[float, ...]
    networks: Tuple[str, ...]
    seeds: Tuple[int, ...]
    accuracy: np.ndarray
    diverged: np.ndarray
    steps: int
    weight_norm: Optional[np.ndarray] = None
    weight_change: Optional[np.ndarray] = None

    def _index(self, network: str, value: float) -> Tuple[int, int]:
        if network not in self.networks:
            raise ValueError(f"network must be one of {self.networks}, got {network!r}")
        if value not in self.values:
            raise ValueError(f"{self.param} = {value!r} was not swept; values: {self.values}")
        return self.networks.index(network), self.values.index(value)

    def at(self, network: str, value: float) -> np.ndarray:
        """Accuracies of ``network`` at ``value``, one per seed, shape ``(len(seeds),)``."""
        i, j = self._index(network, value)
        return self.accuracy[i, j].copy()

    def spread(self, network: str, value: float) -> Spread:
        """:class:`~bnkit.stats.Spread` over seeds of the accuracy of ``network`` at ``value``."""
        return spread(self.at(network, value))

    def working(self, network: str, threshold: float = 0.8) -> List[float]:
        """The values at which *every* seed of ``network`` reached ``threshold`` accuracy."""
        i = self.networks.index(network)
        return [v for j, v in enumerate(self.values) if np.all(self.accuracy[i, j] >= threshold)]

    def failing(self, network: str, threshold: float = 0.8) -> List[float]:
        """The values at which *no* seed of ``network`` reached ``threshold`` accuracy."""
        i = self.networks.index(network)
        return [v for j, v in enumerate(self.values) if np.all(self.accuracy[i, j] < threshold)]

    def table(self, percent: bool = True, digits: int = 1) -> str:
        r"""The sweep as text: one row per value, per network ``mean ± std (min–max)``.

        A ``†k`` after a cell says that k of its seeds diverged.
        """
        scale = 100.0 if percent else 1.0
        cells = [[f"{self.param}"] + [f"{n} (mean ± std, min–max)" for n in self.networks]]
        for j, v in enumerate(self.values):
            row = [f"{v:g}"]
            for i in range(len(self.networks)):
                s = spread(scale * self.accuracy[i, j])
                d = int(self.diverged[i, j].sum())
                row.append(f"{s:.{digits}f} ({s.range(f'.{digits}f')})" + (f" †{d}" if d else ""))
            cells.append(row)
        widths = [max(len(r[k]) for r in cells) for k in range(len(cells[0]))]
        lines = ["  ".join(c.rjust(w) if k else c.ljust(w) for k, (c, w) in enumerate(zip(r, widths)))
                 for r in cells]
        lines.insert(1, "-" * len(lines[0]))
        return "\n".join(lines)


def sweep(param: str, values: Sequence[float], networks: Mapping[str, Mapping[str, Any]], data,
          steps: int, seeds: Sequence[int] = (0, 1, 2), processes: int = 1,
          train_options: Optional[Mapping[str, Any]] = None, pool: Optional[WorkerPool] = None) -> Sweep:
    """Train every network at every value of ``param``, once per seed; keep the final test accuracy.

    Parameters
    ----------
    param : str
        An argument of :func:`~bnkit.experiments.mlp` (e.g. ``"init_std"``) or of :func:`~bnkit.experiments.train`
        (e.g. ``"lr"``).
    values : the values of ``param``, distinct.
    networks : mapping label -> keyword arguments of :func:`~bnkit.experiments.mlp` (without
        ``param`` and ``seed``), e.g. ``{"plain": {"batch_norm": False}}``.
    data : as for :func:`run_seeds`.
    steps : SGD steps per run; the test accuracy is measured once, at the end.
    seeds, processes, pool : as for :func:`run_seeds`.
    train_options : further arguments of :func:`~bnkit.experiments.train` (e.g. ``{"lr": 0.1}``),
        the same for every run.

    Returns
    -------
    Sweep
    """
    values = tuple(float(v) for v in values)
    if not values or len(set(values)) != len(values):
        raise ValueError(f"values must be distinct and at least one, got {values}")
    if param in MODEL_OPTIONS:
        where = "model"
    elif param in TRAIN_OPTIONS:
        where = "train"
    else:
        raise ValueError(f"param must be an argument of mlp {MODEL_OPTIONS} or of train {TRAIN_OPTIONS}, "
                         f"got {param!r}")
    base_train = {"eval_every": int(steps), "record_every": 0, **dict(train_options or {}), "steps": int(steps)}
    runs = {}
    for label, model in networks.items():
        if param in model or param in (train_options or {}):
            raise ValueError(f"{param!r} is swept: do not also fix it for {label!r}")
        for v in values:
            m, t = dict(model), dict(base_train)
            (m if where == "model" else t)[param] = v
            runs[f"{label}|{v!r}"] = Run(model=m, train=t)
    histories, models = run_seeds(runs, data, seeds=seeds, processes=processes, return_models=True, pool=pool)
    labels, seeds = tuple(networks), tuple(int(s) for s in seeds)
    acc = np.array([[[h.final_accuracy for h in histories[f"{n}|{v!r}"]] for v in values] for n in labels])
    div = np.array([[[h.diverged for h in histories[f"{n}|{v!r}"]] for v in values] for n in labels])
    depths = {models[key][0].num_hidden for key in runs}
    if len(depths) != 1:
        raise ValueError(f"the networks of a sweep must have the same number of hidden layers, got {depths}")
    norm = np.zeros(acc.shape + (depths.pop(),))
    change = np.zeros_like(norm)
    for i, n in enumerate(labels):
        for j, v in enumerate(values):
            key = f"{n}|{v!r}"
            for k, seed in enumerate(seeds):
                initial = mlp(**dict(runs[key].model), seed=seed)  # the draw the run started from
                for layer, (b0, b) in enumerate(zip(initial.blocks, models[key][k].blocks)):
                    w0, w = b0.linear.weight.detach().double(), b.linear.weight.detach().double()
                    norm[i, j, k, layer] = float(w.norm())
                    change[i, j, k, layer] = float((w - w0).norm() / w0.norm())
    return Sweep(param, values, labels, seeds, acc, div, int(steps), norm, change)
