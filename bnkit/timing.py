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
  :func:`bnkit.roofline.forward_passes`);
* :func:`measure_bandwidths`: the copies and passes above, side by side, across
  array sizes (the figure of Chapter 9).

And what a measurement of memory needs to know about the machine and the
operating system: the CPU's name and cache sizes (:func:`cpu_model`,
:func:`cache_sizes`), and the page faults a call causes
(:func:`page_faults_per_call`, :func:`counting_page_faults`), whose first writes to
fresh memory cost time that is not the kernel's.

All timers take a ``clock`` (default ``time.perf_counter``), and the page-fault
counters a ``counter`` (default :func:`page_faults`), so that tests can drive them
with readings that are known.

Nothing here imports torch or any other part of bnkit: :mod:`bnkit.roofline`
(the arithmetic of bytes) and :mod:`bnkit.benchmarking` (the batch-norm cases)
sit above it.
"""

from __future__ import annotations

import gc
import os
import platform
import time
from typing import Callable, Dict, List, Mapping, Sequence, Tuple

import numpy as np

__all__ = [
    "best_time",
    "compare_times",
    "time_once",
    "measure_copy_bandwidth",
    "stream_pass",
    "stream_passes",
    "measure_stream_bandwidth",
    "measure_bandwidths",
    "BANDWIDTH_KERNELS",
    "cpu_model",
    "cache_sizes",
    "page_faults",
    "page_faults_per_call",
    "counting_page_faults",
    "PAGE_BYTES",
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


#: The kernels of :func:`measure_bandwidths`, by the label it returns them under.
BANDWIDTH_KERNELS = (
    "copy, streaming stores (memcpy)",
    "copy into a new array",
    "read only (1:0)",
    "1:1, ordinary stores (y = -x)",
    "2:1, ordinary stores (y = a + b)",
)


def measure_bandwidths(sizes: Sequence[int], budget: float = 0.03,
                       clock: Clock = time.perf_counter) -> Dict[str, np.ndarray]:
    """Bandwidth of each of :data:`BANDWIDTH_KERNELS` for arrays of each of ``sizes`` bytes.

    The kernels, in the order of the labels: :func:`measure_copy_bandwidth` into
    an existing array (``memcpy``'s streaming stores for large arrays) and into a
    new array each time (its page faults included), then
    :func:`measure_stream_bandwidth` with one read and no write, one read per
    write and two reads per write (ordinary stores). Each figure counts every
    byte read or written once, on one thread, best of repeats filling about
    ``budget`` seconds.

    Parameters
    ----------
    sizes : sequence of int
        Bytes per array, each > 0 (a multiple of 4: the passes use float32).
    budget : float, default 0.03
        Seconds of repeats per kernel and size.
    clock : callable, default ``time.perf_counter``

    Returns
    -------
    dict of str to ndarray of shape (len(sizes),)
        Bytes per second, read plus written, under each label of
        :data:`BANDWIDTH_KERNELS`.
    """
    sizes = [_check_nbytes(nb) for nb in sizes]
    kernels = (
        lambda nb: measure_copy_bandwidth(nb, budget=budget, clock=clock),
        lambda nb: measure_copy_bandwidth(nb, budget=budget, fresh_output=True, clock=clock),
        lambda nb: measure_stream_bandwidth(1, 0, nb, budget=budget, clock=clock),
        lambda nb: measure_stream_bandwidth(1, 1, nb, budget=budget, clock=clock),
        lambda nb: measure_stream_bandwidth(2, 1, nb, budget=budget, clock=clock),
    )
    return {label: np.array([measure(nb) for nb in sizes], dtype=float)
            for label, measure in zip(BANDWIDTH_KERNELS, kernels)}


def cpu_model(cpuinfo: str = "/proc/cpuinfo") -> str:
    """The CPU's name: the first ``model name`` in ``cpuinfo`` (Linux).

    Where that file is missing or names no model, ``platform.processor()``,
    or failing that ``platform.machine()`` (e.g. ``"x86_64"``).
    """
    try:
        with open(cpuinfo, encoding="utf8", errors="replace") as lines:
            for line in lines:
                if line.startswith("model name") and ":" in line:
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def _read_text(path: str) -> str:
    with open(path, encoding="utf8") as f:
        return f.read().strip()


def _size_in_bytes(text: str) -> int:
    text = text.strip()
    scale = {"K": 2**10, "M": 2**20, "G": 2**30}.get(text[-1:].upper(), 1)
    return int(text[:-1] if scale > 1 else text) * scale


def cache_sizes(cpu: int = 0, root: str = "/sys/devices/system/cpu") -> Dict[str, int]:
    """Sizes in bytes of the data and unified caches of core ``cpu``, as Linux reports them.

    Reads ``root/cpu<cpu>/cache/index*/{type,level,size}`` (``size`` as
    ``"32K"``, ``"1M"`` or a plain number of bytes) and leaves out instruction
    caches. L1 and L2 are usually per core, L3 shared by several.

    Returns
    -------
    dict of str to int
        ``{"L1": bytes, "L2": bytes, ...}`` by level, ascending; empty where the
        operating system does not report its caches this way.
    """
    base = os.path.join(root, f"cpu{int(cpu)}", "cache")
    try:
        entries = sorted(os.listdir(base))
    except OSError:
        return {}
    caches = {}
    for entry in entries:
        if not entry.startswith("index"):
            continue
        try:
            kind, level, size = (_read_text(os.path.join(base, entry, name))
                                 for name in ("type", "level", "size"))
            level, size = int(level), _size_in_bytes(size)
        except (OSError, ValueError):
            continue
        if kind != "Instruction":
            caches[level] = size
    return {f"L{level}": caches[level] for level in sorted(caches)}


#: The page size the fault counts are expressed in (4 kB, the usual base page; a huge page
#: is 512 of them on x86-64 Linux).
PAGE_BYTES = 4096


def page_faults() -> int:
    """Minor page faults of this process so far (``resource.getrusage``, Linux and macOS).

    A minor fault is the operating system mapping a page on its first touch —
    for fresh memory, a zeroed page — without reading anything from disk.
    """
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def page_faults_per_call(fn: Callable[[], object], calls: int = 3,
                         counter: Callable[[], int] = page_faults) -> float:
    """Mean page faults of one call of ``fn()``, over ``calls`` calls after an uncounted one.

    The first call is left out, as the timers leave it out (lazy allocations);
    what remains is what every call pays, e.g. for writing a fresh output.

    Parameters
    ----------
    fn : callable
    calls : int, default 3
        Counted calls, >= 1.
    counter : callable, default :func:`page_faults`
        Returns the faults so far; read once before and once after the calls.
    """
    _check_repeats("calls", calls, "calls", calls)
    fn()
    before = counter()
    for _ in range(calls):
        fn()
    return (counter() - before) / calls


def counting_page_faults(fn: Callable[[], object], counts: List[int],
                         counter: Callable[[], int] = page_faults) -> Callable[[], object]:
    """``fn``, appending the page faults of each call to ``counts``; returns what ``fn`` returns.

    For counting the faults of the very calls a timer makes: pass the wrapped
    function to :func:`compare_times` (the counter is read outside the timed
    call's own work, but inside its timing, so it adds a system call's time
    to every repeat alike).
    """
    def run():
        before = counter()
        out = fn()
        counts.append(counter() - before)
        return out

    return run
