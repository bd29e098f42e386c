r"""Chapter 8's measurement of what synchronizing costs: step times and a latency-bandwidth model.

A collective operation on a payload of :math:`p` bytes per rank takes, in the
latency-bandwidth (:math:`\alpha`-:math:`\beta`, or Hockney) model,

.. math:: t(p) = \alpha + \beta\,p ,

a fixed latency :math:`\alpha` (seconds) plus :math:`\beta` seconds per byte.
:func:`fit_latency_bandwidth` fits the two numbers to measured times of one
collective at several payloads; :func:`predict_sync_overhead` then predicts
what a :class:`~bnkit.torch.sync.SyncBatchNorm` model adds to a training step from
its collectives (:mod:`bnkit.torch.communication`): per layer :math:`l`, one
all-gather of :math:`b^\text{fwd}_l` bytes and one all-reduce of
:math:`b^\text{bwd}_l` bytes,

.. math::

    T_\text{sync} = \sum_l \big(\alpha_\text{ag} + \beta_\text{ag}\,b^\text{fwd}_l\big)
                  + \sum_l \big(\alpha_\text{ar} + \beta_\text{ar}\,b^\text{bwd}_l\big),

split into its latency part (the :math:`\alpha` terms) and its bandwidth part.

:func:`measure_sync_cost` measures both sides on ``world_size`` local
processes (:func:`bnkit.torch.distributed.run_processes`, ``gloo`` on 127.0.0.1): the
time of all-gathers and all-reduces of several payloads, and the time of a
training step of a small conv net (DDP, SGD) with plain batch norm and with
:class:`~bnkit.torch.sync.SyncBatchNorm`, interleaved so that both see the same
load. Wall-clock times depend on the machine and its load: never compare them
exactly, compare them side by side.

Needs torch.
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.nn.parallel import DistributedDataParallel

from ..torch import SyncBatchNorm, run_processes
from ..torch.communication import collectives_per_step, sync_payload_bytes
from .arguments import defaults
from .data_parallel import build_model

__all__ = [
    "COLLECTIVES",
    "PAYLOAD_BYTES",
    "LatencyBandwidth",
    "fit_latency_bandwidth",
    "SyncOverhead",
    "predict_sync_overhead",
    "SyncCost",
    "measure_sync_cost",
    "configure",
    "run",
]

#: The collectives :func:`measure_sync_cost` times.
COLLECTIVES = ("all_gather", "all_reduce")
#: The payloads timed by default, in bytes per rank, from 8 B to 1 MiB of float64 values.
PAYLOAD_BYTES = (8, 64, 512, 4096, 32768, 262144, 1048576)


@dataclass(frozen=True)
class LatencyBandwidth:
    r"""A fitted :math:`t(p) = \alpha + \beta\,p` for one collective.

    Attributes
    ----------
    alpha : float
        :math:`\alpha`, seconds per call (the latency).
    beta : float
        :math:`\beta`, seconds per byte of payload per rank (``1 / beta``: bytes per second).
    """

    alpha: float
    beta: float

    def time(self, payload_bytes):
        r""":math:`\alpha + \beta\,p` for a payload of ``payload_bytes`` (float or array)."""
        return self.alpha + self.beta * np.asarray(payload_bytes, dtype=np.float64)

    @property
    def crossover_bytes(self) -> float:
        r""":math:`p^* = \alpha / \beta`: the payload whose bytes cost as much as the latency.

        Below :math:`p^*` a call is latency-bound (it costs less than :math:`2\alpha`).
        """
        return self.alpha / self.beta if self.beta > 0 else float("inf")


def fit_latency_bandwidth(payload_bytes, seconds, relative: bool = True) -> LatencyBandwidth:
    r"""Least-squares fit of :math:`t = \alpha + \beta\,p` to measured times.

    With ``relative`` (the default) the residuals are relative,
    :math:`\min_{\alpha,\beta} \sum_i \big((t_i - \alpha - \beta p_i)/t_i\big)^2`,
    so that payloads whose times differ by orders of magnitude count alike
    (with plain least squares, a few percent of noise on the largest times,
    more seconds than :math:`\alpha` itself, would move the fitted latency).
    The minimum is a weighted least-squares problem with weights
    :math:`w_i = 1/t_i^2`, solved in closed form:

    .. math::

        \beta = \frac{\sum_i w_i (p_i - \bar p)(t_i - \bar t)}{\sum_i w_i (p_i - \bar p)^2},
        \qquad \alpha = \bar t - \beta\,\bar p,

    with :math:`\bar p, \bar t` the :math:`w`-weighted means.

    Parameters
    ----------
    payload_bytes : array_like of shape (K,)
        :math:`p_i \geq 0`, at least two distinct values.
    seconds : array_like of shape (K,)
        :math:`t_i > 0`.
    relative : bool, default True
        Relative residuals (weights :math:`1/t_i^2`); False: plain least squares.

    Returns
    -------
    LatencyBandwidth

    Examples
    --------
    >>> fit = fit_latency_bandwidth([0, 1000, 2000], [1e-4, 2e-4, 3e-4])
    >>> round(fit.alpha, 10), round(fit.beta, 14)
    (0.0001, 1e-07)
    """
    p = np.asarray(payload_bytes, dtype=np.float64)
    t = np.asarray(seconds, dtype=np.float64)
    if p.ndim != 1 or p.shape != t.shape:
        raise ValueError(f"payload_bytes and seconds must be 1-D of one length "
                         f"(got shapes {p.shape} and {t.shape})")
    if np.unique(p).size < 2:
        raise ValueError("need at least two distinct payloads to fit a latency and a bandwidth")
    if not (np.all(np.isfinite(t)) and np.all(t > 0) and np.all(p >= 0)):
        raise ValueError("times must be finite and > 0, payloads >= 0")
    w = 1.0 / t**2 if relative else np.ones_like(t)
    p_bar, t_bar = np.average(p, weights=w), np.average(t, weights=w)
    beta = np.sum(w * (p - p_bar) * (t - t_bar)) / np.sum(w * (p - p_bar) ** 2)
    return LatencyBandwidth(alpha=float(t_bar - beta * p_bar), beta=float(beta))


@dataclass(frozen=True)
class SyncOverhead:
    """What :func:`predict_sync_overhead` predicts for one training step (seconds)."""

    collectives: int
    payload_bytes: int
    latency: float
    bandwidth: float

    @property
    def total(self) -> float:
        """Latency plus bandwidth part."""
        return self.latency + self.bandwidth

    @property
    def latency_share(self) -> float:
        """The fraction of :attr:`total` due to the :math:`\\alpha` terms."""
        return self.latency / self.total


def predict_sync_overhead(num_channels: Sequence[int], all_gather: LatencyBandwidth,
                          all_reduce: LatencyBandwidth, bytes_per_value: int = 8) -> SyncOverhead:
    r"""Time a training step spends in SyncBatchNorm's collectives, by the :math:`\alpha`-:math:`\beta` model.

    One all-gather of :math:`b^\text{fwd}_l` and one all-reduce of
    :math:`b^\text{bwd}_l` bytes per layer
    (:func:`bnkit.torch.communication.sync_payload_bytes`), as in every step
    after the first:

    .. math::

        T = L(\alpha_\text{ag} + \alpha_\text{ar})
            + \beta_\text{ag}\sum_l b^\text{fwd}_l + \beta_\text{ar}\sum_l b^\text{bwd}_l .

    Parameters
    ----------
    num_channels : sequence of int, length L
        :math:`C` of each synchronized layer.
    all_gather, all_reduce : LatencyBandwidth
        Fitted on the same process group.
    bytes_per_value : int, default 8
        bnkit exchanges float64.

    Returns
    -------
    SyncOverhead
        ``collectives`` (:math:`2L`), ``payload_bytes`` (per rank),
        ``latency`` and ``bandwidth`` (seconds).
    """
    forward, backward = sync_payload_bytes(num_channels, bytes_per_value)
    layers = len(forward)
    latency = layers * (all_gather.alpha + all_reduce.alpha)
    bandwidth = all_gather.beta * float(forward.sum()) + all_reduce.beta * float(backward.sum())
    return SyncOverhead(collectives=collectives_per_step(layers),
                        payload_bytes=int(forward.sum() + backward.sum()),
                        latency=float(latency), bandwidth=float(bandwidth))


# --------------------------------------------------------------------------- measurement


@dataclass
class SyncCost:
    r"""What :func:`measure_sync_cost` measured on one process group of ``world_size`` ranks.

    ``payload_bytes`` (shape (K,)): the bytes per rank of each timed
    collective. ``collective_seconds``: for ``"all_gather"`` and
    ``"all_reduce"``, the median time of one call at each payload (shape
    (K,)). ``step_seconds``: for ``"plain"`` and ``"sync"``, the time of each
    timed training step, the slowest rank's (shape (S,)). ``num_channels``:
    :math:`C` of the model's batch-norm layers. ``collectives_counted``:
    SyncBatchNorm's collectives counted in one training step of the
    ``"sync"`` model, by kind (e.g. ``{"all_gather": 3, "all_reduce": 3}``).
    ``config``: the arguments of the measurement.
    """

    world_size: int
    payload_bytes: np.ndarray
    collective_seconds: Dict[str, np.ndarray]
    step_seconds: Dict[str, np.ndarray]
    num_channels: List[int]
    collectives_counted: Dict[str, int]
    config: Dict[str, object] = field(default_factory=dict)

    def fit(self, collective: str) -> LatencyBandwidth:
        """:func:`fit_latency_bandwidth` of one collective's times."""
        return fit_latency_bandwidth(self.payload_bytes, self.collective_seconds[collective])

    def step_median(self, mode: str) -> float:
        """Median step time of ``"plain"`` or ``"sync"`` (seconds)."""
        return float(np.median(self.step_seconds[mode]))

    @property
    def measured_overhead(self) -> float:
        """Median synchronized step minus median plain step (seconds)."""
        return self.step_median("sync") - self.step_median("plain")

    def predicted_overhead(self) -> SyncOverhead:
        """:func:`predict_sync_overhead` for this model with this group's fits."""
        return predict_sync_overhead(self.num_channels, self.fit("all_gather"),
                                     self.fit("all_reduce"))

    def report(self) -> str:
        """The fits, the step times and the predicted overhead, as lines of text."""
        lines = [f"W = {self.world_size} processes"]
        for name in COLLECTIVES:
            fit = self.fit(name)
            rate = f"{1e-9 / fit.beta:.2f} GB/s" if fit.beta > 0 else "no measurable cost per byte"
            lines.append(f"  {name:10s}: alpha = {1e6 * fit.alpha:7.1f} us, beta = "
                         f"{1e9 * fit.beta:5.2f} ns/B ({rate}), p* = alpha/beta = "
                         f"{fit.crossover_bytes / 1e3:,.0f} kB")
        pred = self.predicted_overhead()
        lines.append(f"  training step, median: plain BN {1e3 * self.step_median('plain'):.2f} ms, "
                     f"SyncBatchNorm {1e3 * self.step_median('sync'):.2f} ms: measured overhead "
                     f"{1e3 * self.measured_overhead:.2f} ms")
        lines.append(f"  predicted overhead, {pred.collectives} collectives of "
                     f"{pred.payload_bytes:,} B in all: {1e3 * pred.latency:.2f} ms latency + "
                     f"{1e3 * pred.bandwidth:.4f} ms bandwidth (latency "
                     f"{100 * pred.latency_share:.1f} %)")
        lines.append(f"  measured / predicted overhead: {self.measured_overhead / pred.total:.1f}")
        return "\n".join(lines)


def _time_collectives(payloads: Sequence[int], calls: int, repeats: int,
                      seed: int) -> Dict[str, List[float]]:
    """Per collective and payload: the median over ``repeats`` of the mean of ``calls`` calls.

    Every repetition visits all (collective, payload) pairs in a shuffled order
    -- the same on every rank, from ``seed`` -- so that a burst of load on the
    machine hits every payload alike instead of one of them.
    """
    world = dist.get_world_size()
    tensors = {p: torch.ones(p // 8, dtype=torch.float64) for p in payloads}
    outputs = {p: [torch.empty_like(t) for _ in range(world)] for p, t in tensors.items()}

    def run(name, p):
        if name == "all_gather":
            dist.all_gather(outputs[p], tensors[p])
        else:
            dist.all_reduce(tensors[p])

    pairs = [(name, p) for name in COLLECTIVES for p in payloads]
    for name, p in pairs:                         # warm-up: buffers, connections
        run(name, p)
    samples: Dict[tuple, List[float]] = {pair: [] for pair in pairs}
    rng = np.random.default_rng(seed)
    for _ in range(repeats):
        for i in rng.permutation(len(pairs)):
            name, p = pairs[i]
            dist.barrier()
            start = time.perf_counter()
            for _ in range(calls):
                run(name, p)
            samples[name, p].append((time.perf_counter() - start) / calls)
    return {name: [float(np.median(samples[name, p])) for p in payloads] for name in COLLECTIVES}


def _count_collectives(step) -> Dict[str, int]:
    """Run ``step()`` with ``dist.all_gather``/``all_reduce`` counted (Python-level calls)."""
    counts = {name: 0 for name in COLLECTIVES}
    originals = {name: getattr(dist, name) for name in COLLECTIVES}

    def counting(name):
        def call(*args, **kwargs):
            counts[name] += 1
            return originals[name](*args, **kwargs)
        return call

    try:
        for name in COLLECTIVES:
            setattr(dist, name, counting(name))
        step()
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)
    return counts


def _cost_worker(rank: int, world_size: int, payloads, calls: int, repeats: int,
                 net: dict, shard_size: int, steps: int, warmup: int, seed: int) -> dict:
    collective = _time_collectives(payloads, calls, repeats, seed)
    models = {mode: build_model(mode, net) for mode in ("plain", "sync")}
    ddps = {mode: DistributedDataParallel(m) for mode, m in models.items()}
    optimizers = {mode: torch.optim.SGD(d.parameters(), lr=0.01, momentum=0.9)
                  for mode, d in ddps.items()}
    gen = torch.Generator().manual_seed(seed + rank)
    x = torch.rand(shard_size, 1, 28, 28, generator=gen)
    y = torch.randint(0, 10, (shard_size,), generator=gen)

    def step(mode):
        loss = F.cross_entropy(ddps[mode](x), y)
        optimizers[mode].zero_grad()
        loss.backward()
        optimizers[mode].step()

    for mode in ("plain", "sync"):
        for _ in range(warmup):                  # the first step checks num_features once
            step(mode)
    counted = _count_collectives(lambda: step("sync"))
    times = {"plain": [], "sync": []}
    for i in range(steps):
        order = ("plain", "sync") if i % 2 == 0 else ("sync", "plain")   # interleaved
        for mode in order:
            dist.barrier()
            start = time.perf_counter()
            step(mode)
            times[mode].append(time.perf_counter() - start)
    channels = [m.num_features for m in models["sync"].modules() if isinstance(m, SyncBatchNorm)]
    return {"collective": collective, "times": times, "counted": counted, "channels": channels}


def measure_sync_cost(world_size: int, payload_bytes: Sequence[int] = PAYLOAD_BYTES,
                      calls: int = 5, repeats: int = 15, net: Optional[dict] = None,
                      shard_size: int = 16, steps: int = 40, warmup: int = 3, seed: int = 0,
                      timeout: float = 120.0) -> SyncCost:
    r"""Time collectives and training steps with plain and synchronized batch norm on one group.

    Starts ``world_size`` processes (:func:`bnkit.torch.distributed.run_processes`,
    ``gloo``, one thread each) that

    1. time ``dist.all_gather`` and ``dist.all_reduce`` of float64 tensors of
       each payload: ``repeats`` rounds over every (collective, payload) pair in
       a shuffled order, each ``calls`` back-to-back calls after a barrier; the
       median over the rounds of the mean time per call;
    2. build :func:`~bnkit.experiments.data_parallel.build_model` twice, with
       plain batch norm and with :class:`~bnkit.torch.sync.SyncBatchNorm`, each in
       ``DistributedDataParallel`` with SGD, and run ``warmup`` untimed steps
       of each, then count SyncBatchNorm's collectives in one step;
    3. time ``steps`` training steps of each (forward, backward with DDP's
       gradient all-reduce, SGD update) on a fixed shard of ``shard_size``
       random images, alternating the two models step by step (and which
       comes first), each step after a barrier.

    A step's time is the slowest rank's.

    Returns
    -------
    SyncCost
    """
    if not (isinstance(world_size, int) and world_size >= 2):
        raise ValueError(f"world_size must be an int >= 2 (got {world_size!r})")
    for name, value in (("calls", calls), ("repeats", repeats), ("steps", steps),
                        ("shard_size", shard_size)):
        if not (isinstance(value, int) and value >= 1):
            raise ValueError(f"{name} must be a positive int (got {value!r})")
    payloads = [int(p) for p in payload_bytes]
    if min(payloads) < 8 or any(p % 8 for p in payloads):
        raise ValueError(f"payloads must be multiples of 8 bytes (float64 values) (got {payloads})")
    net = dict(net or {})
    ranks = run_processes(_cost_worker, world_size,
                          (payloads, calls, repeats, net, shard_size, steps, warmup, seed),
                          timeout=timeout)
    collective = {name: np.median([r["collective"][name] for r in ranks], axis=0)
                  for name in COLLECTIVES}
    step_seconds = {mode: np.max([r["times"][mode] for r in ranks], axis=0)
                    for mode in ("plain", "sync")}
    return SyncCost(world_size=world_size, payload_bytes=np.array(payloads),
                    collective_seconds=collective, step_seconds=step_seconds,
                    num_channels=ranks[0]["channels"], collectives_counted=ranks[0]["counted"],
                    config={"calls": calls, "repeats": repeats, "net": net,
                            "shard_size": shard_size, "steps": steps, "warmup": warmup,
                            "seed": seed})


# --------------------------------------------------------------------------- command line


def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments sync-cost`` (defaults: :func:`measure_sync_cost`'s)."""
    d = defaults(measure_sync_cost)
    parser.add_argument("--world-sizes", type=int, nargs="+", default=[2, 3], metavar="W",
                        help="process counts to measure, one group each (default: 2 3)")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help=f"timed training steps per batch norm (default: {d['steps']})")
    parser.add_argument("--repeats", type=int, default=d["repeats"],
                        help=f"rounds over the collectives' payloads (default: {d['repeats']})")
    parser.add_argument("--calls", type=int, default=d["calls"],
                        help=f"back-to-back calls per timing (default: {d['calls']})")
    parser.add_argument("--shard-size", type=int, default=d["shard_size"],
                        help=f"images per process in a training step (default: {d['shard_size']})")


def run(args: argparse.Namespace) -> int:
    """Measure every ``--world-sizes`` group and print :meth:`SyncCost.report`; returns 0."""
    for w in args.world_sizes:
        cost = measure_sync_cost(w, calls=args.calls, repeats=args.repeats, steps=args.steps,
                                 shard_size=args.shard_size)
        print(cost.report(), flush=True)
    return 0
