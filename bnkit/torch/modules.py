r"""``BatchNorm1d/2d/3d``: thin ``nn.Module`` wrappers over :class:`bnkit.torch.BatchNormFunction`.

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

import math
from typing import Optional

import torch
from torch import nn

from .. import validation
from .functional import BatchNormFunction
from .kernels import exponential_average_factor, values_per_channel

__all__ = ["BatchNormBase", "BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


class BatchNormBase(nn.Module):
    r"""Shared state, checks and forward of the BatchNorm classes (and of SyncBatchNorm).

    The counterpart of torch's ``_BatchNorm``: subclasses only say which input
    ranks they take (``_allowed_ranks``; ``None``: any rank >= 2).

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
        validation.check_positive_int("num_features", num_features)
        validation.check_eps(eps)
        validation.check_momentum(momentum, allow_none=True)
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

    def _check_input(self, input, batch_statistics: bool, whole_batch: bool = True) -> None:
        """Every check of a call, before anything changes: a refused call leaves no trace.

        ``batch_statistics``: the call normalizes with the batch's statistics,
        which needs other than exactly one value per channel -- in this input
        when ``whole_batch``, over every rank's input for :class:`SyncBatchNorm`.
        """
        if self._looks_valid(input, batch_statistics and whole_batch):
            return                  # the common case, in a few comparisons
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor (got {type(input).__name__})")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (got dtype {input.dtype})")
        validation.check_input_rank(input.dim(), self._allowed_ranks)
        if input.shape[1] != self.num_features:
            raise ValueError(f"input has {input.shape[1]} channels (shape "
                             f"{tuple(input.shape)}) but num_features={self.num_features}")
        validation.check_eps(self.eps)
        validation.check_momentum(self.momentum, allow_none=True)
        for name in ("weight", "bias", "running_mean", "running_var"):
            v = getattr(self, name)
            validation.check_channel_vector(name, None if v is None else tuple(v.shape),
                                            self.num_features)
        if batch_statistics and whole_batch and values_per_channel(input) == 1:
            validation.check_training_batch(tuple(input.shape), 1)        # raises

    def _looks_valid(self, input, whole_batch_statistics: bool) -> bool:
        """True when every check of :meth:`_check_input` passes, tested the fast way.

        False means "run the checks one by one" (which raise with the message).
        """
        c = self.num_features
        eps, momentum = self.eps, self.momentum
        if not (isinstance(input, torch.Tensor) and input.is_floating_point()
                and type(eps) is float and 0.0 < eps < math.inf
                and (momentum is None or type(momentum) is float and 0.0 <= momentum <= 1.0)):
            return False
        shape = input.shape
        ranks = self._allowed_ranks
        if (len(shape) < 2 if ranks is None else len(shape) not in ranks) or shape[1] != c:
            return False
        for v in (self.weight, self.bias, self.running_mean, self.running_var):
            if v is not None and (v.dim() != 1 or v.shape[0] != c):
                return False
        return not (whole_batch_statistics and values_per_channel(input) == 1)

    def _count_batch(self):
        """Count a training batch; return the weight of its statistics in the running average.

        ``momentum``, or ``1 / num_batches_tracked`` for ``momentum=None``
        (:func:`~bnkit.torch.kernels.exponential_average_factor`). Without
        running statistics there is nothing to count (and the weight is unused).
        """
        if not self.track_running_stats or self.num_batches_tracked is None:
            return 0.0
        self.num_batches_tracked.add_(1)
        return exponential_average_factor(self.momentum, self.num_batches_tracked)

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        training = self.training
        running_mean, running_var = self.running_mean, self.running_var
        use_batch_stats = training or running_mean is None
        update = training and self.track_running_stats
        self._check_input(input, use_batch_stats)
        factor = self._count_batch() if update else 0.0
        if training and not update:         # batch statistics, nothing to track
            running_mean = running_var = None
        return BatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                       use_batch_stats, factor, float(self.eps))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(BatchNormBase):
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


class BatchNorm2d(BatchNormBase):
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


class BatchNorm3d(BatchNormBase):
    r"""Batch norm over a 5D input (N, C, D, H, W), like :class:`torch.nn.BatchNorm3d`.

    Statistics per channel over (N, D, H, W). Parameters as for :class:`BatchNorm1d`.

    Shape
    -----
    Input: (N, C, D, H, W); output: same shape.
    """

    _allowed_ranks = (5,)
