r"""The formulas of batch normalization in torch, written once.

Every layer -- :class:`~bnkit.torch.BatchNorm2d` and its siblings through
:func:`~bnkit.torch.batch_norm`, and :class:`~bnkit.torch.sync.SyncBatchNorm` -- calls
these functions for its math: the batch statistics, the normalize step, the
running-average update (``momentum=None`` included) and the input gradient.
They take tensors whose dim 1 holds the :math:`C` channels, never call torch's
batch-norm kernels, and check nothing (the callers check their arguments).

For every channel, over its :math:`m` values:

.. math::

    \mu = \frac{1}{m}\sum x, \qquad \sigma^2 = \frac{1}{m}\sum (x - \mu)^2, \qquad
    y = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta
      = s\,x + (\beta - s\,\mu), \quad s = \frac{\gamma}{\sqrt{\sigma^2 + \varepsilon}},

and, with :math:`g = \partial L/\partial y` and the statistics of the batch,

.. math::

    \frac{\partial L}{\partial x} = s\Big(g - \frac{1}{m}\sum g
        - \frac{\hat x}{m}\sum g\,\hat x\Big)
    = s\,g + c_x\,x + c_0, \qquad
    c_x = -\frac{s}{\sqrt{\sigma^2+\varepsilon}}\,\frac{\sum g\,\hat x}{m}, \quad
    c_0 = -\frac{s}{m}\sum g - c_x\,\mu .

**Dtypes.** The math is computed in :func:`compute_dtype`: float32 for float16 and bfloat16 inputs,
the input's own dtype for float32 and float64. The sums behind the statistics
and the gradient sums are accumulated in that dtype at least (on the CPU, the
partial sums of cache-sized blocks are added in float64), so a float16 input
whose sum of squares exceeds 65504 does not overflow. Per-channel results
(mean, variance, :math:`s`, the gradient sums) come out in the compute dtype;
tensors of the input's shape (output, input gradient) in the input's dtype,
rounded once from the compute dtype.

**Speed** (Chapter 9). A tensor that fits in a core's cache (:data:`BLOCK_BYTES`)
costs per operation, not per byte: it takes the *small* path, which keeps
:math:`\hat x` for the backward instead of :math:`x` (:func:`saves_xhat`), so that
forward and backward each run about half as many operations. On a larger one
the cost is per byte -- batch norm is memory-bound -- so on the CPU each pass
runs over blocks of rows small enough to stay in cache: a block is read from
memory once per pass and every further operation on it hits the cache. Where
the channels are not the innermost dim (NCHW), per-channel affine maps are
written as a multiply and an in-place add, which torch vectorizes well, rather
than one ``addcmul`` with two broadcast operands, which it does not. Large
outputs are allocated with a hint for transparent huge pages
(:func:`new_output`): on Linux the first touch of fresh 4 KiB pages otherwise
costs more than the arithmetic. Under :func:`torch.compile`, and on GPUs, each
pass is one whole-tensor expression instead, which the compiler fuses.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import math
import sys
from typing import List, Optional, Tuple

import torch

__all__ = [
    "BLOCK_BYTES",
    "PARALLEL_BLOCK_BYTES",
    "HUGE_PAGE_BYTES",
    "reduce_dims",
    "per_channel",
    "values_per_channel",
    "compute_dtype",
    "row_blocks",
    "saves_xhat",
    "new_output",
    "batch_statistics",
    "standardize",
    "normalize",
    "affine",
    "exponential_average_factor",
    "update_running_stats",
    "gradient_sums",
    "input_gradient",
    "scaled",
]

#: Bytes of input per block on the CPU, small enough to stay in a core's L2 cache.
BLOCK_BYTES = 1 << 19

#: Bytes of input per block *and thread* when torch runs on several threads. Each
#: operation on a block is one parallel region, whose threads must all arrive before
#: the next one starts; on a shared machine a region can wait a scheduler tick for a
#: thread, so the blocks are fewer and larger (sized for the shared L3 cache, not L2).
PARALLEL_BLOCK_BYTES = 1 << 22

#: Outputs of at least this many bytes are allocated with a huge-page hint (Linux, CPU).
#: ``None`` turns the hint off.
HUGE_PAGE_BYTES: Optional[int] = 1 << 23

_HUGE_PAGE = 1 << 21
_MADV_HUGEPAGE = 14


def _load_madvise():
    """libc's ``madvise`` on Linux, else None."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.madvise
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
    fn.restype = ctypes.c_int
    return fn


_madvise = _load_madvise()


_REDUCE_DIMS = {n: (0,) + tuple(range(2, n)) for n in range(2, 9)}


def reduce_dims(x: torch.Tensor) -> Tuple[int, ...]:
    """Every dim but the channels (dim 1): ``(0, 2, 3, ...)``."""
    dims = _REDUCE_DIMS.get(x.dim())
    return dims if dims is not None else (0,) + tuple(range(2, x.dim()))


def per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) vector viewed as (1, C, 1, ..., 1) to broadcast against ``x``.

    For an (N, C) input the (C,) vector broadcasts as it is (no view needed).
    """
    if x.dim() == 2:
        return v
    return v.view((1, -1) + (1,) * (x.dim() - 2))


def values_per_channel(x: torch.Tensor) -> int:
    """:math:`m`, the values of each channel: the product of every dim but dim 1."""
    return math.prod(x.shape[:1] + x.shape[2:])


_COMPUTE_DTYPES = {torch.float16: torch.float32, torch.bfloat16: torch.float32,
                   torch.float32: torch.float32, torch.float64: torch.float64}


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float32 for float16/bfloat16, else ``dtype`` itself."""
    acc = _COMPUTE_DTYPES.get(dtype)
    return acc if acc is not None else torch.promote_types(dtype, torch.float32)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def _channels_innermost(x: torch.Tensor) -> bool:
    # (N, C), or channels-last memory: a per-channel vector varies along the fastest dim
    return x.dim() == 2 or x.stride(1) == 1


def row_blocks(x: torch.Tensor) -> List[slice]:
    """Slices of dim 0 of about :data:`BLOCK_BYTES` each on the CPU in eager mode.

    One slice (the whole tensor) on other devices and under :func:`torch.compile`.
    With :math:`T > 1` threads a block holds :math:`T` times
    :data:`PARALLEL_BLOCK_BYTES`: each operation on it splits it between the
    threads, and there are few such (synchronizing) operations per pass.
    """
    n = x.shape[0]
    if n == 0 or x.device.type != "cpu" or _compiling():
        return [slice(None)]
    threads = torch.get_num_threads()
    block = BLOCK_BYTES if threads == 1 else PARALLEL_BLOCK_BYTES * threads
    step = max(1, block * n // max(1, x.numel() * x.element_size()))
    if step >= n:
        return [slice(None)]
    return [slice(i, i + step) for i in range(0, n, step)]


def saves_xhat(x: torch.Tensor) -> bool:
    r"""Whether ``x`` takes the small path: it fits in one block (and is not being compiled).

    The small path computes :math:`\hat x` in the forward pass anyway and keeps
    it for the backward pass, which then needs neither :math:`x` nor
    :math:`\mu`: :func:`gradient_sums` and :func:`input_gradient` take
    :math:`\hat x` (``mean=None``). For a large tensor, writing :math:`\hat x`
    would cost a pass over memory; the large path keeps :math:`x` instead.
    """
    return x.numel() * x.element_size() <= BLOCK_BYTES and not _compiling()


def new_output(like: torch.Tensor, dtype: Optional[torch.dtype] = None) -> torch.Tensor:
    """An uninitialized tensor shaped and laid out like ``like``, for a large result.

    On Linux, a CPU tensor of at least :data:`HUGE_PAGE_BYTES` is marked for
    transparent huge pages (``madvise(MADV_HUGEPAGE)``) before anything is
    written to it: its first touch then maps 2 MiB pages instead of 4 KiB ones,
    which is several times faster than faulting in fresh small pages (torch's own
    allocator does the same under ``THP_MEM_ALLOC_ENABLE=1``). Where that is not
    possible, it is :func:`torch.empty_like`.
    """
    out = torch.empty_like(like, dtype=dtype)
    nbytes = out.numel() * out.element_size()
    if (_madvise is not None and HUGE_PAGE_BYTES is not None and nbytes >= HUGE_PAGE_BYTES
            and out.device.type == "cpu" and not _compiling()):
        start = out.data_ptr()
        first = (start + _HUGE_PAGE - 1) & ~(_HUGE_PAGE - 1)
        end = (start + nbytes) & ~(_HUGE_PAGE - 1)
        if end > first:
            _madvise(first, end - first, _MADV_HUGEPAGE)    # a hint: failure is harmless
    return out


def _block_accumulator(x: torch.Tensor) -> torch.dtype:
    # the blocks' partial sums are added in float64 on the CPU (float32 stays accurate)
    return torch.float64 if x.device.type == "cpu" else compute_dtype(x.dtype)


def _mean(x: torch.Tensor, dims, acc: torch.dtype) -> torch.Tensor:
    """Per-channel mean in ``acc`` (summed in ``acc``, without converting ``x`` first)."""
    if x.dtype == acc:
        return x.mean(dims)
    return x.sum(dims, dtype=acc).div_(values_per_channel(x))


def batch_statistics(x: torch.Tensor, keep_centered: bool = False):
    r"""Per-channel mean and biased variance of ``x`` (at least one value per channel).

    A tensor that fits in one block: the two-pass formula, both passes in cache.
    A larger one is read from memory once: with a shift :math:`s` (the mean of
    the first block, close to :math:`\mu`), every block computes its
    :math:`S_1 = \sum (x - s)` and :math:`S_2 = \sum (x - s)^2` while it is in
    cache; the blocks' sums are added in float64, and

    .. math:: \mu = s + \frac{S_1}{m}, \qquad \sigma^2 = \frac{S_2}{m} - \Big(\frac{S_1}{m}\Big)^2 .

    As :math:`s` is close to :math:`\mu`, the last term is small and the
    subtraction loses no digits, even when the mean dwarfs the spread.

    Parameters
    ----------
    x : Tensor of shape (N, C, ...)
    keep_centered : bool, default False
        Also return :math:`x - \mu` (in the compute dtype), which the
        two-pass formula computes anyway: for the small path (:func:`saves_xhat`).

    Returns
    -------
    mean, var : Tensors of shape (C,), in :func:`compute_dtype`
    centered : Tensor shaped like ``x``
        Only with ``keep_centered``.
    """
    dims = reduce_dims(x)
    acc = compute_dtype(x.dtype)
    if _compiling():
        var, mean = torch.var_mean(x.to(acc), dims, correction=0)
        return (mean, var, x - per_channel(mean, x)) if keep_centered else (mean, var)
    blocks = [None] if keep_centered and saves_xhat(x) else row_blocks(x)
    if len(blocks) == 1:
        mean = _mean(x, dims, acc)
        centered = x - per_channel(mean, x)
        if keep_centered:
            return mean, (centered * centered).mean(dims), centered
        return mean, centered.square_().mean(dims)
    m = values_per_channel(x)
    total = _block_accumulator(x)
    shift = _mean(x[blocks[0]], dims, acc)
    shift_b = per_channel(shift, x)
    partials = torch.empty((2, len(blocks), x.shape[1]), dtype=acc, device=x.device)
    work = torch.empty_like(x[blocks[0]], dtype=acc)     # one buffer, reused by every block
    for s, out1, out2 in zip(blocks, partials[0], partials[1]):
        xs = x[s]
        d = torch.sub(xs, shift_b, out=work[:xs.shape[0]])
        torch.sum(d, dims, out=out1)
        torch.sum(d.square_(), dims, out=out2)
    s1, s2 = partials.sum(1, dtype=total).unbind(0)
    offset = s1 / m                                     # mu - s
    mean = shift.to(total) + offset
    var = (s2 / m - offset.square()).clamp_min_(0)
    result = (mean.to(acc), var.to(acc))
    return result + (x - per_channel(result[0], x),) if keep_centered else result


def standardize(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
                centered: Optional[torch.Tensor] = None) -> torch.Tensor:
    r""":math:`\hat x = (x - \mu) / \sqrt{\sigma^2 + \varepsilon}`, in the compute dtype.

    ``centered`` (:math:`x - \mu`, from :func:`batch_statistics`) is scaled in
    place when given.
    """
    if centered is None:
        centered = x - per_channel(mean, x)
    return centered.mul_(per_channel(invstd, centered))


def affine(xhat: torch.Tensor, weight: Optional[torch.Tensor], bias: Optional[torch.Tensor],
           dtype: torch.dtype) -> torch.Tensor:
    r""":math:`y = \gamma \hat x + \beta` (``None``: :math:`\gamma = 1`, :math:`\beta = 0`), in ``dtype``."""
    if weight is None:
        y = xhat + per_channel(bias, xhat) if bias is not None else xhat.clone()
    elif bias is None:
        y = xhat * per_channel(weight, xhat)
    else:
        y = torch.addcmul(per_channel(bias, xhat), xhat, per_channel(weight, xhat))
    return y if y.dtype == dtype else y.to(dtype)


def normalize(x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor,
              weight: Optional[torch.Tensor], bias: Optional[torch.Tensor]):
    r"""The normalize step :math:`y = s\,x + (\beta - s\,\mu)`, :math:`s = \gamma / \sqrt{\sigma^2+\varepsilon}`.

    One pass over ``x``: reads it once, writes ``y`` once.

    Parameters
    ----------
    x : Tensor of shape (N, C, ...)
    mean, invstd : Tensors of shape (C,)
        :math:`\mu` and :math:`1/\sqrt{\sigma^2 + \varepsilon}`, in the compute dtype.
    weight, bias : Tensors of shape (C,) or None
        :math:`\gamma` (None: 1) and :math:`\beta` (None: 0), of any floating dtype.

    Returns
    -------
    y : Tensor
        Shape, dtype and memory format of ``x``.
    scale : Tensor of shape (C,)
        :math:`s`, in the compute dtype (the backward needs it).
    """
    scale = invstd if weight is None else invstd * weight
    # shift = beta - mu * gamma * invstd
    shift = (mean * scale).neg_() if bias is None else torch.addcmul(bias, mean, scale,
                                                                      value=-1)
    return _per_channel_affine(x, scale, shift), scale


def _per_channel_affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * x + b`` per channel, in ``x``'s dtype (computed in the dtype of ``a``)."""
    a_b, b_b = per_channel(a, x), per_channel(b, x)
    if _compiling():
        return torch.addcmul(b_b, x, a_b).to(x.dtype)
    out = new_output(x)                                 # rounded once, from a's dtype
    blocks = row_blocks(x)
    if len(blocks) == 1 or _channels_innermost(x):
        return torch.addcmul(b_b, x, a_b, out=out)
    for s in blocks:
        if x.dtype == a.dtype:
            # NCHW: a multiply and an in-place add (finding y in cache), which torch
            # vectorizes better than one addcmul with two broadcast operands
            torch.mul(x[s], a_b, out=out[s]).add_(b_b)
        else:
            out[s] = torch.addcmul(b_b, x[s], a_b)
    return out


def exponential_average_factor(momentum: Optional[float], num_batches_tracked):
    r"""The weight of the new batch in the running average.

    ``momentum`` itself, or, for ``momentum=None`` (the cumulative average),
    :math:`1/k` with :math:`k` the ``num_batches_tracked`` *after* counting this
    batch, so that after :math:`k` batches the running statistics are the plain
    mean of the :math:`k` batch statistics. As in torch, an empty batch counts
    too (it moves the counter but not the statistics). Under
    :func:`torch.compile` the factor is a 0-d float64 tensor, so that reading
    the counter does not break the graph (``float`` of a tensor would).
    """
    if momentum is not None:
        return float(momentum)
    if _compiling():        # a tensor: no graph break on reading the counter
        return torch.reciprocal(num_batches_tracked.to(torch.float64))
    return 1.0 / float(num_batches_tracked)


def update_running_stats(running_mean: Optional[torch.Tensor],
                         running_var: Optional[torch.Tensor], mean: torch.Tensor,
                         var: torch.Tensor, m: int, factor) -> None:
    r"""The running-average update, in place: :math:`r \leftarrow r + f\,(b - r)`.

    ``running_mean`` moves towards the batch mean, ``running_var`` towards the
    *unbiased* batch variance :math:`\frac{m}{m-1}\sigma^2` (:math:`m > 1`). The
    arithmetic runs in the compute dtype of the statistics; the running
    statistics keep their own dtype. Either may be None (not updated). ``factor``
    is a float or a 0-d tensor (:func:`exponential_average_factor`).
    """
    if running_var is not None:
        var = var * (m / (m - 1))
    for running, batch in ((running_mean, mean), (running_var, var)):
        if running is None:
            continue
        if isinstance(factor, torch.Tensor):
            factor = factor.to(batch.dtype)
        if running.dtype == batch.dtype:
            running.lerp_(batch, factor)
        else:
            running.copy_(running.to(batch.dtype).lerp_(batch, factor))


def gradient_sums(g: torch.Tensor, x: torch.Tensor, mean: Optional[torch.Tensor],
                  invstd: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel :math:`\sum g` and :math:`\sum g\,\hat x`, over cache-sized blocks.

    :math:`\sum g\,\hat x = \frac{1}{\sqrt{\sigma^2+\varepsilon}} \sum g\,(x - \mu)`.
    With ``mean=None``, ``x`` is :math:`\hat x` itself (the small path) and
    ``invstd`` is unused. Returns two (C,) tensors in the compute dtype: the
    gradients of :math:`\beta` and :math:`\gamma`.
    """
    dims = reduce_dims(x)
    acc = compute_dtype(g.dtype)
    if mean is None:                                    # x is xhat
        return g.sum(dims, dtype=acc), (g * x).sum(dims, dtype=acc)
    mean_b = per_channel(mean, x)
    blocks = row_blocks(x)
    if len(blocks) == 1:
        return g.sum(dims, dtype=acc), (x - mean_b).mul_(g).sum(dims).mul_(invstd)
    partials = torch.empty((2, len(blocks), x.shape[1]), dtype=acc, device=x.device)
    work = torch.empty_like(x[blocks[0]], dtype=acc)
    for s, out_g, out_g_xc in zip(blocks, partials[0], partials[1]):
        gs, xs = g[s], x[s]
        torch.sum(gs, dims, dtype=acc, out=out_g)
        d = torch.sub(xs, mean_b, out=work[:xs.shape[0]])
        torch.sum(d.mul_(gs), dims, out=out_g_xc)
    sum_g, sum_g_xc = partials.sum(1, dtype=_block_accumulator(x)).unbind(0)
    return sum_g.to(acc), (sum_g_xc * invstd).to(acc)


def input_gradient(g: torch.Tensor, x: torch.Tensor, mean: Optional[torch.Tensor],
                   invstd: torch.Tensor, scale: torch.Tensor, sum_g: torch.Tensor,
                   sum_g_xhat: torch.Tensor, m: int) -> torch.Tensor:
    r""":math:`\partial L/\partial x` in training mode: :math:`s\,g + c_x\,x + c_0` per channel.

    The batch statistics depend on :math:`x`, so the gradient loses its
    components along a per-channel shift (:math:`\sum g`) and scale
    (:math:`\sum g\,\hat x`) of :math:`x`. ``sum_g`` and ``sum_g_xhat`` are the
    sums over the whole batch of :math:`m` values per channel (for
    :class:`~bnkit.torch.sync.SyncBatchNorm`, over every rank). Block by block, so
    that ``g`` and ``x`` are read from memory once and the result written once.

    With ``mean=None``, ``x`` is :math:`\hat x` (the small path):
    :math:`\partial L/\partial x = s\,\big(g - \frac{1}{m}\sum g - \frac{\hat x}{m}\sum g\,\hat x\big)`,
    three operations.

    Returns
    -------
    Tensor of the shape, dtype and memory format of ``g``.
    """
    if mean is None:                                    # x is xhat
        out = torch.addcmul(g, x, per_channel(sum_g_xhat, x), value=-1.0 / m)
        out.sub_(per_channel(sum_g, x), alpha=1.0 / m).mul_(per_channel(scale, x))
        return out if out.dtype == g.dtype else out.to(g.dtype)
    c_x = (scale * invstd).mul_(sum_g_xhat).div_(-m)          # -s invstd sum(g xhat) / m
    c_0 = (scale * sum_g).div_(-m).addcmul_(c_x, mean, value=-1)  # -s sum(g) / m - c_x mu
    a_b, b_b, c_b = per_channel(scale, x), per_channel(c_x, x), per_channel(c_0, x)
    blocks = row_blocks(x)
    if _compiling() or len(blocks) == 1 and x.device.type != "cpu":
        out = torch.addcmul(c_b, g, a_b).addcmul_(x, b_b)
        return out if out.dtype == g.dtype else out.to(g.dtype)
    out = new_output(x, dtype=g.dtype)
    same = g.dtype == scale.dtype
    innermost = _channels_innermost(x)
    for s in blocks:
        o = out[s] if same else torch.empty_like(out[s], dtype=scale.dtype)
        if innermost:
            torch.addcmul(c_b, g[s], a_b, out=o)
        else:                       # NCHW: torch vectorizes mul + add_ better than addcmul
            torch.mul(g[s], a_b, out=o).add_(c_b)
        o.addcmul_(x[s], b_b)
        if not same:                # rounded once, at the end
            out[s] = o
    return out


def scaled(g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`s\,g` per channel, in ``g``'s dtype: the input gradient in eval mode."""
    s_b = per_channel(scale, g)
    if g.dtype == scale.dtype or _compiling():
        return (g * s_b).to(g.dtype)
    return torch.mul(g, s_b, out=torch.empty_like(g))
