r"""A stateful NumPy batch-norm layer: a thin wrapper over :mod:`bnkit.numpy.functional`."""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict, Optional

import numpy as np

from .. import _checks
from .. import conventions as _conventions
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

    An empty batch (a zero-size axis, e.g. N = 0) gives an empty output; in
    training it leaves the running statistics as they are but still counts in
    ``num_batches_tracked``, and the weight and bias gradients are zeros: all
    as in PyTorch 2.13.

    Parameters
    ----------
    num_features : int
        :math:`C`, the number of channels.
    eps : float, default 1e-5
    momentum : float in [0, 1] or None, default 0.1
        In PyTorch's convention (the default ``momentum_convention="torch"``):
        ``running = (1 - momentum) * running + momentum * batch``. In Keras'
        (``momentum_convention="keras"``): ``running = momentum * running +
        (1 - momentum) * batch`` -- pass ``momentum=0.99, eps=1e-3`` for Keras'
        defaults. ``None`` gives the cumulative average over
        ``num_batches_tracked`` batches in either convention.
    affine : bool, default True
        Learn :math:`\gamma` (``weight``, ones) and :math:`\beta` (``bias``, zeros).
    track_running_stats : bool, default True
        Keep ``running_mean`` (zeros), ``running_var`` (ones) and
        ``num_batches_tracked``; when False, eval mode also uses batch statistics.
    channel_axis : int, default 1
        1 for (N, C, ...) inputs, -1 for channels-last (N, ..., C).
    dtype : numpy dtype, default float64
        Dtype of the parameters, their gradients and the running statistics.
        Inputs keep their own dtype: a float16 or float32 input gives an output
        of its dtype, its statistics summed in float32 or wider and updating the
        running statistics in this dtype (the dtype policy of :mod:`bnkit.numpy`).
    momentum_convention : {"torch", "keras"}, default "torch"
        How ``momentum`` is read; see :mod:`bnkit.conventions`. A Keras-convention
        layer with ``momentum=m`` keeps the same running mean as a PyTorch-convention
        layer with ``momentum=1 - m``.
    unbiased_running_var : bool or None, default None
        Store the unbiased batch variance :math:`\frac{m}{m-1}\sigma^2_\mathcal{B}`
        in ``running_var`` (True, PyTorch) or the biased :math:`\sigma^2_\mathcal{B}`
        (False, Keras 3). ``None``: the convention's own choice.
    bias : bool, default True, keyword-only
        With ``affine``, also learn :math:`\beta`; ``affine=True, bias=False``
        learns a scale :math:`\gamma` and no shift (``bias`` is ``None`` and
        absent from the state dict), as torch 2.13's ``BatchNorm*d(..., bias=False)``.

    Shape
    -----
    Input: (N, C, ...) (channels on ``channel_axis``); output: same shape.

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
                 dtype=np.float64, momentum_convention: str = "torch",
                 unbiased_running_var: Optional[bool] = None, *, bias: bool = True):
        _checks.check_positive_int("num_features", num_features)
        _checks.check_eps(eps)
        _checks.check_momentum(momentum, allow_none=True)
        if momentum_convention not in _conventions.CONVENTIONS:
            raise ValueError(f"momentum_convention must be one of {_conventions.CONVENTIONS} "
                             f"(got {momentum_convention!r})")
        if unbiased_running_var is None:
            unbiased_running_var = _conventions.stores_unbiased_variance(momentum_convention)
        self.momentum_convention = momentum_convention
        self.unbiased_running_var = bool(unbiased_running_var)
        self.num_features = int(num_features)
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        self.channel_axis = channel_axis
        self.training = True
        self.weight = np.ones(num_features, dtype) if affine else None
        self.bias = np.zeros(num_features, dtype) if affine and bias else None
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
        """Normalize ``x`` (shape (N, C, ...)); see the class docstring for the modes.

        Every argument is checked before anything changes: a call that raises
        leaves the running statistics and ``num_batches_tracked`` as they were.
        """
        x = F._as_float_array(x)
        axis = self._check_call(x)          # the functions check the rest before computing
        batch_stats = self._uses_batch_stats
        if batch_stats:
            y, mean, var = F.batch_norm_training(x, self.weight, self.bias, self.eps, axis)
            if self.training and self.track_running_stats:
                self._update_running_stats(mean, var, x.size // self.num_features)
        else:
            y = F.normalize(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.eps, axis)
        self._cache = (x, axis, batch_stats)
        return y

    __call__ = forward

    def _check_call(self, x: np.ndarray) -> int:
        """The layer's own checks; returns the non-negative channel axis.

        The input's rank and dtype, ``eps``, ``weight``, ``bias`` and the batch
        size are checked by the function :meth:`forward` calls, before it
        computes anything; nothing changes before both have passed.
        """
        _checks.check_input_rank(x.ndim)
        axis = _checks.normalize_channel_axis(self.channel_axis, x.ndim)
        _checks.check_channel_vector("input channels", (x.shape[axis],), self.num_features)
        _checks.check_momentum(self.momentum, allow_none=True)
        F._check_vectors(x.shape[axis], running_mean=self.running_mean,
                         running_var=self.running_var)
        return axis

    def _update_running_stats(self, mean: np.ndarray, var: np.ndarray, m: int) -> None:
        """One EMA step in the layer's convention; ``momentum=None``: cumulative average."""
        self.num_batches_tracked += 1
        if self.momentum is None:          # weight 1/n on the n-th batch, in any convention
            momentum, convention = 1.0 / self.num_batches_tracked, "torch"
        else:
            momentum, convention = self.momentum, self.momentum_convention
        _conventions.update_moving_stats(self.running_mean, self.running_var, mean, var, m,
                                         momentum, convention, self.unbiased_running_var)

    def backward(self, grad_y) -> np.ndarray:
        r"""Back-propagate :math:`\partial L/\partial y` through the last :meth:`forward`.

        Returns :math:`\partial L/\partial x` and stores ``grad_weight`` and
        ``grad_bias`` (``None`` for a parameter the layer does not have). The gradient is the
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
        self.grad_weight = gw if self.weight is not None else None
        self.grad_bias = gb if self.bias is not None else None
        return gx

    # ------------------------------------------------------------------ state
    #: The state-dict format, torch's ``_NormBase._version``: version 2 added
    #: ``num_batches_tracked`` (torch 0.4.1).
    _version = 2

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters and buffers, under PyTorch's keys.

        An ordered dict which, like torch's, carries ``_metadata = {"": {"version": 2}}``.
        """
        state = OrderedDict()
        state._metadata = OrderedDict([("", {"version": self._version})])
        if self.weight is not None:
            state["weight"] = self.weight.copy()
        if self.bias is not None:
            state["bias"] = self.bias.copy()
        if self.track_running_stats:
            state["running_mean"] = self.running_mean.copy()
            state["running_var"] = self.running_var.copy()
            state["num_batches_tracked"] = np.array(self.num_batches_tracked, dtype=np.int64)
        return state

    def load_state_dict(self, state_dict) -> None:
        """Load a state dict (NumPy arrays or torch tensors), checking keys and shapes.

        The keys must be exactly those :meth:`state_dict` gives (a torch
        ``BatchNorm*d``'s state dict with the same ``affine``, ``bias`` and
        ``track_running_stats`` fits), with one exception taken from torch's
        ``_NormBase._load_from_state_dict``: a state dict older than version 2
        (``state_dict._metadata[""]["version"] < 2``, or no version at all, as
        in a plain dict) may lack ``num_batches_tracked``, which then keeps the
        layer's current value (0 for a fresh layer).

        The values are copied into arrays of the layer's dtypes (a float32
        checkpoint loaded into a float64 layer stays float64), as torch copies
        into its existing tensors. Nothing is changed if a check fails.
        """
        state = dict(state_dict)
        version = (getattr(state_dict, "_metadata", None) or {}).get("", {}).get("version")
        if ((version is None or version < 2) and self.track_running_stats
                and "num_batches_tracked" not in state):
            state["num_batches_tracked"] = self.num_batches_tracked
        current = self.state_dict()
        expected, got = set(current), set(state)
        if got != expected:
            missing, unexpected = sorted(expected - got), sorted(got - expected)
            hint = ("; a checkpoint saved before num_batches_tracked existed loads when its "
                    "version is < 2 or absent, as in torch"
                    if missing == ["num_batches_tracked"] else "")
            raise KeyError(f"state dict keys do not match: missing {missing}, "
                           f"unexpected {unexpected}{hint}")
        arrays = {}
        for k, v in state.items():
            v = np.asarray(_to_numpy(v))
            want = () if k == "num_batches_tracked" else (self.num_features,)
            if v.shape != want:
                raise ValueError(f"{k} has shape {v.shape}, expected {want}")
            arrays[k] = int(v) if k == "num_batches_tracked" else v.astype(current[k].dtype)
        for k, v in arrays.items():
            setattr(self, k, v)

    def __repr__(self) -> str:
        extra = ""
        if self.momentum_convention != "torch" or not self.unbiased_running_var:
            extra = (f", momentum_convention={self.momentum_convention!r}, "
                     f"unbiased_running_var={self.unbiased_running_var}")
        return (f"BatchNorm({self.num_features}, eps={self.eps}, momentum={self.momentum}, "
                f"affine={self.affine}, bias={self.bias is not None}, "
                f"track_running_stats={self.track_running_stats}, "
                f"channel_axis={self.channel_axis}{extra})")


def _to_numpy(v):
    """An array from a NumPy array, a number or a torch tensor (without importing torch)."""
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return v
