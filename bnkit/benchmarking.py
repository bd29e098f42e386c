"""Timing batch normalization: best-of-N timers and the benchmark cases.

Used by ``benchmarks/bench_batchnorm.py`` and by Chapter 9 of the book. Two rules
make timings on a shared, noisy machine mean something:

* **best of N**: the minimum over repeats estimates what the code costs when
  nothing else interferes (noise only ever adds time);
* **same run, interleaved**: implementations are compared by calling them in
  turn, round after round (:func:`compare_times`), so a burst of load from
  elsewhere slows all of them alike and their *ratios* stay meaningful.

A case is one implementation, one mode (``"forward"``: training-mode forward;
``"forward+backward"``: forward then the input, weight and bias gradients), one
shape, one memory layout (``"channels_first"``, e.g. NCHW; ``"channels_last"``,
e.g. NHWC) and one dtype. :func:`run_cases` times a grid of them and returns one
record (a dict) per case, with the minimal bytes of :mod:`bnkit.roofline` and
the bandwidth achieved against them. torch is imported only when a torch case is
built, so ``import bnkit.benchmarking`` stays light.
"""

from __future__ import annotations

import gc
import time
from typing import Callable, Dict, Iterable, List, Mapping, Optional, Sequence

import numpy as np

from . import roofline

__all__ = [
    "best_time",
    "compare_times",
    "available_implementations",
    "make_case",
    "run_cases",
    "add_ratios",
    "IMPLEMENTATIONS",
    "MODES",
    "LAYOUTS",
]

#: CPU implementations, in the order tables list them ("torch" is torch's own kernel).
IMPLEMENTATIONS = ("torch", "bnkit.torch", "bnkit.numpy")
#: Added by :func:`available_implementations` when a GPU is present.
CUDA_IMPLEMENTATIONS = ("torch.cuda", "bnkit.torch.cuda")
MODES = ("forward", "forward+backward")
LAYOUTS = ("channels_first", "channels_last")


class _GcOff:
    """Garbage collection paused while timing (as :mod:`timeit` does)."""

    def __enter__(self):
        self.was_enabled = gc.isenabled()
        gc.disable()

    def __exit__(self, *exc):
        if self.was_enabled:
            gc.enable()


def best_time(fn: Callable[[], object], budget: float = 0.2, min_repeats: int = 3,
              max_repeats: int = 200) -> float:
    """Minimum wall time of ``fn()`` in seconds, over repeats filling about ``budget`` seconds.

    One untimed call first (allocations, lazy initialisation); then at least
    ``min_repeats`` and at most ``max_repeats`` timed calls.
    """
    fn()
    best = float("inf")
    repeats = 0
    with _GcOff():
        deadline = time.perf_counter() + budget
        while repeats < min_repeats or (repeats < max_repeats
                                        and time.perf_counter() < deadline):
            start = time.perf_counter()
            fn()
            best = min(best, time.perf_counter() - start)
            repeats += 1
    return best


def compare_times(fns: Mapping[str, Callable[[], object]], budget: float = 0.2,
                  min_rounds: int = 3, max_rounds: int = 200) -> Dict[str, float]:
    """Best time in seconds of each of ``fns``, called in turn, round after round.

    Every round calls each function once; rounds go on until about
    ``budget`` seconds *per function* have passed (at least ``min_rounds``,
    at most ``max_rounds``). Interleaving means the machine's load, whatever it
    is, falls on every function alike.
    """
    names = list(fns)
    for name in names:                       # warm up
        fns[name]()
    best = {name: float("inf") for name in names}
    rounds = 0
    with _GcOff():
        deadline = time.perf_counter() + budget * len(names)
        while rounds < min_rounds or (rounds < max_rounds and time.perf_counter() < deadline):
            for name in names:
                start = time.perf_counter()
                fns[name]()
                best[name] = min(best[name], time.perf_counter() - start)
            rounds += 1
    return best


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


def _torch_case(implementation: str, mode: str, x_np: np.ndarray, g_np: np.ndarray,
                layout: str) -> Callable[[], object]:
    import torch
    import torch.nn.functional as F

    import bnkit.torch as bnt

    device = "cuda" if implementation.endswith(".cuda") else "cpu"
    fn = bnt.batch_norm if implementation.startswith("bnkit.torch") else F.batch_norm
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
    sync = torch.cuda.synchronize if device == "cuda" else (lambda: None)

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


def make_case(implementation: str, mode: str, shape: Sequence[int],
              layout: str = "channels_first", dtype="float32",
              seed: int = 0) -> Callable[[], object]:
    """A closure that runs one case once (inputs built now, from a seeded generator).

    Parameters
    ----------
    implementation : str
        One of :data:`IMPLEMENTATIONS` or, with a GPU, ``"torch.cuda"``
        (torch's kernel, cuDNN) and ``"bnkit.torch.cuda"``.
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
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    shape = tuple(int(d) for d in shape)
    axis = _channel_axis(layout, len(shape))
    rng = np.random.default_rng(seed)
    x = rng.standard_normal(shape).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    if implementation == "bnkit.numpy":
        if axis == -1:               # stored as (N, *, C)
            x, g = (np.ascontiguousarray(np.moveaxis(a, 1, -1)) for a in (x, g))
        return _numpy_case(mode, x, g, axis)
    if implementation in IMPLEMENTATIONS + CUDA_IMPLEMENTATIONS:
        return _torch_case(implementation, mode, x, g, layout)
    raise ValueError(f"unknown implementation {implementation!r}")


def run_cases(shapes: Iterable[Sequence[int]], layouts: Sequence[str] = LAYOUTS,
              implementations: Optional[Sequence[str]] = None,
              modes: Sequence[str] = MODES, dtype="float32", budget: float = 0.2,
              threads: Optional[int] = 1, progress: Optional[Callable] = None) -> List[dict]:
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
        Seconds of repeats per case (see :func:`compare_times`).
    threads : int or None, default 1
        torch's thread count during the run (restored after); ``None`` keeps
        it. bnkit.numpy runs on one thread whatever it is.
    progress : callable, optional
        Wraps the list of (shape, layout, mode) groups, e.g. ``tqdm.tqdm``.

    Returns
    -------
    list of dict
        One per case: ``implementation``, ``mode``, ``shape`` (tuple), ``layout``,
        ``dtype``, ``threads``, ``seconds`` (best time), ``bytes`` (the minimal
        traffic of :func:`bnkit.roofline.forward_bytes` or
        :func:`bnkit.roofline.training_bytes`) and ``GBps`` (``bytes`` / ``seconds`` / 1e9).
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
            times = compare_times(fns, budget=budget)
            nbytes = (roofline.forward_bytes(shape, dtype) if mode == "forward"
                      else roofline.training_bytes(shape, dtype))
            for impl, seconds in times.items():
                records.append(dict(implementation=impl, mode=mode, shape=shape, layout=layout,
                                    dtype=str(np.dtype(dtype)), threads=torch.get_num_threads(),
                                    seconds=seconds, bytes=nbytes,
                                    GBps=roofline.achieved_bandwidth(nbytes, seconds) / 1e9))
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
