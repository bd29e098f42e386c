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
        dims = _reduce_dims(input)
        if training:
            var, mean = torch.var_mean(input, dim=dims, correction=0)
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
        dims = _reduce_dims(input)
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        k = invstd if weight is None else invstd * weight          # gamma / sqrt(var + eps)
        xhat = (input - _broadcast(mean, input)) * _broadcast(invstd, input)
        sum_g = grad_y.sum(dims)
        sum_g_xhat = (grad_y * xhat).sum(dims)
        grad_x = None
        if need_x:
            if ctx.training:
                # mean and var depend on x: subtract the gradient's projections
                m = input.numel() // input.shape[1]
                grad_x = torch.addcmul(_broadcast(-k * sum_g / m, input), grad_y,
                                       _broadcast(k, input))
                grad_x.addcmul_(xhat, _broadcast(-k * sum_g_xhat / m, input))
            else:
                grad_x = grad_y * _broadcast(k, input)              # statistics are constants
        grad_w = sum_g_xhat if need_w else None
        grad_b = sum_g if need_b else None
        return grad_x, grad_w, grad_b, None, None, None, None, None


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
    input : Tensor of shape (N, C, *)
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
