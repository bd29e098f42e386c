r"""Batch norm as a plain formula, for a compiler to fuse (Chapter 9).

:func:`batch_norm_formula` writes training- and eval-mode batch norm in a few
ordinary torch operations — the statistics by :func:`torch.var_mean`, then
:math:`y = (x - \mu)/\sqrt{\sigma^2 + \varepsilon}\,\gamma + \beta` — with the
signature of :func:`torch.nn.functional.batch_norm`. Run eagerly, each
operation is a separate pass over memory; handed to :func:`torch.compile`,
Inductor fuses them into one reduction and one element-wise loop, the two passes
of :func:`bnkit.roofline.forward_passes`, and derives the backward by itself.
:func:`batch_norm_relu_formula` adds the ReLU that follows batch norm in most
networks, which a compiler folds into the same loop; :func:`batch_norm_relu`
is the eager reference, torch's own kernel followed by a separate ReLU.

The formula follows torch's semantics: the batch variance is biased in the
normalization and unbiased in the running variance, ``momentum`` weights the new
value, ``momentum=None`` is not supported (a cumulative average needs the
batch counter, which the functional form does not have).
"""

from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

__all__ = ["batch_norm_formula", "batch_norm_relu_formula", "batch_norm_relu"]


def batch_norm_formula(input: torch.Tensor, running_mean: Optional[torch.Tensor],
                       running_var: Optional[torch.Tensor], weight: Optional[torch.Tensor] = None,
                       bias: Optional[torch.Tensor] = None, training: bool = False,
                       momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r"""Batch normalization written as its formula in plain torch operations.

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta

    with the batch mean and biased variance of each channel in training mode
    (then the running statistics move by ``momentum`` towards the batch mean
    and the *unbiased* batch variance), the running statistics in eval mode.
    Differentiable by autograd (no custom backward), so :func:`torch.compile`
    can fuse the forward and derive a fused backward.

    Parameters
    ----------
    input : Tensor of shape (N, C, *)
    running_mean, running_var : Tensor of shape (C,) or None
        Updated in place in training mode; required in eval mode.
    weight, bias : Tensor of shape (C,), optional
        :math:`\gamma` and :math:`\beta`.
    training : bool, default False
    momentum : float, default 0.1
    eps : float, default 1e-5

    Returns
    -------
    Tensor of shape (N, C, *)
        Same dtype as ``input``; the same memory format as torch's
        element-wise operations give.

    Raises
    ------
    ValueError
        For an input of rank < 2, a training batch with one value per channel,
        or eval mode without running statistics.
    """
    if input.dim() < 2:
        raise ValueError(f"expected an input of shape (N, C, *) (got {input.dim()}D input)")
    dims = [d for d in range(input.dim()) if d != 1]
    view = [1, -1] + [1] * (input.dim() - 2)
    if training:
        m = input.numel() // input.shape[1]
        if m < 2:
            raise ValueError(f"expected more than 1 value per channel when training "
                             f"(got input of shape {tuple(input.shape)})")
        var, mean = torch.var_mean(input, dim=dims, correction=0)
        if running_mean is not None and running_var is not None:
            with torch.no_grad():
                running_mean.lerp_(mean.to(running_mean.dtype), momentum)
                running_var.lerp_((var * (m / (m - 1))).to(running_var.dtype), momentum)
    else:
        if running_mean is None or running_var is None:
            raise ValueError("eval mode needs running_mean and running_var")
        mean, var = running_mean, running_var
    y = (input - mean.view(view)) * torch.rsqrt(var + eps).view(view)
    if weight is not None:
        y = y * weight.view(view)
    if bias is not None:
        y = y + bias.view(view)
    return y


def batch_norm_relu_formula(input: torch.Tensor, running_mean: Optional[torch.Tensor],
                            running_var: Optional[torch.Tensor],
                            weight: Optional[torch.Tensor] = None,
                            bias: Optional[torch.Tensor] = None, training: bool = False,
                            momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r""":math:`\max(0, \mathrm{BN}(x))` with :func:`batch_norm_formula`: one graph for a compiler to fuse.

    Same parameters as :func:`batch_norm_formula`.
    """
    return torch.relu(batch_norm_formula(input, running_mean, running_var, weight, bias,
                                         training, momentum, eps))


def batch_norm_relu(input: torch.Tensor, running_mean: Optional[torch.Tensor],
                    running_var: Optional[torch.Tensor], weight: Optional[torch.Tensor] = None,
                    bias: Optional[torch.Tensor] = None, training: bool = False,
                    momentum: float = 0.1, eps: float = 1e-5) -> torch.Tensor:
    r"""The eager reference: torch's batch-norm kernel, then a separate ReLU.

    :math:`\max(0, \mathrm{BN}(x))` by :func:`torch.nn.functional.batch_norm` and
    :func:`torch.relu`: two kernels, so the ReLU reads the normalized output
    back from memory and writes its own. Same parameters as
    :func:`batch_norm_formula`.
    """
    return torch.relu(F.batch_norm(input, running_mean, running_var, weight, bias, training,
                                   momentum, eps))
