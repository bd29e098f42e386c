r"""Batch normalization in torch, written out: forward and closed-form backward.

Never calls torch's own batch-norm kernels; only reductions and element-wise
ops, so it runs unchanged on any device (CPU, CUDA) and memory format
(``torch.channels_last``). For every channel :math:`c`, over its :math:`m`
values in the batch:

.. math::

    \hat x = \frac{x - \mu_c}{\sqrt{\sigma^2_c + \varepsilon}}, \qquad
    y = \gamma_c \hat x + \beta_c,

and the backward pass (training mode, :math:`g = \partial L/\partial y`):

.. math::

    \frac{\partial L}{\partial \beta_c} = \sum g, \qquad
    \frac{\partial L}{\partial \gamma_c} = \sum g \hat x, \qquad
    \frac{\partial L}{\partial x} = \frac{\gamma_c}{\sqrt{\sigma^2_c + \varepsilon}}
        \Big(g - \frac{1}{m}\sum g - \frac{\hat x}{m} \sum g \hat x\Big).

Speed (Chapter 9 of the book): batch norm is memory-bound, so on the CPU the
work runs over blocks of rows small enough to stay in a core's cache
(``_BLOCK_BYTES``): each block is read from memory once per pass and every
further operation on it hits the cache. The training forward reads ``x`` twice
(once for the statistics, once to normalize) and writes ``y`` once; the backward
reads ``x`` and ``g`` twice and writes ``dx`` once. A tensor that fits in one
block takes a short path with as few small operations as possible, since there
the cost is per call, not per byte.
"""

from __future__ import annotations

import math
from typing import List, Optional, Tuple

import torch

from .. import _checks

__all__ = ["batch_norm", "BatchNormFunction", "check_input"]

# Bytes of input per block on CPU: small enough to stay in a core's L2 cache.
_BLOCK_BYTES = 1 << 19


def _reduce_dims(x: torch.Tensor) -> Tuple[int, ...]:
    """Every dim but the channels (dim 1): ``(0, 2, 3, ...)``."""
    return (0,) + tuple(range(2, x.dim()))


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) vector viewed as (1, C, 1, ..., 1) to broadcast against ``x``.

    For an (N, C) input the (C,) vector broadcasts as it is (no view needed).
    """
    if x.dim() == 2:
        return v
    return v.view((1, -1) + (1,) * (x.dim() - 2))


def check_input(input: torch.Tensor, running_mean=None, running_var=None, weight=None,
                bias=None, training: bool = False, momentum: float = 0.1,
                eps: float = 1e-5) -> None:
    """Every argument check of :func:`batch_norm`, with no side effect.

    Raises ``TypeError`` for a non-floating input and ``ValueError`` for rank
    < 2, per-channel tensors of the wrong length, one value per channel in
    training, ``eps <= 0`` and ``momentum`` outside [0, 1].
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor (got {type(input).__name__})")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor (got dtype {input.dtype})")
    _checks.check_input_rank(input.dim())
    _checks.check_eps(eps)
    _checks.check_momentum(momentum)
    c = input.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        _checks.check_channel_vector(name, None if v is None else tuple(v.shape), c)
    if training:
        _checks.check_training_batch(tuple(input.shape), 1)
    elif running_mean is None or running_var is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var; "
                         "pass training=True to normalize with batch statistics")


class BatchNormFunction(torch.autograd.Function):
    """The autograd node: forward normalizes, backward applies the closed form.

    Called through :func:`batch_norm` (which checks the arguments first).
    Inputs: ``(input, weight, bias, running_mean, running_var, training,
    momentum, eps)``; ``weight``/``bias`` may be ``None``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps):
        ctx.training = training
        if training and _values_per_channel(input) == 0:
            # An empty batch (as torch): nothing to normalize, no statistics to
            # learn from; the running statistics stay as they are.
            ctx.empty = True
            ctx.save_for_backward(weight, bias)
            return torch.empty_like(input)
        ctx.empty = False
        if training:
            mean, var = _batch_statistics(input)
            m = _values_per_channel(input)
            if running_mean is not None:     # running += momentum * (batch - running)
                running_mean.lerp_(_as_dtype(mean, running_mean), momentum)
            if running_var is not None:      # the unbiased variance is stored
                running_var.lerp_(_as_dtype(var * (m / (m - 1)), running_var), momentum)
        else:
            mean, var = running_mean.to(input.dtype), running_var.to(input.dtype)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        # shift = beta - mu * gamma * invstd
        shift = (mean * scale).neg_() if bias is None else torch.addcmul(bias, mean, scale,
                                                                          value=-1)
        # y = x * (gamma * invstd) + (beta - mu * gamma * invstd): one pass over x
        y = torch.addcmul(_broadcast(shift, input), input, _broadcast(scale, input))
        ctx.save_for_backward(input, mean, invstd, scale)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        if ctx.empty:               # as torch: an empty input gradient, zero sums
            weight, bias = ctx.saved_tensors
            return (torch.empty_like(grad_y) if need_x else None,
                    torch.zeros_like(weight) if need_w else None,
                    torch.zeros_like(bias) if need_b else None,
                    None, None, None, None, None)
        input, mean, invstd, k = ctx.saved_tensors                 # k = gamma / sqrt(var + eps)
        grad_x = sum_g = sum_g_xhat = None
        if ctx.training or need_w or need_b:
            sum_g, sum_g_xhat = _gradient_sums(grad_y, input, mean, invstd)
        if need_x:
            if ctx.training:
                # mean and var depend on x: remove the gradient's components along
                # a per-channel shift (sum_g) and scale (sum_g_xhat) of x, i.e.
                # grad_x = k * g + c_x * x + c_0 with
                m = _values_per_channel(input)
                c_x = (k * invstd).mul_(sum_g_xhat).div_(-m)       # -k * invstd * sum(g xhat) / m
                c_0 = (k * sum_g).div_(-m).addcmul_(c_x, mean, value=-1)  # -k sum(g)/m - c_x mu
                grad_x = _affine2(grad_y, k, input, c_x, c_0)
            else:
                grad_x = grad_y * _broadcast(k, input)              # statistics are constants
        return (grad_x, sum_g_xhat if need_w else None, sum_g if need_b else None,
                None, None, None, None, None)


def _values_per_channel(x: torch.Tensor) -> int:
    """:math:`m`, the values of each channel: the product of every dim but dim 1."""
    return math.prod(x.shape) // x.shape[1] if x.shape[1] else math.prod(
        x.shape[:1] + x.shape[2:])


def _as_dtype(v: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """``v`` converted to the dtype of ``like`` (itself when they already agree)."""
    return v if v.dtype == like.dtype else v.to(like.dtype)


def _row_blocks(x: torch.Tensor) -> List[slice]:
    """Slices of dim 0 of about ``_BLOCK_BYTES`` each on CPU (cache-sized), one on GPUs."""
    n = x.shape[0]
    if x.device.type != "cpu" or n == 0:
        return [slice(None)]
    step = max(1, _BLOCK_BYTES * n // max(1, x.numel() * x.element_size()))
    if step >= n:
        return [slice(None)]
    return [slice(i, i + step) for i in range(0, n, step)]


def _accumulator(x: torch.Tensor) -> torch.dtype:
    # float64 partial sums on CPU keep float32 accurate; GPUs stay in float32
    return torch.float64 if x.device.type == "cpu" else torch.promote_types(x.dtype, torch.float32)


def _batch_statistics(x: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor]:
    r"""Per-channel mean and biased variance of ``x``, as (C,) tensors of its dtype.

    A tensor that fits in one block: the two-pass formula, both passes in cache.
    A larger one is read from memory once: with a shift :math:`s` (the mean of
    the first block, close to :math:`\mu`), every block computes its
    :math:`S_1 = \sum (x - s)` and :math:`S_2 = \sum (x - s)^2` while it is in
    cache; the blocks' sums are added in float64, and

    .. math:: \mu = s + \frac{S_1}{m}, \qquad \sigma^2 = \frac{S_2}{m} - \Big(\frac{S_1}{m}\Big)^2 .

    As :math:`s` is close to :math:`\mu`, the last term is small and the
    subtraction loses no digits, even when the mean dwarfs the spread.
    """
    dims = _reduce_dims(x)
    blocks = _row_blocks(x)
    if len(blocks) == 1:
        mean = x.mean(dims)
        var = (x - _broadcast(mean, x)).square_().mean(dims)
        return mean, var
    acc = _accumulator(x)
    m = x.numel() // x.shape[1]
    shift = x[blocks[0]].mean(dims)
    shift_b = _broadcast(shift, x)
    sums1, sums2 = _block_partials(x, len(blocks))
    for s, out1, out2 in zip(blocks, sums1, sums2):
        d = x[s] - shift_b
        torch.sum(d, dims, out=out1)
        torch.sum(d.square_(), dims, out=out2)
    s1, s2 = sums1.sum(0, dtype=acc), sums2.sum(0, dtype=acc)
    offset = s1 / m                                     # mu - s
    mean = shift.to(acc) + offset
    var = (s2 / m - offset.square()).clamp_min_(0)
    return mean.to(x.dtype), var.to(x.dtype)


def _gradient_sums(g: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor):
    """Per-channel sums of g and of g * xhat, over cache-sized blocks.

    ``mean`` and ``invstd`` are (C,) tensors; returns two (C,) tensors of ``x``'s dtype.
    """
    dims = _reduce_dims(x)
    mean_b = _broadcast(mean, x)
    blocks = _row_blocks(x)
    if len(blocks) == 1:
        # sum g * xhat = invstd * sum g * (x - mu)
        return g.sum(dims), (x - mean_b).mul_(g).sum(dims).mul_(invstd)
    acc = _accumulator(x)
    sums_g, sums_g_xc = _block_partials(x, len(blocks))
    for s, out_g, out_g_xc in zip(blocks, sums_g, sums_g_xc):
        torch.sum(g[s], dims, out=out_g)
        torch.sum((x[s] - mean_b).mul_(g[s]), dims, out=out_g_xc)
    sum_g, sum_g_xc = sums_g.sum(0, dtype=acc), sums_g_xc.sum(0, dtype=acc)
    return sum_g.to(x.dtype), (sum_g_xc * invstd).to(x.dtype)


def _block_partials(x: torch.Tensor, num_blocks: int):
    """Two (num_blocks, C) tensors of ``x``'s dtype for per-block sums, one row per block.

    Each block's sums are written into its row (``out=``), in the input's dtype;
    the rows are then added in float64 (``_accumulator``), in one operation.
    """
    rows = torch.empty((2, num_blocks, x.shape[1]), dtype=x.dtype, device=x.device)
    return rows[0], rows[1]


def _affine2(g: torch.Tensor, a: torch.Tensor, x: torch.Tensor, b: torch.Tensor,
             c: torch.Tensor) -> torch.Tensor:
    """``a * g + b * x + c`` per channel (a, b, c of shape (C,)), block by block.

    Two element-wise operations per block: the second finds the first's result
    in cache, so ``g`` and ``x`` are read from memory once and the result written once.
    """
    a_b, b_b, c_b = _broadcast(a, x), _broadcast(b, x), _broadcast(c, x)
    blocks = _row_blocks(x)
    if len(blocks) == 1:
        return torch.addcmul(c_b, g, a_b).addcmul_(x, b_b)
    out = torch.empty_like(x)
    for s in blocks:
        torch.addcmul(c_b, g[s], a_b, out=out[s]).addcmul_(x[s], b_b)
    return out


def batch_norm(input: torch.Tensor, running_mean: Optional[torch.Tensor],
               running_var: Optional[torch.Tensor], weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, training: bool = False,
               momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r"""Batch normalization with the signature and semantics of :func:`torch.nn.functional.batch_norm`.

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta

    Training mode normalizes with the batch mean and *biased* variance of each
    channel and, when running statistics are given, updates them in place
    (``running = (1 - momentum) * running + momentum * batch``, storing the
    *unbiased* variance) -- also under :func:`torch.no_grad`. Eval mode
    normalizes with the running statistics.

    An empty batch (no value per channel: :math:`N = 0`, or a spatial size 0)
    gives an empty output, as in torch; in training mode the running
    statistics are left unchanged and the gradients of ``weight`` and ``bias``
    are zeros. Exactly one value per channel in training is refused.

    Parameters
    ----------
    input : Tensor of shape (N, C, ...)
        Floating point, any device and memory format.
    running_mean, running_var : Tensor of shape (C,) or None
    weight, bias : Tensor of shape (C,), optional
        :math:`\gamma`, :math:`\beta`.
    training : bool, default False
    momentum : float in [0, 1], default 0.1
    eps : float > 0, default 1e-5

    Returns
    -------
    Tensor, same shape, dtype and device as ``input``.

    Raises
    ------
    TypeError, ValueError
        See :func:`check_input`. Nothing is updated when they are raised.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> x = torch.tensor([[1.0, 10.0], [3.0, 30.0]])
    >>> bnt.batch_norm(x, None, None, training=True, eps=1e-12)
    tensor([[-1., -1.],
            [ 1.,  1.]])
    """
    check_input(input, running_mean, running_var, weight, bias, training, momentum, eps)
    return BatchNormFunction.apply(input, weight, bias, running_mean, running_var,
                                   bool(training), float(momentum), float(eps))
