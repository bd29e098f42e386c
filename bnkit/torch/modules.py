r"""``BatchNorm1d/2d/3d``: thin ``nn.Module`` wrappers over :func:`bnkit.torch.batch_norm`.

They hold the same parameters and buffers as :class:`torch.nn.BatchNorm2d`
under the same names, so state dicts load both ways, strictly (also state
dicts saved before ``num_batches_tracked`` existed, as torch loads them).

Dtypes, as ``torch.nn.BatchNorm2d``: the output has the *input's* dtype, so a
float16 or bfloat16 input through a float32 layer (``torch.autocast``, AMP)
comes out in float16 or bfloat16; the batch statistics are accumulated in at
least float32; the running statistics are stored in the layer's dtype (the
``dtype`` argument, or ``.to()``); the gradients of ``weight`` and ``bias`` have
the layer's dtype, the input gradient the input's. See :mod:`bnkit.torch.kernels`.
"""

from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from .. import _checks
from .functional import batch_norm, check_input

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class _BatchNorm(nn.Module):
    r"""Shared state and forward of the BatchNorm classes.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    Parameters
    ----------
    num_features : int
        :math:`C`, the number of channels of an input of shape (N, C, ...).
    eps : float, default 1e-5
    momentum : float in [0, 1] or None, default 0.1
        ``running = (1 - momentum) * running + momentum * batch``; ``None`` is
        the cumulative average (factor ``1 / num_batches_tracked``).
    affine : bool, default True
        Learnable ``weight`` (:math:`\gamma`, ones) and ``bias`` (:math:`\beta`, zeros).
    track_running_stats : bool, default True
        Buffers ``running_mean`` (zeros), ``running_var`` (ones),
        ``num_batches_tracked`` (0). When False, eval mode uses batch statistics.
    device, dtype : optional
        Of the parameters and buffers.
    bias : bool, default True (keyword only)
        With ``affine``, also learn ``bias``; ``affine=True, bias=False`` learns a
        scale :math:`\gamma` and no shift (:math:`\beta = 0`, no ``bias`` key in
        the state dict), as in torch 2.13.
    """

    _allowed_ranks: tuple = ()
    # State-dict version, as torch's: version 2 added ``num_batches_tracked``.
    _version = 2

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, device=None,
                 dtype=None, *, bias: bool = True):
        super().__init__()
        _checks.check_positive_int("num_features", num_features)
        _checks.check_eps(eps)
        _checks.check_momentum(momentum, allow_none=True)
        factory = {"device": device, "dtype": dtype}
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            if bias:
                self.bias = nn.Parameter(torch.zeros(num_features, **factory))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked",
                                 torch.tensor(0, dtype=torch.long, device=device))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def reset_running_stats(self) -> None:
        """Running mean 0, running variance 1, ``num_batches_tracked`` 0."""
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1)
            self.num_batches_tracked.zero_()

    def reset_parameters(self) -> None:
        """Running statistics reset; weight 1, bias 0."""
        self.reset_running_stats()
        if self.affine:
            nn.init.ones_(self.weight)
            if self.bias is not None:
                nn.init.zeros_(self.bias)

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys,
                              unexpected_keys, error_msgs) -> None:
        """torch's rule for checkpoints saved before ``num_batches_tracked`` existed.

        A state dict of version < 2 (or without a version) that lacks the key
        keeps this layer's current counter (0 for a fresh layer, as torch does),
        so that it loads strictly; from version 2 on, a missing key is an error.
        """
        version = local_metadata.get("version", None)
        key = prefix + "num_batches_tracked"
        if (version is None or version < 2) and self.track_running_stats \
                and key not in state_dict:
            counter = self.num_batches_tracked
            state_dict[key] = (counter if counter is not None and counter.device.type != "meta"
                               else torch.tensor(0, dtype=torch.long))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys,
                                      unexpected_keys, error_msgs)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if isinstance(input, torch.Tensor):
            _checks.check_input_rank(input.dim(), self._allowed_ranks)
            if input.shape[1] != self.num_features:
                raise ValueError(f"input has {input.shape[1]} channels (shape "
                                 f"{tuple(input.shape)}) but num_features={self.num_features}")
        use_batch_stats = self.training or self.running_mean is None
        update = self.training and self.track_running_stats
        running_mean = self.running_mean if update or not self.training else None
        running_var = self.running_var if update or not self.training else None
        # Every check first, so a refused call changes no counter or statistic.
        check_input(input, running_mean, running_var, self.weight, self.bias,
                    use_batch_stats, 0.0 if self.momentum is None else self.momentum, self.eps)
        momentum = 0.0 if self.momentum is None else self.momentum
        if update:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return batch_norm(input, running_mean, running_var, self.weight, self.bias,
                          use_batch_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    r"""Batch norm over a 2D input (N, C) or 3D input (N, C, L), like :class:`torch.nn.BatchNorm1d`.

    Statistics per channel over N (and L).

    Parameters
    ----------
    num_features : int
        :math:`C`.
    eps : float, default 1e-5
    momentum : float in [0, 1] or None, default 0.1
        ``None``: cumulative average over ``num_batches_tracked`` batches.
    affine, track_running_stats : bool, default True
    device, dtype : optional
        Of the parameters and buffers.
    bias : bool, default True (keyword only)
        With ``affine``, also learn ``bias`` (``False``: a scale and no shift).

    Shape
    -----
    Input: (N, C) or (N, C, L); output: same shape. :math:`N` may be 0 (an
    empty output; see :func:`bnkit.torch.batch_norm`).

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> bn = bnt.BatchNorm1d(100)
    >>> bn(torch.randn(20, 100)).shape
    torch.Size([20, 100])
    """

    _allowed_ranks = (2, 3)


class BatchNorm2d(_BatchNorm):
    r"""Batch norm over a 4D input (N, C, H, W), like :class:`torch.nn.BatchNorm2d`.

    Statistics per channel over (N, H, W): :math:`m = N H W` values each.
    Works on ``torch.channels_last`` tensors too. Parameters as for :class:`BatchNorm1d`.

    Shape
    -----
    Input: (N, C, H, W); output: same shape.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> bn = bnt.BatchNorm2d(30)
    >>> bn(torch.randn(4, 30, 8, 8)).shape
    torch.Size([4, 30, 8, 8])
    """

    _allowed_ranks = (4,)


class BatchNorm3d(_BatchNorm):
    r"""Batch norm over a 5D input (N, C, D, H, W), like :class:`torch.nn.BatchNorm3d`.

    Statistics per channel over (N, D, H, W). Parameters as for :class:`BatchNorm1d`.

    Shape
    -----
    Input: (N, C, D, H, W); output: same shape.
    """

    _allowed_ranks = (5,)
