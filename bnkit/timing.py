r"""Measuring time on a shared, noisy machine: best-of-N timers and memory bandwidth.

Two rules make timings on a shared machine mean something:

* **best of N**: the minimum over repeats estimates what the code costs when
  nothing else interferes (noise only ever adds time), :func:`best_time`;
* **same run, interleaved**: implementations are compared by calling them in
  turn, round after round (:func:`compare_times`), so a burst of load from
  elsewhere slows all of them alike and their *ratios* stay meaningful.

The rest of the module measures how fast this machine moves bytes, on one
thread, with kernels that do (almost) no arithmetic:

* :func:`measure_copy_bandwidth`: a copy, :func:`numpy.copyto`, which for
  large arrays is the C library's ``memcpy``: one read per write, and
  *streaming* (non-temporal) stores that write to memory without first
  reading the destination's cache lines;
* :func:`stream_pass` and :func:`measure_stream_bandwidth`: a pass that reads
  ``reads`` full-size arrays and writes ``writes`` (0 or 1) with the ordinary
  stores of a NumPy loop, for the read/write mixes batch norm actually has;
* :func:`stream_passes`: several such passes over the same arrays, in turn: the
  memory traffic of a kernel without its arithmetic (see
  :func:`bnkit.roofline.forward_passes`).

All timers take a ``clock`` (default ``time.perf_counter``), so that tests can
drive them with a clock whose readings are known.

Nothing here imports torch or any other part of bnkit: :mod:`bnkit.roofline`
(the arithmetic of bytes) and :mod:`bnkit.benchmarking` (the batch-norm cases)
sit above it.
"""

from __future__ import annotations

import gc
import time
from typing import Callable, Dict, Mapping, Sequence, Tuple

import numpy as np

__all__ = [
    "best_time",
    "compare_times",
    "time_once",
    "measure_copy_bandwidth",
    "stream_pass",
    "stream_passes",
    "measure_stream_bandwidth",
]

Clock = Callable[[], float]


class _GcOff:
    """Garbage collection paused while timing (as :mod:`timeit` does)."""

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()


def _check_repeats(name_min: str, low: int, name_max: str, high: int) -> None:
    if int(low) != low or low < 1:
        raise ValueError(f"{name_min} must be an int >= 1 (got {low!r})")
    if int(high) != high or high < low:
        raise ValueError(f"{name_max} must be an int >= {name_min} = {low} (got {high!r})")


def best_time(fn: Callable[[], object], budget: float = 0.2, min_repeats: int = 3,
              max_repeats: int = 200, clock: Clock = time.perf_counter) -> float:
    """Minimum wall time of ``fn()`` in seconds, over repeats filling about ``budget`` seconds.

    One untimed call first (allocations, lazy initialisation); then at least
    ``min_repeats`` and at most ``max_repeats`` timed calls, until ``budget``
    seconds have passed since the first timed call.

    Parameters
    ----------
    fn : callable
        Called with no argument; its result is discarded.
    budget : float, default 0.2
        Seconds of repeats (after ``min_repeats``, repeats stop once it is spent).
    min_repeats, max_repeats : int, default 3 and 200
    clock : callable, default ``time.perf_counter``
        Returns the time in seconds.

    Returns
    -------
    float
        The least of the timed durations.
    """
    _check_repeats("min_repeats", min_repeats, "max_repeats", max_repeats)
    fn()
    best = float("inf")
    repeats = 0
    with _GcOff():
        deadline = clock() + budget
        while repeats < min_repeats or (repeats < max_repeats and clock() < deadline):
            start = clock()
            fn()
            best = min(best, clock() - start)
            repeats += 1
    return best


def compare_times(fns: Mapping[str, Callable[[], object]], budget: float = 0.2,
                  min_rounds: int = 3, max_rounds: int = 200,
                  clock: Clock = time.perf_counter) -> Dict[str, float]:
    """Best time in seconds of each of ``fns``, called in turn, round after round.

    One untimed round first; then every round calls each function once, in
    the order of ``fns``. Rounds go on until about ``budget`` seconds *per
    function* have passed (at least ``min_rounds``, at most ``max_rounds``).
    Interleaving means the machine's load, whatever it is, falls on every
    function alike.

    Parameters
    ----------
    fns : mapping of str to callable
        The functions to compare, by name.
    budget : float, default 0.2
    min_rounds, max_rounds : int, default 3 and 200
    clock : callable, default ``time.perf_counter``

    Returns
    -------
    dict of str to float
        The best time of each function, under its name.
    """
    _check_repeats("min_rounds", min_rounds, "max_rounds", max_rounds)
    names = list(fns)
    for name in names:                       # warm up
        fns[name]()
    best = {name: float("inf") for name in names}
    rounds = 0
    with _GcOff():
        deadline = clock() + budget * len(names)
        while rounds < min_rounds or (rounds < max_rounds and clock() < deadline):
            for name in names:
                start = clock()
                fns[name]()
                best[name] = min(best[name], clock() - start)
            rounds += 1
    return best


def time_once(fn: Callable[[], object], clock: Clock = time.perf_counter) -> float:
    """Seconds one call of ``fn()`` takes, with no warm-up and no repeat.

    For what happens once: the first call of a function compiled with
    :func:`torch.compile`, which compiles it, then runs it.
    """
    start = clock()
    fn()
    return clock() - start


def _check_nbytes(nbytes) -> int:
    if int(nbytes) != nbytes or nbytes <= 0:
        raise ValueError(f"nbytes must be an int > 0 (got {nbytes!r})")
    return int(nbytes)


def measure_copy_bandwidth(nbytes: int, budget: float = 0.2, fresh_output: bool = False,
                           max_repeats: int = 1000, clock: Clock = time.perf_counter) -> float:
    """This machine's copy bandwidth for arrays of ``nbytes``, in bytes/s (read + written).

    Copies one array of ``nbytes`` into another with :func:`numpy.copyto` (one
    thread) and counts ``2 * nbytes`` per copy. The best of repeated copies
    filling about ``budget`` seconds, so the figure is the machine's ability,
    not its load. Small sizes are served from the caches and come out faster.

    A copy is the most favourable mix there is: one read per write, and, for
    arrays larger than a few megabytes, ``memcpy``'s *streaming* stores, which
    send the written lines to memory without first reading them into the cache.
    A kernel that reads more than it writes, or writes with ordinary stores,
    gets less (:func:`measure_stream_bandwidth`).

    Parameters
    ----------
    nbytes : int
        Size of the source (and destination) array, > 0.
    budget : float, default 0.2
        Seconds to spend repeating the copy (at least 3 copies).
    fresh_output : bool, default False
        Allocate a new destination for every copy, as a function that returns
        a new array does: the first write to each page then costs a page fault.
    max_repeats : int, default 1000
    clock : callable, default ``time.perf_counter``

    Returns
    -------
    float
        Bytes per second, read plus written.
    """
    nbytes = _check_nbytes(nbytes)
    src = np.ones(nbytes, np.uint8)
    if fresh_output:
        def copy():
            dst = np.empty_like(src)
            np.copyto(dst, src)
            return dst
    else:
        dst = np.zeros_like(src)          # touched once here, so no page faults when timed

        def copy():
            np.copyto(dst, src)
    seconds = best_time(copy, budget=budget, max_repeats=max_repeats, clock=clock)
    return 2 * nbytes / seconds


def _check_pass(reads, writes) -> Tuple[int, int]:
    if int(reads) != reads or reads < 0:
        raise ValueError(f"reads must be an int >= 0 (got {reads!r})")
    if writes not in (0, 1):
        raise ValueError(f"writes must be 0 or 1 (got {writes!r})")
    if writes == 1 and reads not in (1, 2):
        raise ValueError(f"a pass that writes reads 1 or 2 arrays (got reads={reads!r})")
    if reads + writes == 0:
        raise ValueError("a pass must read or write something (got reads=0, writes=0)")
    return int(reads), int(writes)


def _run_pass(inputs: Sequence[np.ndarray], output: np.ndarray, reads: int, writes: int):
    """One pass: read ``inputs[:reads]``, write ``output`` if ``writes`` (ordinary stores)."""
    if writes == 0:                          # read only: a maximum per array (a reduction, no store)
        return max(float(a.max()) for a in inputs[:reads])
    if reads == 1:                           # 1:1, y = -x
        return np.negative(inputs[0], out=output)
    return np.add(inputs[0], inputs[1], out=output)      # 2:1, y = a + b


def stream_passes(passes: Sequence[Tuple[int, int]], nbytes: int,
                  dtype="float32", seed: int = 0) -> Callable[[], object]:
    r"""A closure that makes the given passes over the same float arrays, in turn.

    Pass :math:`(r, w)` reads the first :math:`r` of the input arrays and, when
    :math:`w = 1`, writes the output array, with one NumPy loop each: the
    maximum of each array (read only; a sum, in NumPy's pairwise order, runs
    below the memory's speed), :math:`y = -x` (one read, one write) or
    :math:`y = a + b` (two reads, one write). Every array has ``nbytes`` bytes;
    the inputs are random, the output is allocated and touched once now, so
    no timed call pays a page fault. Passes that follow one another read the
    same arrays, as a kernel's passes do: an array that still sits in a cache is
    served from there.

    The bytes one call moves are :math:`\sum (r + w) \cdot` ``nbytes`` (counting
    a written byte once, whatever the hardware does to write it).

    Parameters
    ----------
    passes : sequence of (int, int)
        ``(reads, writes)`` per pass: ``writes`` is 0 or 1; a pass that writes
        reads 1 or 2 arrays.
    nbytes : int
        Bytes per array, > 0 (rounded down to whole values of ``dtype``).
    dtype : numpy float dtype or str, default "float32"
    seed : int, default 0

    Returns
    -------
    callable
        Runs the passes once; returns the last pass's result.

    Examples
    --------
    >>> fwd = stream_passes([(1, 0), (1, 1)], 4096)    # a training forward's traffic: 3 arrays
    >>> out = fwd()
    """
    passes = [_check_pass(r, w) for r, w in passes]
    if not passes:
        raise ValueError("passes must not be empty")
    dtype = np.dtype(dtype)
    if dtype.kind != "f":
        raise TypeError(f"dtype must be a float dtype (got {dtype})")
    n = _check_nbytes(nbytes) // dtype.itemsize
    if n == 0:
        raise ValueError(f"nbytes must hold at least one {dtype} value (got {nbytes})")
    rng = np.random.default_rng(seed)
    inputs = [rng.standard_normal(n).astype(dtype) for _ in range(max(r for r, _ in passes))]
    output = np.zeros(n, dtype)

    def run():
        result = None
        for reads, writes in passes:
            result = _run_pass(inputs, output, reads, writes)
        return result

    return run


def stream_pass(reads: int, writes: int, nbytes: int, dtype="float32",
                seed: int = 0) -> Callable[[], object]:
    """A closure that makes one pass: reads ``reads`` arrays of ``nbytes``, writes ``writes``.

    The same as :func:`stream_passes` with one pass ``[(reads, writes)]``.
    """
    return stream_passes([(reads, writes)], nbytes, dtype, seed)


def measure_stream_bandwidth(reads: int, writes: int, nbytes: int, budget: float = 0.2,
                             max_repeats: int = 1000, clock: Clock = time.perf_counter) -> float:
    """Bytes per second of one :func:`stream_pass`, counting ``(reads + writes) * nbytes``.

    The best of repeated passes filling about ``budget`` seconds, on one
    thread, float32 arrays of ``nbytes`` each. ``(1, 0)`` is the read
    bandwidth; ``(1, 1)`` a copy-like pass with ordinary stores (compare
    :func:`measure_copy_bandwidth`); ``(2, 1)`` the two-reads-per-write mix of a
    batch-norm forward.

    Returns
    -------
    float
        Bytes per second, read plus written.
    """
    reads, writes = _check_pass(reads, writes)
    nbytes = _check_nbytes(nbytes)
    run = stream_pass(reads, writes, nbytes)
    moved = (reads + writes) * (nbytes // 4) * 4
    return moved / best_time(run, budget=budget, max_repeats=max_repeats, clock=clock)
