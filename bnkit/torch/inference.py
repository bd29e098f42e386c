r"""Batch norm at inference: fold an eval-mode BatchNorm into the layer before it.

In eval mode batch normalization is a fixed per-channel affine map,

.. math::

    \mathrm{BN}(z)_c = \gamma_c \frac{z_c - \hat\mu_c}{\sqrt{\hat\sigma^2_c + \varepsilon}} + \beta_c
                     = s_c\, z_c + (\beta_c - s_c \hat\mu_c), \qquad
    s_c = \frac{\gamma_c}{\sqrt{\hat\sigma^2_c + \varepsilon}},

with the running statistics :math:`\hat\mu, \hat\sigma^2`. When :math:`z = W x + b`
comes from a linear layer or a convolution (output channel :math:`c` computed
by the filter :math:`W_c`), the composition is again one such layer:

.. math::

    \mathrm{BN}(W x + b) = W' x + b', \qquad
    W'_c = s_c W_c, \qquad b'_c = s_c\,(b_c - \hat\mu_c) + \beta_c .

Folding removes one pass over the activations at inference
(Jacob et al. 2018 fold it for integer-only inference).
"""

from __future__ import annotations

import copy
from typing import Union

import torch
from torch import nn

from .modules import BatchNormBase

__all__ = ["fold_batch_norm"]

_FOLDABLE = (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)
_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, BatchNormBase)

Foldable = Union[nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d]


def _out_channels(layer: Foldable) -> int:
    return layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels


def fold_batch_norm(layer: Foldable, bn: nn.Module) -> Foldable:
    r"""A new layer computing ``bn(layer(x))`` for an eval-mode ``bn``, in one affine step.

    With :math:`s_c = \gamma_c / \sqrt{\hat\sigma^2_c + \varepsilon}` (``bn.weight``,
    ``bn.running_var``, ``bn.eps``; :math:`\gamma = 1`, :math:`\beta = 0` when
    ``bn.affine`` is False), the returned layer has

    .. math::

        W'_c = s_c\, W_c, \qquad b'_c = s_c\,(b_c - \hat\mu_c) + \beta_c

    for every output channel :math:`c` (:math:`b = 0` when ``layer`` has no
    bias; the new layer always has one). The arithmetic runs in float64 and is
    rounded once to the layer's dtype: in float64 the folded layer agrees with
    ``bn(layer(x))`` to round-off (about 1e-15 relative); in float32 to float32
    rounding (about 1e-6 relative).

    Parameters
    ----------
    layer : nn.Linear, nn.Conv1d, nn.Conv2d or nn.Conv3d
        Weight of shape ``(C, in_features)`` or ``(C, in_channels / groups, *kernel_size)``;
        any stride, padding, dilation, groups and padding mode.
    bn : BatchNorm1d, BatchNorm2d or BatchNorm3d, from ``torch.nn`` or :mod:`bnkit.torch`
        In eval mode, with running statistics, ``num_features == C``.

    Returns
    -------
    nn.Module
        A deep copy of ``layer`` (same class, configuration, device, dtype and
        ``requires_grad``) with the folded weight and bias. ``layer`` and ``bn``
        are left untouched.

    Raises
    ------
    TypeError
        ``layer`` is not one of the four classes, or ``bn`` is not a BatchNorm.
    ValueError
        ``bn`` is in training mode (it would normalize with batch statistics,
        which no fixed layer can do), has no running statistics
        (``track_running_stats=False``), or its ``num_features`` differs from
        the layer's output channels.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> import bnkit.torch as bnt
    >>> conv, bn = nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)
    >>> _ = bn(conv(torch.randn(16, 3, 10, 10)))          # training step: running statistics
    >>> _ = bn.eval()
    >>> folded = bnt.fold_batch_norm(conv, bn)
    >>> x = torch.randn(2, 3, 10, 10)
    >>> torch.allclose(folded(x), bn(conv(x)), atol=1e-5)
    True
    """
    if not isinstance(layer, _FOLDABLE):
        raise TypeError("fold_batch_norm folds into nn.Linear, nn.Conv1d, nn.Conv2d or "
                        f"nn.Conv3d (got {type(layer).__name__})")
    if not isinstance(bn, _BATCH_NORMS):
        raise TypeError("bn must be a BatchNorm1d/2d/3d from torch.nn or bnkit.torch "
                        f"(got {type(bn).__name__})")
    if bn.training:
        raise ValueError("bn is in training mode, where it normalizes with each batch's own "
                         "statistics; call bn.eval() before folding")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): it "
                         "normalizes with batch statistics even in eval mode, so it cannot "
                         "be folded")
    channels = _out_channels(layer)
    if bn.num_features != channels:
        raise ValueError(f"bn has num_features={bn.num_features} but the "
                         f"{type(layer).__name__} has {channels} output channels")

    weight = layer.weight
    with torch.no_grad():
        f64 = dict(dtype=torch.float64, device=weight.device)
        mean = bn.running_mean.to(**f64)
        var = bn.running_var.to(**f64)
        gamma = torch.ones_like(mean) if bn.weight is None else bn.weight.to(**f64)
        beta = torch.zeros_like(mean) if bn.bias is None else bn.bias.to(**f64)
        b = torch.zeros_like(mean) if layer.bias is None else layer.bias.to(**f64)
        scale = gamma / torch.sqrt(var + bn.eps)
        # W'_c = s_c W_c: scale every output channel's filter (axis 0 of the weight)
        new_weight = weight.to(**f64) * scale.view((-1,) + (1,) * (weight.dim() - 1))
        new_bias = scale * (b - mean) + beta

        folded = copy.deepcopy(layer)
        folded.weight = nn.Parameter(new_weight.to(weight.dtype),
                                     requires_grad=weight.requires_grad)
        bias_grad = weight.requires_grad if layer.bias is None else layer.bias.requires_grad
        folded.bias = nn.Parameter(new_bias.to(weight.dtype), requires_grad=bias_grad)
    return folded
