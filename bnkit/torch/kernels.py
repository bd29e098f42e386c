r"""The formulas of batch normalization in torch, written once.

Every layer -- :class:`~bnkit.torch.BatchNorm2d` and its siblings through
:func:`~bnkit.torch.batch_norm`, and :class:`~bnkit.torch.SyncBatchNorm` -- calls
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

Dtypes
------
*Computed in* :func:`compute_dtype`: float32 for float16 and bfloat16 inputs,
the input's own dtype for float32 and float64. The sums behind the statistics
and the gradient sums are accumulated in that dtype at least (on the CPU, the
partial sums of cache-sized blocks are added in float64), so a float16 input
whose sum of squares exceeds 65504 does not overflow. Per-channel results
(mean, variance, :math:`s`, the gradient sums) come out in the compute dtype;
tensors of the input's shape (output, input gradient) in the input's dtype,
rounded once from the compute dtype.

Speed (Chapter 9): on the CPU, batch norm is memory-bound, so the passes over a
large tensor run over blocks of rows small enough to stay in a core's cache
(``BLOCK_BYTES``): each block is read from memory once per pass and every further
operation on it hits the cache. Under :func:`torch.compile` and on GPUs each
pass is one whole-tensor expression instead, which the compiler fuses.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

__all__ = [
    "BLOCK_BYTES",
    "reduce_dims",
    "per_channel",
    "values_per_channel",
    "compute_dtype",
    "row_blocks",
    "batch_statistics",
    "normalize",
    "exponential_average_factor",
    "update_running_stats",
    "gradient_sums",
    "input_gradient",
    "scaled",
]

#: Bytes of input per block on the CPU: small enough to stay in a core's L2 cache.
BLOCK_BYTES = 1 << 19


def reduce_dims(x: torch.Tensor) -> Tuple[int, ...]:
    """Every dim but the channels (dim 1): ``(0, 2, 3, ...)``."""
    return (0,) + tuple(range(2, x.dim()))


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


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype the math runs in: float32 for float16/bfloat16, else ``dtype`` itself."""
    return torch.promote_types(dtype, torch.float32)


def _compiling() -> bool:
    return torch.compiler.is_compiling()


def row_blocks(x: torch.Tensor) -> List[slice]:
    """Slices of dim 0 of about :data:`BLOCK_BYTES` each on the CPU in eager mode; else one."""
    n = x.shape[0]
    if n == 0 or x.device.type != "cpu" or _compiling():
        return [slice(None)]
    step = max(1, BLOCK_BYTES * n // max(1, x.numel() * x.element_size()))
    if step >= n:
        return [slice(None)]
    return [slice(i, i + step) for i in range(0, n, step)]


def _block_accumulator(x: torch.Tensor) -> torch.dtype:
    # the blocks' partial sums are added in float64 on the CPU (float32 stays accurate)
    return torch.float64 if x.device.type == "cpu" else compute_dtype(x.dtype)


def batch_statistics(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
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

    Returns
    -------
    mean, var : Tensors of shape (C,), in :func:`compute_dtype`
    """
    dims = reduce_dims(x)
    acc = compute_dtype(x.dtype)
    blocks = row_blocks(x)
    if len(blocks) == 1:
        if _compiling():
            var, mean = torch.var_mean(x.to(acc), dims, correction=0)
            return mean, var
        mean = x.mean(dims) if x.dtype == acc else x.sum(dims, dtype=acc).div_(
            values_per_channel(x))
        var = (x - per_channel(mean, x)).square_().mean(dims)
        return mean, var
    m = values_per_channel(x)
    total = _block_accumulator(x)
    first = x[blocks[0]]
    shift = first.mean(dims) if x.dtype == acc else first.sum(dims, dtype=acc).div_(
        values_per_channel(first))
    shift_b = per_channel(shift, x)
    partials = torch.empty((2, len(blocks), x.shape[1]), dtype=acc, device=x.device)
    for s, out1, out2 in zip(blocks, partials[0], partials[1]):
        d = x[s] - shift_b
        torch.sum(d, dims, out=out1)
        torch.sum(d.square_(), dims, out=out2)
    s1, s2 = partials.sum(1, dtype=total).unbind(0)
    offset = s1 / m                                     # mu - s
    mean = shift.to(total) + offset
    var = (s2 / m - offset.square()).clamp_min_(0)
    return mean.to(acc), var.to(acc)


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
    return _affine(x, scale, shift), scale


def _affine(x: torch.Tensor, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a * x + b`` per channel, in ``x``'s dtype (computed in the dtype of ``a``)."""
    a_b, b_b = per_channel(a, x), per_channel(b, x)
    if x.dtype == a.dtype or _compiling():
        return torch.addcmul(b_b, x, a_b).to(x.dtype)
    out = torch.empty_like(x)                           # rounded once, from a's dtype
    return torch.addcmul(b_b, x, a_b, out=out)


def exponential_average_factor(momentum: Optional[float], num_batches_tracked) -> float:
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
    for running, batch in ((running_mean, mean), (running_var, var * (m / (m - 1)))):
        if running is None:
            continue
        if isinstance(factor, torch.Tensor):
            factor = factor.to(batch.dtype)
        if running.dtype == batch.dtype:
            running.lerp_(batch, factor)
        else:
            running.copy_(running.to(batch.dtype).lerp_(batch, factor))


def gradient_sums(g: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                  invstd: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel :math:`\sum g` and :math:`\sum g\,\hat x`, over cache-sized blocks.

    :math:`\sum g\,\hat x = \frac{1}{\sqrt{\sigma^2+\varepsilon}} \sum g\,(x - \mu)`.
    ``mean`` and ``invstd`` are (C,) tensors; returns two (C,) tensors in the
    compute dtype. They are the gradients of :math:`\beta` and :math:`\gamma`.
    """
    dims = reduce_dims(x)
    acc = compute_dtype(x.dtype)
    mean_b = per_channel(mean, x)
    blocks = row_blocks(x)
    if len(blocks) == 1:
        return g.sum(dims, dtype=acc), (x - mean_b).mul_(g).sum(dims).mul_(invstd)
    partials = torch.empty((2, len(blocks), x.shape[1]), dtype=acc, device=x.device)
    for s, out_g, out_g_xc in zip(blocks, partials[0], partials[1]):
        torch.sum(g[s], dims, dtype=acc, out=out_g)
        torch.sum((x[s] - mean_b).mul_(g[s]), dims, out=out_g_xc)
    sum_g, sum_g_xc = partials.sum(1, dtype=_block_accumulator(x)).unbind(0)
    return sum_g.to(acc), (sum_g_xc * invstd).to(acc)


def input_gradient(g: torch.Tensor, x: torch.Tensor, mean: torch.Tensor,
                   invstd: torch.Tensor, scale: torch.Tensor, sum_g: torch.Tensor,
                   sum_g_xhat: torch.Tensor, m: int) -> torch.Tensor:
    r""":math:`\partial L/\partial x` in training mode: :math:`s\,g + c_x\,x + c_0` per channel.

    The batch statistics depend on :math:`x`, so the gradient loses its
    components along a per-channel shift (:math:`\sum g`) and scale
    (:math:`\sum g\,\hat x`) of :math:`x`. ``sum_g`` and ``sum_g_xhat`` are the
    sums over the whole batch of :math:`m` values per channel (for
    :class:`~bnkit.torch.SyncBatchNorm`, over every rank). Two element-wise
    operations per block: the second finds the first's result in cache, so ``g``
    and ``x`` are read from memory once and the result written once.

    Returns
    -------
    Tensor of the shape, dtype and memory format of ``x``.
    """
    c_x = (scale * invstd).mul_(sum_g_xhat).div_(-m)          # -s invstd sum(g xhat) / m
    c_0 = (scale * sum_g).div_(-m).addcmul_(c_x, mean, value=-1)  # -s sum(g) / m - c_x mu
    a_b, b_b, c_b = per_channel(scale, x), per_channel(c_x, x), per_channel(c_0, x)
    blocks = row_blocks(x)
    same = g.dtype == scale.dtype
    if len(blocks) == 1:
        out = torch.addcmul(c_b, g, a_b).addcmul_(x, b_b)
        return out if same else out.to(g.dtype)
    out = torch.empty_like(x, dtype=g.dtype)
    for s in blocks:
        if same:
            torch.addcmul(c_b, g[s], a_b, out=out[s]).addcmul_(x[s], b_b)
        else:                                               # rounded once, at the end
            out[s] = torch.addcmul(c_b, g[s], a_b).addcmul_(x[s], b_b)
    return out


def scaled(g: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    r""":math:`s\,g` per channel, in ``g``'s dtype: the input gradient in eval mode."""
    s_b = per_channel(scale, g)
    if g.dtype == scale.dtype or _compiling():
        return (g * s_b).to(g.dtype)
    return torch.mul(g, s_b, out=torch.empty_like(g))
