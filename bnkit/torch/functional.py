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
"""

from __future__ import annotations

from typing import Optional, Tuple

import torch

from .. import _checks

__all__ = ["batch_norm", "BatchNormFunction", "check_input"]

# Bytes of input per block on CPU: small enough to stay in a core's L2 cache.
_BLOCK_BYTES = 1 << 19


def _reduce_dims(x: torch.Tensor) -> Tuple[int, ...]:
    return (0,) + tuple(range(2, x.dim()))


def _broadcast(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A (C,) vector viewed as (1, C, 1, ..., 1) to broadcast against ``x``."""
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
        if training:
            mean, var = _batch_statistics(input)
            m = input.numel() // input.shape[1]
            if running_mean is not None:
                running_mean.copy_(momentum * mean + (1 - momentum) * running_mean)
            if running_var is not None:
                running_var.copy_(momentum * var * (m / (m - 1)) + (1 - momentum) * running_var)
        else:
            mean, var = running_mean.to(input.dtype), running_var.to(input.dtype)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        # y = x * (gamma * invstd) + (beta - mu * gamma * invstd): one pass over x
        y = torch.addcmul(_broadcast(shift, input), input, _broadcast(scale, input))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.training = training
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        input, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        k = invstd if weight is None else invstd * weight          # gamma / sqrt(var + eps)
        sum_g, sum_g_xhat = _gradient_sums(grad_y, input, mean, invstd)
        grad_x = None
        if need_x:
            if ctx.training:
                # mean and var depend on x: remove the gradient's components along
                # a per-channel shift (sum_g) and scale (sum_g_xhat) of x
                m = input.numel() // input.shape[1]
                c_g = _broadcast(k, input)
                c_x = _broadcast(-k * invstd * sum_g_xhat / m, input)
                c_0 = _broadcast(-k * sum_g / m + k * invstd * mean * sum_g_xhat / m, input)
                grad_x = torch.addcmul(c_0, grad_y, c_g).addcmul_(input, c_x)
            else:
                grad_x = grad_y * _broadcast(k, input)              # statistics are constants
        grad_w = sum_g_xhat if need_w else None
        grad_b = sum_g if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


def _row_blocks(x: torch.Tensor):
    """Slices of dim 0 of about ``_BLOCK_BYTES`` each on CPU (cache-sized), one on GPUs."""
    if x.device.type != "cpu" or x.shape[0] == 0:
        return [slice(None)]
    step = max(1, _BLOCK_BYTES // max(1, x[0].numel() * x.element_size()))
    return [slice(i, i + step) for i in range(0, x.shape[0], step)]


def _accumulator(x: torch.Tensor) -> torch.dtype:
    # float64 partial sums on CPU keep float32 accurate; GPUs stay in float32
    return torch.float64 if x.device.type == "cpu" else torch.promote_types(x.dtype, torch.float32)


def _batch_statistics(x: torch.Tensor):
    """Per-channel mean and biased variance, two passes over cache-sized blocks."""
    dims = _reduce_dims(x)
    m = x.numel() // x.shape[1]
    acc = _accumulator(x)
    blocks = _row_blocks(x)
    total = sum(x[s].sum(dims).to(acc) for s in blocks)
    mean = (total / m).to(x.dtype)
    mean_b = _broadcast(mean, x)
    squares = sum((x[s] - mean_b).square_().sum(dims).to(acc) for s in blocks)
    return mean, (squares / m).to(x.dtype)


def _gradient_sums(g: torch.Tensor, x: torch.Tensor, mean: torch.Tensor, invstd: torch.Tensor):
    """Per-channel sums of g and of g * xhat, over cache-sized blocks."""
    dims = _reduce_dims(x)
    acc = _accumulator(x)
    mean_b, invstd_b = _broadcast(mean, x), _broadcast(invstd, x)
    sum_g = torch.zeros(x.shape[1], dtype=acc, device=x.device)
    sum_g_xhat = torch.zeros_like(sum_g)
    for s in _row_blocks(x):
        xhat = (x[s] - mean_b).mul_(invstd_b)
        sum_g += g[s].sum(dims).to(acc)
        sum_g_xhat += xhat.mul_(g[s]).sum(dims).to(acc)
    return sum_g.to(x.dtype), sum_g_xhat.to(x.dtype)


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
