r"""Chapter 8's measurement of what synchronizing buys: per-process against synchronized statistics.

:math:`W` processes train one network data-parallel, each on a shard of
:math:`n` images of every batch of :math:`N = Wn`. With plain batch norm each
rank normalizes with its shard's statistics (a normalization batch of
:math:`n`); with :class:`~bnkit.torch.sync.SyncBatchNorm`, with the whole batch's
(:math:`N`). Everything else is the same: the weights at the start, the
images of every step, the averaged gradient, the SGD step.

The runs are simulated in one process, which is exactly equivalent
(:mod:`bnkit.experiments.data_parallel`: checked against real processes in the
tests and in Chapter 8): ``"local"`` is
:class:`~bnkit.experiments.data_parallel.LocalBatchNorm` with shards of
:math:`n`, its running statistics those of rank 0 (which DDP copies to every
rank); ``"sync"`` is plain batch norm over the batch of :math:`N`.

Each run is measured three ways:

* ``eval_accuracy``: test accuracy in eval mode (running statistics), the deployed model;
* ``batch_stats_accuracy``: test accuracy with the normalization the network
  trained with (:func:`~bnkit.experiments.small_batch.batch_statistics_accuracy`
  over test batches of :math:`N`, which ``"local"`` cuts into shards of :math:`n`);
* ``train_loss``: the mean minibatch loss over the last quarter of training,
  what the optimizer saw.

:meth:`NormalizationBatchResult.gap` is the first minus the second: how much
better the deployed network does than the network the optimizer trained.

Needs torch.
"""

from __future__ import annotations

from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Dict, Iterator, Optional, Sequence

import argparse

import numpy as np
import torch

from ..stats import Spread, spread
from .arguments import defaults
from .data_parallel import build_model
from .small_batch import batch_statistics_accuracy, mnist_images
from .training import as_tensors, train

__all__ = ["MODES", "METRICS", "NormalizationBatchResult", "compare_normalization_batches",
           "configure", "run"]

#: ``"local"``: each process its own statistics; ``"sync"``: the whole batch's.
MODES = ("local", "sync")
#: What every run measures.
METRICS = ("eval_accuracy", "batch_stats_accuracy", "train_loss")


@dataclass
class NormalizationBatchResult:
    r"""What :func:`compare_normalization_batches` measured.

    Attributes
    ----------
    seeds : tuple of int
    values : dict
        ``values[mode][metric]``: ndarray of shape (len(seeds),), for every mode in
        :data:`MODES` and metric in :data:`METRICS`.
    config : dict
        The arguments of the runs.
    """

    seeds: tuple
    values: Dict[str, Dict[str, np.ndarray]]
    config: Dict[str, object] = field(default_factory=dict)

    def spread(self, mode: str, metric: str) -> Spread:
        """The metric over the seeds (:func:`bnkit.stats.spread`)."""
        return spread(self.values[mode][metric])

    def gap(self, mode: str) -> np.ndarray:
        """Eval-mode minus batch-statistics test accuracy, per seed (shape (len(seeds),))."""
        return self.values[mode]["eval_accuracy"] - self.values[mode]["batch_stats_accuracy"]

    def table(self) -> str:
        """Mean ± std over the seeds of every metric and the gap, one row per mode (text).

        Accuracies and the gap in percent (points), then the eval-mode
        accuracies' min–max.
        """
        w, n = self.config["world_size"], self.config["shard_size"]
        names = {"local": f"per-process, {w} x {n} images", "sync": f"synchronized, {w * n} images"}
        lines = [f"{f'mean ± std over {len(self.seeds)} seeds':28s}{'training loss':>16s}"
                 f"{'test acc., training':>22s}{'test acc., eval':>18s}{'gap':>14s}",
                 f"{'':28s}{'':>16s}{'normalization (%)':>22s}{'mode (%)':>18s}{'(points)':>14s}"]
        for mode, name in names.items():
            cells = [format(self.spread(mode, "train_loss"), ".3f"),
                     format(spread(100 * self.values[mode]["batch_stats_accuracy"]), ".1f"),
                     format(spread(100 * self.values[mode]["eval_accuracy"]), ".1f"),
                     format(spread(100 * self.gap(mode)), ".1f")]
            lines.append(f"{name:28s}{cells[0]:>16s}{cells[1]:>22s}{cells[2]:>18s}{cells[3]:>14s}")
        ranges = ", ".join(f"{names[mode].split(',')[0]} "
                           f"{spread(100 * self.values[mode]['eval_accuracy']).range('.1f')}"
                           for mode in names)
        lines.append(f"eval-mode test accuracy, min–max over the seeds (%): {ranges}")
        return "\n".join(lines)


@contextmanager
def _threads(n: Optional[int]) -> Iterator[None]:
    """torch's intra-op thread count set to ``n`` (None: unchanged), then restored."""
    old = torch.get_num_threads()
    if n is not None:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(old)


def compare_normalization_batches(world_size: int = 4, shard_size: int = 4,
                                  seeds: Sequence[int] = (0, 1, 2), steps: int = 512,
                                  lr: float = 0.01, momentum: float = 0.9,
                                  net: Optional[dict] = None, data=None,
                                  num_threads: Optional[int] = 1) -> NormalizationBatchResult:
    r"""Train the same network with per-process and with synchronized batch statistics, per seed.

    For each seed :math:`s` and mode: :func:`~bnkit.experiments.data_parallel.build_model`
    (the conv net of Chapter 7, initial weights seeded by :math:`s`, the same in
    both modes) trained with SGD for ``steps`` steps on batches of
    :math:`N = Wn` training images (the stream of
    :class:`~bnkit.experiments.BatchStream` seeded by :math:`s`, the same in
    both modes), then measured (see the module's docstring).

    Parameters
    ----------
    world_size : int, default 4
        :math:`W`, simulated processes.
    shard_size : int, default 4
        :math:`n`, images per process.
    seeds : sequence of int, default (0, 1, 2)
    steps : int, default 512
    lr, momentum : float, default 0.01, 0.9
        Of :class:`torch.optim.SGD`.
    net : dict, optional
        Arguments of :func:`~bnkit.experiments.small_batch.conv_net` (``seed`` excepted).
    data : dict, optional
        ``x_train``, ``y_train``, ``x_test``, ``y_test`` as images;
        default :func:`~bnkit.experiments.small_batch.mnist_images`.
    num_threads : int or None, default 1
        torch threads while training (1: results independent of the machine).

    Returns
    -------
    NormalizationBatchResult
    """
    for name, value in (("world_size", world_size), ("shard_size", shard_size), ("steps", steps)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int (got {value!r})")
    if shard_size < 2:
        raise ValueError(f"shard_size must be >= 2: batch norm needs two values (got {shard_size})")
    seeds = tuple(int(s) for s in seeds)
    if not seeds:
        raise ValueError("need at least one seed")
    net = dict(net or {})
    if "seed" in net:
        raise ValueError("net must not set 'seed': the seeds come from `seeds`")
    data = as_tensors(mnist_images() if data is None else data)
    batch = world_size * shard_size
    n_test = len(data["x_test"])
    if n_test % shard_size:     # then every test batch of N (the last one too) holds whole shards
        raise ValueError(f"the number of test images ({n_test}) must be a multiple of "
                         f"shard_size={shard_size}")
    values = {mode: {metric: np.zeros(len(seeds)) for metric in METRICS} for mode in MODES}
    for i, seed in enumerate(seeds):
        for mode in MODES:
            model = build_model("local" if mode == "local" else "plain", {**net, "seed": seed},
                                shard_size=shard_size)
            history = train(model, data, steps, batch_size=batch, lr=lr, seed=seed,
                            momentum=momentum, eval_every=max(1, steps // 4), record_every=0,
                            num_threads=num_threads)
            out = values[mode]
            out["eval_accuracy"][i] = history.test_accuracy[-1]
            out["train_loss"][i] = history.train_loss[-1]       # the last quarter's steps
            with _threads(num_threads):
                out["batch_stats_accuracy"][i] = batch_statistics_accuracy(
                    model, data["x_test"], data["y_test"], batch, seed)
    return NormalizationBatchResult(seeds=seeds, values=values, config={
        "world_size": world_size, "shard_size": shard_size, "steps": steps, "lr": lr,
        "momentum": momentum, "net": net})


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments sync-benefit`` (defaults: :func:`compare_normalization_batches`')."""
    d = defaults(compare_normalization_batches)
    parser.add_argument("--world-size", type=int, default=d["world_size"],
                        help=f"simulated processes W (default: {d['world_size']})")
    parser.add_argument("--shard-size", type=int, default=d["shard_size"],
                        help=f"images per process n (default: {d['shard_size']})")
    parser.add_argument("--seeds", type=int, nargs="+", default=list(d["seeds"]), metavar="SEED",
                        help=f"one run per seed and setting (default: {' '.join(map(str, d['seeds']))})")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help=f"SGD steps per run (default: {d['steps']})")
    parser.add_argument("--lr", type=float, default=d["lr"],
                        help=f"SGD learning rate (default: {d['lr']})")


def run(args: argparse.Namespace) -> int:
    """Run :func:`compare_normalization_batches` and print :meth:`NormalizationBatchResult.table`."""
    result = compare_normalization_batches(world_size=args.world_size, shard_size=args.shard_size,
                                           seeds=args.seeds, steps=args.steps, lr=args.lr)
    print(result.table())
    return 0
