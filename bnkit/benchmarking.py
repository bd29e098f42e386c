r"""Timing batch normalization: the benchmark cases, on top of :mod:`bnkit.timing`.

Used by ``benchmarks/bench_batchnorm.py`` and by Chapter 9 of the book. The
timers themselves (:func:`bnkit.timing.best_time`, :func:`bnkit.timing.compare_times`) live in
:mod:`bnkit.timing` and are re-exported here; the byte counts in
:mod:`bnkit.roofline`.

A case is one implementation, one mode (``"forward"``: training-mode forward;
``"forward+backward"``: forward then the input, weight and bias gradients), one
shape, one memory layout (``"channels_first"``, e.g. NCHW; ``"channels_last"``,
e.g. NHWC) and one dtype. One call of a case's closure is exactly:

* ``"forward"``: one call of the batch-norm function in training mode, under
  :func:`torch.no_grad` (torch) — the batch statistics, the update of the
  running mean and variance, and a freshly allocated output;
* ``"forward+backward"``: a fresh leaf ``x.detach().requires_grad_()``, the
  same forward with autograd recording, then :func:`torch.autograd.grad` of the
  output against a fixed ``g`` for ``x``, :math:`\gamma` and :math:`\beta`.

:func:`torch_case` builds that closure for any function with the signature of
:func:`torch.nn.functional.batch_norm` (a compiled one included), so every torch
implementation is timed by the same harness. :func:`floor_case` builds the
*floor* of a case: the passes over memory of :mod:`bnkit.roofline` made by
kernels that do no arithmetic (:func:`bnkit.timing.stream_passes`).
:func:`replayed` replays the operations one training step of a function
dispatches, with nothing in between (the price of its operations alone), and
:func:`without_huge_pages` runs a case with bnkit.torch's huge-page hint off.
:func:`run_cases` times a grid of cases and returns one record (a dict) per
case; :func:`add_ratios` and :func:`add_copy_times` add to the records, and
:func:`select`, :func:`floor_ratios`, :func:`sweep_table` and
:func:`scoreboard_table` read them. :func:`hint_comparison` times bnkit.torch with
and without its huge-page hint next to native torch, counting the page faults
of the calls it times, and :func:`matmul_flops` measures the compute ceiling.
torch is imported only when a torch case is built, so ``import bnkit.benchmarking``
stays light.
"""

from __future__ import annotations

import math
import time
from typing import Callable, Dict, Iterable, List, Optional, Sequence

import numpy as np

from . import roofline, timing
from .timing import best_time, compare_times

__all__ = [
    "best_time",
    "compare_times",
    "available_implementations",
    "make_case",
    "torch_inputs",
    "torch_case",
    "replayed",
    "without_huge_pages",
    "floor_case",
    "run_cases",
    "add_ratios",
    "add_copy_times",
    "select",
    "floor_ratios",
    "sweep_table",
    "scoreboard_table",
    "hint_comparison",
    "matmul_flops",
    "IMPLEMENTATIONS",
    "CUDA_IMPLEMENTATIONS",
    "MODES",
    "LAYOUTS",
]

#: CPU implementations, in the order tables list them ("torch" is torch's own kernel).
IMPLEMENTATIONS = ("torch", "bnkit.torch", "bnkit.numpy")
#: Added by :func:`available_implementations` when a GPU is present.
CUDA_IMPLEMENTATIONS = ("torch.cuda", "bnkit.torch.cuda")
MODES = ("forward", "forward+backward")
LAYOUTS = ("channels_first", "channels_last")
_FLOOR = "<floor>"                       # the floor's name among the implementations of a group


def available_implementations() -> tuple:
    """:data:`IMPLEMENTATIONS`, plus the CUDA ones (cuDNN) when torch sees a GPU."""
    import torch

    return IMPLEMENTATIONS + (CUDA_IMPLEMENTATIONS if torch.cuda.is_available() else ())


def _channel_axis(layout: str, ndim: int) -> int:
    if layout not in LAYOUTS:
        raise ValueError(f"layout must be one of {LAYOUTS} (got {layout!r})")
    return 1 if layout == "channels_first" or ndim == 2 else -1


def _numpy_case(mode: str, x: np.ndarray, g: np.ndarray, axis: int) -> Callable[[], object]:
    import bnkit.numpy as bnp

    c = x.shape[axis]
    weight, bias = np.ones(c, x.dtype), np.zeros(c, x.dtype)
    running_mean, running_var = np.zeros(c, x.dtype), np.ones(c, x.dtype)

    def forward():
        return bnp.batch_norm(x, running_mean, running_var, weight, bias, training=True,
                              channel_axis=axis)

    def forward_backward():
        forward()
        return bnp.batch_norm_backward(g, x, weight, channel_axis=axis)

    return forward if mode == "forward" else forward_backward


def _check_mode(mode: str) -> None:
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")


def _inputs(shape: Sequence[int], dtype, seed: int):
    shape = tuple(int(d) for d in shape)
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape).astype(dtype), rng.standard_normal(shape).astype(dtype))


def torch_inputs(shape: Sequence[int], layout: str = "channels_first", dtype="float32",
                 seed: int = 0, device: str = "cpu"):
    """The tensors of a torch case: ``x, g, weight, bias, running_mean, running_var``.

    ``x`` and the upstream gradient ``g`` are standard normal (from ``seed``),
    of the logical shape ``(N, C, *)`` and stored in ``layout``; ``weight`` (ones)
    and ``bias`` (zeros) require gradients; the running mean is zeros and the
    running variance ones. All in ``dtype``, on ``device``.
    """
    import torch

    x_np, g_np = _inputs(shape, dtype, seed)
    _channel_axis(layout, x_np.ndim)
    x = torch.from_numpy(x_np).to(device)
    g = torch.from_numpy(g_np).to(device)
    if layout == "channels_last" and x.dim() in (4, 5):
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x, g = x.contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)
    c = x.shape[1]
    weight = torch.ones(c, dtype=x.dtype, device=device, requires_grad=True)
    bias = torch.zeros(c, dtype=x.dtype, device=device, requires_grad=True)
    running_mean = torch.zeros(c, dtype=x.dtype, device=device)
    running_var = torch.ones(c, dtype=x.dtype, device=device)
    return x, g, weight, bias, running_mean, running_var


def torch_case(fn: Callable, mode: str, shape: Sequence[int], layout: str = "channels_first",
               dtype="float32", seed: int = 0, device: str = "cpu") -> Callable[[], object]:
    """A closure that runs ``fn`` once as one case of the harness (inputs built now).

    Parameters
    ----------
    fn : callable
        Called as ``fn(x, running_mean, running_var, weight, bias, training=True)``,
        like :func:`torch.nn.functional.batch_norm` (a function compiled with
        :func:`torch.compile` included; its first call compiles it).
    mode : {"forward", "forward+backward"}
        What one call does: see the module's description.
    shape : sequence of int
        The logical shape ``(N, C, *)``, whatever the layout.
    layout : {"channels_first", "channels_last"}, default "channels_first"
        ``channels_last`` stores rank-4 and rank-5 inputs with
        ``torch.channels_last`` / ``torch.channels_last_3d``.
    dtype : numpy dtype or str, default "float32"
    seed : int, default 0
        Of the input ``x`` and the upstream gradient ``g`` (standard normal).
    device : str, default "cpu"
        On ``"cuda"``, every call ends with :func:`torch.cuda.synchronize`.

    Returns
    -------
    callable
        ``"forward"``: returns the output; ``"forward+backward"``: the
        gradients for ``x``, ``weight`` and ``bias``.
    """
    import torch

    _check_mode(mode)
    x, g, weight, bias, running_mean, running_var = torch_inputs(shape, layout, dtype, seed,
                                                                 device)
    sync = torch.cuda.synchronize if str(device).startswith("cuda") else (lambda: None)

    def forward():
        with torch.no_grad():
            y = fn(x, running_mean, running_var, weight, bias, training=True)
        sync()
        return y

    def forward_backward():
        x_in = x.detach().requires_grad_()
        y = fn(x_in, running_mean, running_var, weight, bias, training=True)
        grads = torch.autograd.grad(y, (x_in, weight, bias), g)
        sync()
        return grads

    return forward if mode == "forward" else forward_backward


def replayed(fn: Callable, shape: Sequence[int], layout: str = "channels_first",
             dtype="float32", seed: int = 0) -> Callable:
    """``fn``'s own operations for one training step, replayed in a bare autograd.Function.

    Runs one ``"forward+backward"`` call of :func:`torch_case` for ``fn``
    (CPU) while recording the ATen operations it dispatches
    (:func:`bnkit.op_trace.record`), and returns a function with the signature of
    :func:`torch.nn.functional.batch_norm` whose forward and backward dispatch
    exactly those operations again, on the recorded tensors, with no Python
    in between. Timed by :func:`torch_case` with the same shape, it is what
    ``fn`` would cost if its own Python (argument checks, choosing a path,
    building the arguments of each operation) were free: the price of its
    operations and of being an autograd.Function.

    The replay computes from the recorded inputs (:func:`bnkit.op_trace.replayer`),
    not from the ones it is given: its output and input gradient are those of
    the recorded call; it returns the recorded gradients of ``weight`` and
    ``bias``.
    """
    import torch

    from . import op_trace

    x, g, weight, bias, running_mean, running_var = torch_inputs(shape, layout, dtype, seed)
    x_in = x.detach().requires_grad_()
    y, forward_ops = op_trace.record(fn, x_in, running_mean, running_var, weight, bias,
                                     training=True, keep_calls=True)
    grads, backward_ops = op_trace.record(torch.autograd.grad, y, (x_in, weight, bias), g,
                                          keep_calls=True)
    param_grads = tuple(t.detach() for t in grads[1:])
    run_forward = op_trace.replayer(forward_ops, result=y)
    run_backward = op_trace.replayer(backward_ops, result=grads[0])

    class Replay(torch.autograd.Function):
        @staticmethod
        def forward(ctx, x, weight, bias):
            return run_forward()

        @staticmethod
        def backward(ctx, grad):
            return (run_backward(),) + param_grads

    def replaying(x, running_mean=None, running_var=None, weight=None, bias=None,
                  training=False, momentum=0.1, eps=1e-5):
        return Replay.apply(x, weight, bias)

    return replaying


def without_huge_pages(case: Callable[[], object]) -> Callable[[], object]:
    """``case`` run with bnkit.torch's huge-page hint off (:data:`bnkit.torch.kernels.HUGE_PAGE_BYTES` = None).

    The setting is restored after every call, also when the call raises: the
    wrapped case can be timed in the same rounds as the unwrapped one.
    """
    from bnkit.torch import kernels

    def run():
        saved = kernels.HUGE_PAGE_BYTES
        kernels.HUGE_PAGE_BYTES = None
        try:
            return case()
        finally:
            kernels.HUGE_PAGE_BYTES = saved

    return run


def floor_case(mode: str, shape: Sequence[int], dtype="float32") -> Callable[[], object]:
    """A closure that makes a case's minimal passes over memory, and no arithmetic.

    The passes of :func:`bnkit.roofline.forward_passes` (``"forward"``) or
    :func:`bnkit.roofline.training_passes` (``"forward+backward"``), over
    arrays of the size of ``x``, by :func:`bnkit.timing.stream_passes`: one
    NumPy loop per pass, one thread, ordinary stores into an output allocated
    once. Its best time is the case's *floor* on this machine: what those bytes
    cost in that order, with nothing else to do. The per-channel vectors are
    left out (a few times ``C`` values), and the floor does not depend on the
    layout.
    """
    _check_mode(mode)
    shape = tuple(int(d) for d in shape)
    nbytes = np.dtype(dtype).itemsize * math.prod(shape)
    passes = roofline.forward_passes() if mode == "forward" else roofline.training_passes()
    return timing.stream_passes(passes, nbytes, dtype)


def make_case(implementation: str, mode: str, shape: Sequence[int],
              layout: str = "channels_first", dtype="float32",
              seed: int = 0) -> Callable[[], object]:
    """A closure that runs one case once (inputs built now, from a seeded generator).

    Parameters
    ----------
    implementation : str
        One of :data:`IMPLEMENTATIONS` or, with a GPU, ``"torch.cuda"``
        (torch's kernel, cuDNN) and ``"bnkit.torch.cuda"``. The torch ones are
        :func:`torch_case` of :func:`torch.nn.functional.batch_norm` or
        :func:`bnkit.torch.batch_norm`.
    mode : {"forward", "forward+backward"}
    shape : sequence of int
        The logical shape ``(N, C, *)``, whatever the layout.
    layout : {"channels_first", "channels_last"}, default "channels_first"
        How the values lie in memory; ``channels_last`` stores ``(N, *, C)``
        (NumPy: ``channel_axis=-1``; torch: ``torch.channels_last``, rank 4 or 5
        only). A rank-2 shape has one layout.
    dtype : numpy dtype or str, default "float32"
    seed : int, default 0
    """
    _check_mode(mode)
    axis = _channel_axis(layout, len(tuple(shape)))
    if implementation == "bnkit.numpy":
        x, g = _inputs(shape, dtype, seed)
        if axis == -1:               # stored as (N, *, C)
            x, g = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, g))
        return _numpy_case(mode, x, g, axis)
    if implementation in IMPLEMENTATIONS + CUDA_IMPLEMENTATIONS:
        import torch.nn.functional as F

        import bnkit.torch as bnt

        fn = bnt.batch_norm if implementation.startswith("bnkit.torch") else F.batch_norm
        device = "cuda" if implementation.endswith(".cuda") else "cpu"
        return torch_case(fn, mode, shape, layout, dtype, seed, device)
    raise ValueError(f"unknown implementation {implementation!r}")


def run_cases(shapes: Iterable[Sequence[int]], layouts: Sequence[str] = LAYOUTS,
              implementations: Optional[Sequence[str]] = None,
              modes: Sequence[str] = MODES, dtype="float32", budget: float = 0.2,
              threads: Optional[int] = 1, progress: Optional[Callable] = None,
              floor: bool = False) -> List[dict]:
    """Time every case of a grid; the implementations of one (shape, layout, mode) interleaved.

    Parameters
    ----------
    shapes : iterable of shapes ``(N, C, *)``
    layouts : sequence of {"channels_first", "channels_last"}, default both
        ``channels_last`` is skipped for rank-2 shapes (the same as channels first).
    implementations : sequence of str, optional
        Default :func:`available_implementations`.
    modes : sequence of {"forward", "forward+backward"}, default both
    dtype : default "float32"
    budget : float, default 0.2
        Seconds of repeats per case (see :func:`bnkit.timing.compare_times`).
    threads : int or None, default 1
        torch's thread count during the run (restored after); ``None`` keeps
        it. bnkit.numpy runs on one thread whatever it is.
    progress : callable, optional
        Wraps the list of (shape, layout, mode) groups, e.g. ``tqdm.tqdm``.
    floor : bool, default False
        Also time each group's :func:`floor_case`, interleaved with the
        implementations, and store it as ``floor_s``.

    Returns
    -------
    list of dict
        One per case: ``implementation``, ``mode``, ``shape`` (tuple), ``layout``,
        ``dtype``, ``threads``, ``seconds`` (best time), ``bytes`` (the minimal
        traffic of :func:`bnkit.roofline.forward_bytes` or
        :func:`bnkit.roofline.training_bytes`) and ``GBps`` (``bytes`` / ``seconds`` / 1e9);
        with ``floor=True`` also ``floor_s``, the best time of the floor measured
        in the same rounds (``None`` for the CUDA implementations: the floor is
        this CPU's).
    """
    import torch

    implementations = tuple(implementations or available_implementations())
    groups = [(tuple(shape), layout, mode) for shape in shapes for layout in layouts
              for mode in modes if not (layout == "channels_last" and len(shape) == 2)]
    saved_threads = torch.get_num_threads()
    if threads is not None:
        torch.set_num_threads(threads)
    records = []
    try:
        for shape, layout, mode in (progress(groups) if progress else groups):
            fns = {impl: make_case(impl, mode, shape, layout, dtype) for impl in implementations}
            if floor:
                fns[_FLOOR] = floor_case(mode, shape, dtype)
            times = compare_times(fns, budget=budget)
            floor_s = times.pop(_FLOOR, None)
            nbytes = (roofline.forward_bytes(shape, dtype) if mode == "forward"
                      else roofline.training_bytes(shape, dtype))
            for impl, seconds in times.items():
                records.append(dict(implementation=impl, mode=mode, shape=shape, layout=layout,
                                    dtype=str(np.dtype(dtype)), threads=torch.get_num_threads(),
                                    seconds=seconds, bytes=nbytes,
                                    GBps=roofline.achieved_bandwidth(nbytes, seconds) / 1e9))
                if floor:
                    records[-1]["floor_s"] = None if impl.endswith(".cuda") else floor_s
            del fns
    finally:
        torch.set_num_threads(saved_threads)
    return records


def add_ratios(records: List[dict], baseline: str = "torch") -> List[dict]:
    """Add ``ratio`` = seconds / seconds of ``baseline`` on the same case, to every record.

    Records with no baseline case get ``ratio = None``. Returns ``records``.
    """
    key = lambda r: (r["mode"], tuple(r["shape"]), r["layout"], r["dtype"], r["threads"])
    base = {key(r): r["seconds"] for r in records if r["implementation"] == baseline}
    for r in records:
        b = base.get(key(r))
        r["ratio"] = None if b is None else r["seconds"] / b
    return records


def add_copy_times(records: List[dict], budget: float = 0.05,
                   clock: Callable[[], float] = time.perf_counter) -> List[dict]:
    """Add ``copy_s`` to every record: its ``bytes`` at the copy bandwidth of ``x``'s size.

    The copy bandwidth (:func:`bnkit.timing.measure_copy_bandwidth`) is measured
    once per shape and dtype, for arrays of the size of ``x``; ``copy_s`` is
    :func:`bnkit.roofline.roofline_time` of the record's minimal bytes at that
    bandwidth. Returns ``records``.
    """
    bandwidth = {}
    for r in records:
        key = (tuple(r["shape"]), r["dtype"])
        if key not in bandwidth:
            nbytes = np.dtype(r["dtype"]).itemsize * math.prod(r["shape"])
            bandwidth[key] = timing.measure_copy_bandwidth(nbytes, budget=budget, clock=clock)
        r["copy_s"] = roofline.roofline_time(r["bytes"], bandwidth[key])
    return records


def select(records: Iterable[dict], **match) -> List[dict]:
    """The records whose fields equal ``match`` (e.g. ``mode="forward"``), smallest shape first."""
    rows = [r for r in records if all(r[k] == v for k, v in match.items())]
    return sorted(rows, key=lambda r: math.prod(r["shape"]))


def floor_ratios(records: Iterable[dict]) -> Dict[str, List[float]]:
    """``seconds / floor_s`` of every record that has a floor, by implementation (record order)."""
    ratios: Dict[str, List[float]] = {}
    for r in records:
        if r.get("floor_s"):
            ratios.setdefault(r["implementation"], []).append(r["seconds"] / r["floor_s"])
    return ratios


def _layout_name(layout: str, shape: Sequence[int]) -> str:
    if len(shape) == 2:
        return "-"                                  # (N, D): one layout
    first = layout == "channels_first"
    if len(shape) == 4:
        return "NCHW" if first else "NHWC"
    return "NC*" if first else "N*C"


def _groups(records: Iterable[dict]) -> Dict[tuple, Dict[str, dict]]:
    groups: Dict[tuple, Dict[str, dict]] = {}
    for r in records:
        groups.setdefault((tuple(r["shape"]), r["layout"], r["mode"]), {})[r["implementation"]] = r
    return groups


def _others(groups, baseline: str) -> List[str]:
    return [i for i in dict.fromkeys(i for g in groups.values() for i in g) if i != baseline]


def _ratio(record: Optional[dict], width: int) -> str:
    if record is None or record.get("ratio") is None:
        return f"{'-':>{width}}"
    return f"{record['ratio']:{width}.2f}"


def sweep_table(records: Iterable[dict], baseline: str = "torch") -> str:
    """A size sweep as a table: each implementation's time over native's; native's over its floor.

    One row per mode, layout and size (in ``MODES`` and ``LAYOUTS``
    order, then by size), with the size of ``x`` in MB (10**6 bytes). The
    records need ``ratio`` (:func:`add_ratios` against ``baseline``, the native
    kernel) and ``floor_s`` (:func:`run_cases` with ``floor=True``).
    """
    groups = _groups(records)
    others = _others(groups, baseline)
    lines = [f"{'mode':>16} {'layout':>6} {'x (MB)':>7} | time / native: "
             + " ".join(f"{i:>16}" for i in others) + " | native / floor"]
    order = lambda key: (MODES.index(key[2]), LAYOUTS.index(key[1]), math.prod(key[0]))
    for key in sorted(groups, key=order):
        shape, layout, mode = key
        row, native = groups[key], groups[key][baseline]
        size = np.dtype(native["dtype"]).itemsize * math.prod(shape) / 1e6
        lines.append(f"{mode:>16} {_layout_name(layout, shape):>6} {size:7.2f} | {'':15}"
                     + " ".join(_ratio(row.get(i), 16) for i in others)
                     + f" | {native['seconds'] / native['floor_s']:14.1f}")
    return "\n".join(lines)


def scoreboard_table(records: Iterable[dict], baseline: str = "torch") -> str:
    """Cases as a table in milliseconds: floor, copy shortcut, native, every other implementation.

    One row per shape, layout and mode, in the order of the records; each
    implementation other than ``baseline`` (the native kernel) with its time
    and its ratio to native, and last native's time over its floor. The records
    need ``floor_s``, ``copy_s`` (:func:`add_copy_times`) and ``ratio``
    (:func:`add_ratios`).
    """
    groups = _groups(records)
    others = _others(groups, baseline)
    lines = [f"{'shape':>18} {'layout':>6} {'mode':>16} | {'floor':>9} {'copy':>9} {'native':>9} | "
             + " | ".join(f"{i + ' (x native)':>24}" for i in others) + " | native / floor"]
    for (shape, layout, mode), row in groups.items():
        native = row[baseline]
        cells = []
        for i in others:
            r = row.get(i)
            cells.append(f"{'-':>24}" if r is None else
                         f"{r['seconds'] * 1e3:9.3f}ms ({_ratio(r, 5).strip():>5}x)".rjust(24))
        lines.append(f"{str(shape):>18} {_layout_name(layout, shape):>6} {mode:>16} | "
                     f"{native['floor_s'] * 1e3:7.3f}ms {native['copy_s'] * 1e3:7.3f}ms "
                     f"{native['seconds'] * 1e3:7.3f}ms | " + " | ".join(cells)
                     + f" | {native['seconds'] / native['floor_s']:14.1f}")
    return "\n".join(lines)


def hint_comparison(shape: Sequence[int], mode: str, layout: str = "channels_first",
                    budget: float = 0.05,
                    counter: Callable[[], int] = timing.page_faults) -> Dict[str, dict]:
    """Native torch, bnkit.torch and bnkit.torch without its huge-page hint, in the same rounds.

    The three cases (:func:`make_case`, :func:`without_huge_pages`) are timed by
    :func:`bnkit.timing.compare_times`, and the page faults of every call it makes are
    counted (:func:`bnkit.timing.counting_page_faults`) — the faults of the very
    calls that are timed.

    Parameters
    ----------
    shape, mode, layout
        The case, as for :func:`make_case` (float32).
    budget : float, default 0.05
        Seconds of rounds per case.
    counter : callable, default :func:`bnkit.timing.page_faults`

    Returns
    -------
    dict
        Under ``"native"``, ``"hinted"`` and ``"no hint"``: ``seconds`` (the best
        time) and ``faults_per_page`` (the median over the calls of the faults
        of one call, per :data:`bnkit.timing.PAGE_BYTES` of ``x``).
    """
    hinted = make_case("bnkit.torch", mode, shape, layout)
    cases = {"native": make_case("torch", mode, shape, layout), "hinted": hinted,
             "no hint": without_huge_pages(hinted)}
    faults: Dict[str, List[int]] = {name: [] for name in cases}
    seconds = compare_times({name: timing.counting_page_faults(case, faults[name], counter)
                             for name, case in cases.items()}, budget=budget)
    pages = 4 * math.prod(shape) / timing.PAGE_BYTES
    return {name: dict(seconds=seconds[name],
                       faults_per_page=float(np.median(faults[name])) / pages)
            for name in cases}


def matmul_flops(n: int = 1024, budget: float = 0.3,
                 clock: Callable[[], float] = time.perf_counter) -> float:
    """Floating-point operations per second of an ``n`` x ``n`` float32 matrix product in torch.

    :math:`2n^3` operations per product (:math:`n^3` multiply-adds) over its best
    time (:func:`bnkit.timing.best_time`), on torch's current number of threads:
    the compute ceiling of the roofline model for arithmetic that reuses its
    data from the caches.
    """
    import torch

    if int(n) != n or n < 1:
        raise ValueError(f"n must be an int >= 1 (got {n!r})")
    gen = torch.Generator().manual_seed(0)
    a, b = torch.randn(n, n, generator=gen), torch.randn(n, n, generator=gen)
    return 2 * n**3 / best_time(lambda: a @ b, budget=budget, clock=clock)
