r"""A stateful NumPy batch-norm layer: a thin wrapper over :mod:`bnkit.numpy.functional`."""

from __future__ import annotations

from typing import Dict, Optional

import numpy as np

from .. import _checks
from . import functional as F

__all__ = ["BatchNorm"]


class BatchNorm:
    r"""Batch normalization layer in NumPy, with PyTorch's ``BatchNorm*d`` semantics.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    per channel. In training mode the statistics are the batch's (biased
    variance) and the running statistics are updated (unbiased variance
    stored); in eval mode the running statistics are used. It also
    back-propagates: :meth:`backward` after :meth:`forward`.

    Parameters
    ----------
    num_features : int
        :math:`C`, the number of channels.
    eps : float, default 1e-5
    momentum : float in [0, 1] or None, default 0.1
        PyTorch's convention: ``running = (1 - momentum) * running + momentum * batch``.
        ``None`` gives the cumulative average over ``num_batches_tracked`` batches.
    affine : bool, default True
        Learn :math:`\gamma` (``weight``, ones) and :math:`\beta` (``bias``, zeros).
    track_running_stats : bool, default True
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``; when False, eval mode also uses batch statistics.
    channel_axis : int, default 1
        1 for (N, C, *) inputs, -1 for channels-last (N, *, C).
    dtype : numpy dtype, default float64
        Dtype of the parameters and running statistics. Inputs keep their own
        dtype: a float32 input gives a float32 output.

    Shape
    -----
    Input: (N, C, *) (channels on ``channel_axis``); output: same shape.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> bn = bnp.BatchNorm(3)
    >>> x = np.random.default_rng(0).normal(5.0, 2.0, size=(8, 3))
    >>> y = bn(x)                     # training mode: batch statistics
    >>> np.allclose(y.mean(axis=0), 0)
    True
    >>> bn.num_batches_tracked
    1
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, channel_axis: int = 1,
                 dtype=np.float64):
        if not (isinstance(num_features, (int, np.integer)) and num_features > 0):
            raise ValueError(f"num_features must be a positive int (got {num_features!r})")
        _checks.check_eps(eps)
        _checks.check_momentum(momentum, allow_none=True)
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.channel_axis = channel_axis
        self.training = True
        self.weight = np.ones(num_features, dtype) if affine else None
        self.bias = np.zeros(num_features, dtype) if affine else None
        self.grad_weight = None
        self.grad_bias = None
        if track_running_stats:
            self.running_mean = np.zeros(num_features, dtype)
            self.running_var = np.ones(num_features, dtype)
            self.num_batches_tracked = 0
        else:
            self.running_mean = self.running_var = self.num_batches_tracked = None
        self._cache = None

    # ------------------------------------------------------------------ mode
    def train(self, mode: bool = True) -> "BatchNorm":
        """Set training mode (``mode=True``) or eval mode; returns ``self``."""
        self.training = bool(mode)
        return self

    def eval(self) -> "BatchNorm":
        """Set eval mode: normalize with the running statistics; returns ``self``."""
        return self.train(False)

    @property
    def _uses_batch_stats(self) -> bool:
        return self.training or self.running_mean is None

    # ------------------------------------------------------------------ forward / backward
    def forward(self, x) -> np.ndarray:
        """Normalize ``x`` (shape (N, C, *)); see the class docstring for the modes."""
        x = F._as_float_array(x)
        _checks.check_input_rank(x.ndim)
        axis = _checks.normalize_channel_axis(self.channel_axis, x.ndim)
        _checks.check_channel_vector("input channels", (x.shape[axis],), self.num_features)
        if not self._uses_batch_stats:
            y = F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                             training=False, eps=self.eps, channel_axis=axis)
        else:
            _checks.check_training_batch(x.shape, axis)   # before any state changes
            momentum = self.momentum
            update = self.training and self.track_running_stats
            if update:
                self.num_batches_tracked += 1
                if momentum is None:
                    momentum = 1.0 / self.num_batches_tracked
            y = F.batch_norm(x, self.running_mean if update else None,
                             self.running_var if update else None, self.weight, self.bias,
                             training=True, momentum=0.0 if momentum is None else momentum,
                             eps=self.eps, channel_axis=axis)
        self._cache = (x, axis, self._uses_batch_stats)
        return y

    __call__ = forward

    def backward(self, grad_y) -> np.ndarray:
        r"""Back-propagate :math:`\partial L/\partial y` through the last :meth:`forward`.

        Returns :math:`\partial L/\partial x` and stores ``grad_weight`` and
        ``grad_bias`` (``None`` when ``affine=False``). The gradient is the
        training-mode one when the forward used batch statistics, the eval-mode
        one (statistics are constants) otherwise.
        """
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        x, axis, batch_stats = self._cache
        if batch_stats:
            gx, gw, gb = F.batch_norm_backward(grad_y, x, self.weight, self.eps, axis)
        else:
            gx, gw, gb = F.batch_norm_eval_backward(grad_y, x, self.running_mean,
                                                    self.running_var, self.weight, self.eps,
                                                    axis)
        if self.affine:
            self.grad_weight, self.grad_bias = gw, gb
        return gx

    # ------------------------------------------------------------------ state
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters and buffers, under PyTorch's keys."""
        state = {}
        if self.affine:
            state["weight"] = self.weight.copy()
            state["bias"] = self.bias.copy()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean.copy()
            state["running_var"] = self.running_var.copy()
            state["num_batches_tracked"] = np.array(self.num_batches_tracked, dtype=np.int64)
        return state

    def load_state_dict(self, state_dict) -> None:
        """Load a state dict (NumPy arrays or torch tensors), checking keys and shapes.

        The keys must be exactly those :meth:`state_dict` gives (a torch
        ``BatchNorm*d``'s state dict with the same ``affine`` and
        ``track_running_stats`` fits). Nothing is changed if a check fails.
        """
        expected = set(self.state_dict())
        got = set(state_dict)
        if got != expected:
            missing, unexpected = sorted(expected - got), sorted(got - expected)
            raise KeyError(f"state dict keys do not match: missing {missing}, "
                           f"unexpected {unexpected}")
        arrays = {k: np.array(_to_numpy(v), copy=True) for k, v in state_dict.items()}
        for k, v in arrays.items():
            want = () if k == "num_batches_tracked" else (self.num_features,)
            if v.shape != want:
                raise ValueError(f"{k} has shape {v.shape}, expected {want}")
        for k, v in arrays.items():
            setattr(self, k, int(v) if k == "num_batches_tracked" else v)

    def __repr__(self) -> str:
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis})")


def _to_numpy(v):
    """An array from a NumPy array, a number or a torch tensor (without importing torch)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return v
