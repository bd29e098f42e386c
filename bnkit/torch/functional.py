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

The formulas themselves live in :mod:`bnkit.torch.kernels` (shared with
:class:`~bnkit.torch.sync.SyncBatchNorm`); this module is the autograd node and
the argument checks.

Dtypes (as torch's CPU kernel): the statistics are accumulated in at least
float32 (:func:`~bnkit.torch.kernels.compute_dtype`), the output and the input
gradient have the input's dtype, the gradients of ``weight`` and ``bias`` their
own dtypes, and the running statistics keep theirs. So a float16 or bfloat16
input through a float32 layer (``torch.autocast``, AMP) gives a float16 or
bfloat16 output, like ``torch.nn.BatchNorm2d``.
"""

from __future__ import annotations

from typing import Optional

import torch

from .. import validation
from .kernels import (
    affine,
    batch_statistics,
    compute_dtype,
    gradient_sums,
    input_gradient,
    normalize,
    saves_xhat,
    scaled,
    standardize,
    update_running_stats,
    values_per_channel,
)

__all__ = ["batch_norm", "BatchNormFunction", "check_input"]


def check_input(input: torch.Tensor, running_mean=None, running_var=None, weight=None,
                bias=None, training: bool = False, momentum: float = 0.1,
                eps: float = 1e-5) -> None:
    """Every argument check of :func:`batch_norm`, with no side effect.

    Raises ``TypeError`` for a non-floating input and ``ValueError`` for rank
    < 2, per-channel tensors of the wrong length, exactly one value per channel
    in training, ``eps <= 0`` and ``momentum`` outside [0, 1].
    """
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor (got {type(input).__name__})")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor (got dtype {input.dtype})")
    validation.check_input_rank(input.dim())
    validation.check_eps(eps)
    validation.check_momentum(momentum)
    c = input.shape[1]
    for name, v in (("running_mean", running_mean), ("running_var", running_var),
                    ("weight", weight), ("bias", bias)):
        validation.check_channel_vector(name, None if v is None else tuple(v.shape), c)
    if training:
        if values_per_channel(input) == 1:
            validation.check_training_batch(tuple(input.shape), 1)    # raises
    elif running_mean is None or running_var is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var; "
                         "pass training=True to normalize with batch statistics")


class BatchNormFunction(torch.autograd.Function):
    r"""The autograd node: forward normalizes, backward applies the closed form.

    Called through :func:`batch_norm` (which checks the arguments first) and
    the modules (which check their own). Inputs: ``(input, weight, bias,
    running_mean, running_var, training, momentum, eps)``; ``weight``/``bias``
    may be ``None``; ``momentum`` is the weight of the batch in the running
    average (a float, or a 0-d tensor under :func:`torch.compile`).

    In training mode a small input keeps :math:`\hat x` for the backward pass,
    a large one keeps the input (:func:`~bnkit.torch.kernels.saves_xhat`).
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, training, momentum, eps):
        ctx.training = training
        ctx.param_dtypes = (None if weight is None else weight.dtype,
                            None if bias is None else bias.dtype)
        if not training:
            acc = compute_dtype(input.dtype)
            mean, var = running_mean.to(acc), running_var.to(acc)
            invstd = torch.rsqrt(var + eps)
            y, scale = normalize(input, mean, invstd, weight, bias)
            ctx.save_for_backward(input, mean, invstd, scale)
            return y
        m = values_per_channel(input)
        ctx.m = m
        if m == 0:
            # An empty batch (as torch): nothing to normalize, nothing to learn
            # from; the running statistics stay as they are.
            return torch.empty_like(input)
        if saves_xhat(input):
            mean, var, centered = batch_statistics(input, keep_centered=True)
            update_running_stats(running_mean, running_var, mean, var, m, momentum)
            invstd = (var + eps).rsqrt_()
            xhat = standardize(input, mean, invstd, centered)
            scale = invstd if weight is None else invstd * weight
            ctx.save_for_backward(xhat, None, invstd, scale)
            return affine(xhat, weight, bias, input.dtype)
        mean, var = batch_statistics(input)
        update_running_stats(running_mean, running_var, mean, var, m, momentum)
        invstd = torch.rsqrt(var + eps)
        y, scale = normalize(input, mean, invstd, weight, bias)
        ctx.save_for_backward(input, mean, invstd, scale)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        w_dtype, b_dtype = ctx.param_dtypes
        if ctx.training and ctx.m == 0:     # as torch: an empty input gradient, zero sums
            c = grad_y.shape[1]
            return (torch.empty_like(grad_y) if need_x else None,
                    grad_y.new_zeros(c, dtype=w_dtype) if need_w else None,
                    grad_y.new_zeros(c, dtype=b_dtype) if need_b else None,
                    None, None, None, None, None)
        # x: the input, or xhat when mean is None; scale = gamma / sqrt(var + eps)
        x, mean, invstd, scale = ctx.saved_tensors
        grad_x = sum_g = sum_g_xhat = None
        if ctx.training or need_w or need_b:
            sum_g, sum_g_xhat = gradient_sums(grad_y, x, mean, invstd)
        if need_x:
            grad_x = (input_gradient(grad_y, x, mean, invstd, scale, sum_g, sum_g_xhat, ctx.m)
                      if ctx.training else scaled(grad_y, scale))
        return (grad_x, _as(sum_g_xhat, w_dtype) if need_w else None,
                _as(sum_g, b_dtype) if need_b else None, None, None, None, None, None)


def _as(t: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    return t if t.dtype == dtype else t.to(dtype)


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
    Tensor, same shape, dtype, device and memory format as ``input``.
        The statistics and per-channel factors are computed in float32 for a
        float16 or bfloat16 input (in the input's dtype for float32 and
        float64), and the output rounded once to the input's dtype; see
        :mod:`bnkit.torch.kernels`.

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
