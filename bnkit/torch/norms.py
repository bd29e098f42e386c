r"""Layer norm and group norm in torch, with their own autograd and closed-form backward.

:func:`bnkit.torch.layer_norm` and :func:`bnkit.torch.group_norm` mirror
:func:`torch.nn.functional.layer_norm` and :func:`torch.nn.functional.group_norm`;
:class:`bnkit.torch.LayerNorm` and :class:`bnkit.torch.GroupNorm` mirror
``torch.nn.LayerNorm`` and ``torch.nn.GroupNorm``
(same parameters under the same names, so state dicts load both ways). torch's
own normalization kernels are never called: only reductions and element-wise
ops, so the code runs on any device.

Both normalize the rows of a two-dimensional view of the input, each row with
its own mean :math:`\mu` and biased variance :math:`\sigma^2` over its
:math:`M` values -- one example's ``normalized_shape`` for layer norm, one
example's group of :math:`C/G` channels for group norm -- then apply
:math:`\gamma, \beta`. With :math:`\hat g = g\gamma` (:math:`g = \partial L/\partial y`)
the backward pass is, per row,

.. math::

    \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2 + \varepsilon}}
    \Big(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g \hat x}\Big),

bars denoting means over the row; see :mod:`bnkit.numpy.norms` for the
NumPy twin and the details.
"""

from __future__ import annotations

import math
from typing import Optional, Tuple

import torch
from torch import nn

from .. import validation

__all__ = [
    "layer_norm",
    "group_norm",
    "LayerNormFunction",
    "GroupNormFunction",
    "LayerNorm",
    "GroupNorm",
]


def _check_tensor(input) -> None:
    if not isinstance(input, torch.Tensor):
        raise TypeError(f"input must be a torch.Tensor (got {type(input).__name__})")
    if not input.is_floating_point():
        raise TypeError(f"input must be a floating-point tensor (got dtype {input.dtype})")


def _shape(v) -> Optional[Tuple[int, ...]]:
    return None if v is None else tuple(v.shape)


def _compute_dtype(x: torch.Tensor) -> torch.dtype:
    # half precision inputs are computed in float32; float32 and float64 in their own dtype
    return torch.promote_types(x.dtype, torch.float32)


def _row_statistics(x2: torch.Tensor, eps: float) -> Tuple[torch.Tensor, torch.Tensor]:
    """Mean and ``1/sqrt(var + eps)`` of every row of ``x2`` (shape (R, M)), shape (R, 1); two passes."""
    mean = x2.mean(dim=1, keepdim=True)
    var = (x2 - mean).square_().mean(dim=1, keepdim=True)
    return mean, torch.rsqrt(var + eps)


def _row_input_gradient(g_hat2: torch.Tensor, xhat2: torch.Tensor,
                        invstd: torch.Tensor) -> torch.Tensor:
    """Per row: ``invstd * (g_hat - mean(g_hat) - xhat * mean(g_hat * xhat))``."""
    mean_g = g_hat2.mean(dim=1, keepdim=True)
    mean_gx = (g_hat2 * xhat2).mean(dim=1, keepdim=True)
    return (g_hat2 - mean_g).sub_(xhat2 * mean_gx).mul_(invstd)


# ----------------------------------------------------------------------------- layer norm
class LayerNormFunction(torch.autograd.Function):
    """The autograd node of :func:`layer_norm`: forward normalizes rows, backward is closed form.

    Inputs: ``(input, weight, bias, normalized_ndim, eps)``; ``weight`` and
    ``bias`` (shape ``normalized_shape``) may be ``None``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, normalized_ndim, eps):
        m = math.prod(input.shape[input.dim() - normalized_ndim:])
        x2 = input.reshape(-1, m).to(_compute_dtype(input))
        mean, invstd = _row_statistics(x2, eps)
        y2 = (x2 - mean).mul_(invstd)
        if weight is not None:
            y2.mul_(weight.reshape(1, m))
        if bias is not None:
            y2.add_(bias.reshape(1, m))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.m = m
        ctx.normalized_shape = input.shape[input.dim() - normalized_ndim:]
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y2.reshape(input.shape).to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        input, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        m = ctx.m
        dtype = mean.dtype
        xhat2 = (input.reshape(-1, m).to(dtype) - mean).mul_(invstd)
        g2 = grad_y.reshape(-1, m).to(dtype)
        grad_x = grad_w = grad_b = None
        if need_x:
            g_hat2 = g2 if weight is None else g2 * weight.reshape(1, m)
            grad_x = _row_input_gradient(g_hat2, xhat2, invstd).reshape(input.shape).to(input.dtype)
        if need_w:
            grad_w = (g2 * xhat2).sum(0).reshape(ctx.normalized_shape).to(weight.dtype)
        if need_b:
            grad_b = g2.sum(0).reshape(ctx.normalized_shape).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None


def layer_norm(input: torch.Tensor, normalized_shape, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    r"""Layer normalization with the signature and semantics of :func:`torch.nn.functional.layer_norm`.

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta

    with :math:`\mu, \sigma^2` the mean and biased variance of each example over
    its last ``len(normalized_shape)`` axes; :math:`\gamma, \beta` element-wise.

    Parameters
    ----------
    input : Tensor of shape (N, ..., D_1, ..., D_k)
        Floating point, any device; the last :math:`k` axes are ``normalized_shape``.
    normalized_shape : int or sequence of ints (D_1, ..., D_k)
    weight, bias : Tensor of shape (D_1, ..., D_k), optional
        :math:`\gamma`, :math:`\beta`.
    eps : float > 0, default 1e-5

    Returns
    -------
    Tensor, same shape, dtype and device as ``input``.

    Raises
    ------
    TypeError
        ``input`` is not a floating-point tensor, or ``normalized_shape`` is not made of ints.
    ValueError
        The last axes of ``input`` are not ``normalized_shape``, ``weight`` or
        ``bias`` has another shape, or ``eps <= 0``.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> x = torch.tensor([[1.0, 3.0], [10.0, 30.0]])
    >>> bnt.layer_norm(x, (2,), eps=1e-12)
    tensor([[-1.,  1.],
            [-1.,  1.]])
    """
    _check_tensor(input)
    shape = validation.check_layer_norm(tuple(input.shape), normalized_shape, _shape(weight),
                                        _shape(bias), eps)
    return LayerNormFunction.apply(input, weight, bias, len(shape), float(eps))


# ----------------------------------------------------------------------------- group norm
class GroupNormFunction(torch.autograd.Function):
    """The autograd node of :func:`group_norm`: forward normalizes groups, backward is closed form.

    Inputs: ``(input, weight, bias, num_groups, eps)``; ``weight`` and ``bias``
    (shape (C,)) may be ``None``.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, num_groups, eps):
        n, c = input.shape[:2]
        x3 = input.reshape(n, c, -1).to(_compute_dtype(input))          # (N, C, S)
        mean, invstd = _row_statistics(x3.reshape(n * num_groups, -1), eps)
        y3 = (x3.reshape(n * num_groups, -1) - mean).mul_(invstd).reshape(x3.shape)
        if weight is not None:
            y3.mul_(weight.reshape(1, c, 1))
        if bias is not None:
            y3.add_(bias.reshape(1, c, 1))
        ctx.save_for_backward(input, weight, mean, invstd)
        ctx.num_groups = num_groups
        ctx.bias_dtype = None if bias is None else bias.dtype
        return y3.reshape(input.shape).to(input.dtype)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        input, weight, mean, invstd = ctx.saved_tensors
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        n, c = input.shape[:2]
        rows = n * ctx.num_groups
        dtype = mean.dtype
        xhat3 = (input.reshape(rows, -1).to(dtype) - mean).mul_(invstd).reshape(n, c, -1)
        g3 = grad_y.reshape(n, c, -1).to(dtype)
        grad_x = grad_w = grad_b = None
        if need_x:
            g_hat3 = g3 if weight is None else g3 * weight.reshape(1, c, 1)
            grad_x = _row_input_gradient(g_hat3.reshape(rows, -1), xhat3.reshape(rows, -1), invstd)
            grad_x = grad_x.reshape(input.shape).to(input.dtype)
        if need_w:
            grad_w = (g3 * xhat3).sum((0, 2)).to(weight.dtype)
        if need_b:
            grad_b = g3.sum((0, 2)).to(ctx.bias_dtype)
        return grad_x, grad_w, grad_b, None, None


def group_norm(input: torch.Tensor, num_groups: int, weight: Optional[torch.Tensor] = None,
               bias: Optional[torch.Tensor] = None, eps: float = 1e-5) -> torch.Tensor:
    r"""Group normalization with the signature and semantics of :func:`torch.nn.functional.group_norm`.

    .. math::

        y_{ncs} = \frac{x_{ncs} - \mu_{ng}}{\sqrt{\sigma^2_{ng} + \varepsilon}}\,\gamma_c + \beta_c

    with :math:`\mu_{ng}, \sigma^2_{ng}` the mean and biased variance of example
    :math:`n` over the :math:`C/G` channels of group :math:`g` (the one holding
    channel :math:`c`) and every spatial position :math:`s`.

    Parameters
    ----------
    input : Tensor of shape (N, C, ...)
        Floating point, rank >= 2, any device.
    num_groups : int
        :math:`G`, a divisor of :math:`C`. 1: layer norm over (C, ...) with
        per-channel :math:`\gamma, \beta`; :math:`C`: instance norm.
    weight, bias : Tensor of shape (C,), optional
        :math:`\gamma`, :math:`\beta`.
    eps : float > 0, default 1e-5

    Returns
    -------
    Tensor, same shape, dtype and device as ``input``.

    Raises
    ------
    TypeError
        ``input`` is not a floating-point tensor, or ``num_groups`` is not an int.
    ValueError
        Rank < 2, :math:`C` not divisible by ``num_groups``, ``weight`` or
        ``bias`` not of shape (C,), or ``eps <= 0``.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> x = torch.tensor([[1.0, 3.0, 10.0, 30.0]])
    >>> bnt.group_norm(x, 2, eps=1e-12)
    tensor([[-1.,  1., -1.,  1.]])
    """
    _check_tensor(input)
    validation.check_group_norm(tuple(input.shape), num_groups, _shape(weight), _shape(bias),
                                eps)
    return GroupNormFunction.apply(input, weight, bias, int(num_groups), float(eps))


# ----------------------------------------------------------------------------- modules
class _AffineNorm(nn.Module):
    """Shared parameters of LayerNorm and GroupNorm: ``weight`` (ones) and ``bias`` (zeros)."""

    def _register_affine(self, shape, affine: bool, bias: bool, device, dtype) -> None:
        factory = {"device": device, "dtype": dtype}
        weight = nn.Parameter(torch.ones(shape, **factory)) if affine else None
        self.register_parameter("weight", weight)
        self.register_parameter("bias", nn.Parameter(torch.zeros(shape, **factory))
                                if affine and bias else None)

    def reset_parameters(self) -> None:
        """Weight 1, bias 0."""
        if self.weight is not None:
            nn.init.ones_(self.weight)
        if self.bias is not None:
            nn.init.zeros_(self.bias)


class LayerNorm(_AffineNorm):
    r"""Layer normalization over the trailing axes, like :class:`torch.nn.LayerNorm`.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    per example, over the last ``len(normalized_shape)`` axes. No running
    statistics: training and eval mode compute the same thing.

    Parameters
    ----------
    normalized_shape : int or sequence of ints (D_1, ..., D_k)
    eps : float > 0, default 1e-5
    elementwise_affine : bool, default True
        Learnable ``weight`` (:math:`\gamma`, ones) and ``bias`` (:math:`\beta`,
        zeros), both of shape ``normalized_shape``.
    bias : bool, default True
        With ``elementwise_affine``, also learn ``bias``.
    device, dtype : optional
        Of the parameters.

    Shape
    -----
    Input: (N, ..., D_1, ..., D_k); output: same shape.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> ln = bnt.LayerNorm((8, 5, 5))        # over (C, H, W)
    >>> ln(torch.randn(4, 8, 5, 5)).shape
    torch.Size([4, 8, 5, 5])
    """

    def __init__(self, normalized_shape, eps: float = 1e-5, elementwise_affine: bool = True,
                 bias: bool = True, device=None, dtype=None):
        super().__init__()
        self.normalized_shape = validation.as_normalized_shape(normalized_shape)
        validation.check_eps(eps)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        self._register_affine(self.normalized_shape, elementwise_affine, bias, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        return layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None}")


class GroupNorm(_AffineNorm):
    r"""Group normalization over an input (N, C, ...), like :class:`torch.nn.GroupNorm`.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    with the statistics of each example's group of :math:`C/G` consecutive
    channels (over those channels and all spatial positions); :math:`\gamma,
    \beta` per channel. No running statistics: training and eval mode compute
    the same thing.

    Parameters
    ----------
    num_groups : int
        :math:`G`, a divisor of ``num_channels``.
    num_channels : int
        :math:`C`.
    eps : float > 0, default 1e-5
    affine : bool, default True
        Learnable ``weight`` (:math:`\gamma`, ones) and ``bias`` (:math:`\beta`,
        zeros), both of shape (C,).
    device, dtype : optional
        Of the parameters.
    bias : bool, default True (keyword only)
        With ``affine``, also learn ``bias``.

    Shape
    -----
    Input: (N, C, ...); output: same shape.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> gn = bnt.GroupNorm(4, 16)            # 4 groups of 4 channels
    >>> gn(torch.randn(2, 16, 7, 7)).shape
    torch.Size([2, 16, 7, 7])
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, device=None, dtype=None, *, bias: bool = True):
        super().__init__()
        validation.check_positive_int("num_channels", num_channels)
        validation.check_num_groups(num_groups, num_channels)
        validation.check_eps(eps)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = affine
        self._register_affine((self.num_channels,), affine, bias, device, dtype)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor) and input.dim() >= 2 and input.shape[1] != self.num_channels:
            raise ValueError(f"input has {input.shape[1]} channels (shape {tuple(input.shape)}) "
                             f"but num_channels={self.num_channels}")
        return group_norm(input, self.num_groups, self.weight, self.bias, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None}")
