r"""Batch normalization as pure NumPy functions.

For every channel :math:`c` (a column of an N x D matrix, a feature map of an
NCHW image) over the :math:`m` values the batch holds for it:

.. math::

    \mu_c = \frac{1}{m}\sum_i x_{ic}, \qquad
    \sigma^2_c = \frac{1}{m}\sum_i (x_{ic} - \mu_c)^2, \qquad
    \hat x_{ic} = \frac{x_{ic} - \mu_c}{\sqrt{\sigma^2_c + \varepsilon}}, \qquad
    y_{ic} = \gamma_c \hat x_{ic} + \beta_c .

The input is viewed as an array of shape ``(A, C, B)``: ``A`` is the product
of the axes before the channel axis *in memory*, ``B`` the product of those
after it. For NCHW that is ``(N, C, H*W)``; for channels-last NHWC it is
``(N*H*W, C, 1)``, and for an NHWC view of NCHW memory (``np.moveaxis``) it
is ``(N, C, H*W)`` again: an input whose axes are a permutation of a
contiguous array's is read where it lies, without a copy, and the output is
laid out like it; any other input is copied once. The reductions run over axes 0 and 2 of that view, in blocks of rows that fit
in the CPU cache, so each element is read from memory as few times as
possible; partial sums are accumulated in float64, so float32 inputs whose
mean dwarfs their spread stay accurate. A block is computed in the input's
dtype but at least float32, so float16 sums do not overflow; outputs come back
in the input's dtype (the dtype policy is in :mod:`bnkit.numpy`).

Counted in passes over memory (Chapter 9, :mod:`bnkit.roofline`): the
training forward reads ``x`` twice (statistics, then normalizing) and writes
``y`` once, the minimum; :func:`batch_norm_backward` reads ``x`` once to
recompute the statistics (it is given ``x``, not the statistics), then ``g``
and ``x`` twice, and writes the gradient once.
"""

from __future__ import annotations

import math
from typing import List, Tuple

import numpy as np

from .. import _checks
from ..conventions import update_moving_stats

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_eval_backward",
    "batch_norm_training",
    "batch_statistics",
    "normalize",
    "update_running_stats",
]

# Bytes of input per block: small enough to stay in a core's L2 cache.
_BLOCK_BYTES = 1 << 19


# ----------------------------------------------------------------------------- helpers
def _as_float_array(x, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array (got dtype {x.dtype})")
    return x


def _compute_dtype(dtype) -> np.dtype:
    """The dtype a block is computed in: the input's, but at least float32 (float16 -> float32).

    float16 holds values up to 65504 with 11 significant bits: its sums and its
    products with per-channel factors are formed in float32, like torch's "opmath" type.
    """
    return np.promote_types(dtype, np.float32)


def _grad_dtype(x: np.ndarray, weight) -> np.dtype:
    """A parameter gradient has the parameter's dtype (torch's rule); the input's without weight."""
    return x.dtype if weight is None else np.asarray(weight).dtype


def _memory_order(x: np.ndarray) -> Tuple[int, ...]:
    """The axes of ``x`` from the outermost in memory to the innermost (decreasing strides)."""
    return tuple(sorted(range(x.ndim), key=lambda i: -x.strides[i]))


def _channel_view(x: np.ndarray, axis: int, order=None) -> Tuple[np.ndarray, Tuple[int, ...]]:
    """``x`` as an ``(A, C, B)`` array with the channel axis in the middle, and the axis order.

    The axes are taken in ``order`` (default: ``x``'s memory order), ``A`` being
    the product of those before the channel axis and ``B`` of those after it;
    the statistics do not depend on the order the values are visited in. No
    copy is made when ``x`` is a contiguous array with its axes permuted (NCHW
    memory seen as NHWC through ``np.moveaxis``, say), one otherwise.
    """
    if order is None:
        order = _memory_order(x)
    xt = np.ascontiguousarray(x.transpose(order))
    p = order.index(axis)
    return xt.reshape(math.prod(xt.shape[:p]), xt.shape[p], math.prod(xt.shape[p + 1:])), order


def _from_channel_view(y3: np.ndarray, shape, order) -> np.ndarray:
    """Inverse of :func:`_channel_view`: an ``(A, C, B)`` result as an array of ``shape``
    (laid out in memory like the input it was computed from)."""
    return y3.reshape(tuple(shape[i] for i in order)).transpose(np.argsort(order))


def _blocks(x3: np.ndarray) -> List[slice]:
    """Slices of axis 0 of ``x3`` whose blocks are about ``_BLOCK_BYTES`` each."""
    itemsize = _compute_dtype(x3.dtype).itemsize   # float16 blocks are computed in float32
    row_bytes = max(1, x3.shape[1] * x3.shape[2] * itemsize)
    step = max(1, _BLOCK_BYTES // row_bytes)
    return [slice(start, start + step) for start in range(0, x3.shape[0], step)]


# Rows longer than this are summed with np.einsum (NumPy's own loop) rather than with a
# BLAS dot product, which OpenBLAS would split over threads (the result would then depend
# on the thread count).
_MAX_DOT = 8192


def _row_dot(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Sum over the last axis of ``u * v`` (broadcast), in the inputs' dtype."""
    if hasattr(np, "vecdot") and u.shape[-1] <= _MAX_DOT:   # NumPy >= 2: a dot per row
        return np.vecdot(u, v)
    return np.einsum("...b,...b->...", *np.broadcast_arrays(u, v))


def _sum_ab(block: np.ndarray) -> np.ndarray:
    """Per-channel sum of an ``(a, C, b)`` block, returned in float64.

    Within a cache-sized block the sum runs in the block's compute dtype (along
    the contiguous axis first); blocks are then added in float64.
    """
    dtype = _compute_dtype(block.dtype)
    if block.shape[2] == 1:
        return block[:, :, 0].sum(axis=0, dtype=dtype).astype(np.float64)
    ones = np.ones(block.shape[2], dtype)
    return _row_dot(block, ones).sum(axis=0, dtype=np.float64)


def _dot_ab(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``u * v`` for two ``(a, C, b)`` blocks, returned in float64.

    Computed in the wider dtype of the two (callers pass at least one float32 block).
    """
    if u.shape[2] == 1:
        return np.einsum("ac,ac->c", u[:, :, 0], v[:, :, 0]).astype(np.float64)
    return _row_dot(u, v).sum(axis=0, dtype=np.float64)


def _per_channel(v, num_channels: int, dtype) -> np.ndarray:
    """A per-channel vector as a ``(1, C, 1)`` array of ``dtype`` (``None`` -> ``None``)."""
    if v is None:
        return None
    return np.asarray(v, dtype=dtype).reshape(1, num_channels, 1)


def _check_vectors(num_channels: int, **vectors) -> None:
    for name, v in vectors.items():
        _checks.check_channel_vector(name, None if v is None else np.shape(v), num_channels)


# ----------------------------------------------------------------------------- forward
def batch_statistics(x, channel_axis: int = 1) -> Tuple[np.ndarray, np.ndarray]:
    r"""Per-channel batch mean and *biased* variance.

    .. math::

        \mu_c = \frac{1}{m}\sum_i x_{ic}, \qquad
        \sigma^2_c = \frac{1}{m}\sum_i (x_{ic} - \mu_c)^2

    Sums of deviations from a shift :math:`s` close to the mean, accumulated in
    float64 (see ``_statistics``): the textbook :math:`E[x^2] - E[x]^2` loses
    every digit when the mean dwarfs the spread; deviations from :math:`s` do not.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...) (or with the channels on ``channel_axis``)
        Floating-point input of rank >= 2.
    channel_axis : int, default 1
        The axis holding the channels; ``-1`` for channels-last (NHWC).

    Returns
    -------
    mean, var : ndarray of shape (C,), dtype of ``x``
        Batch mean and biased batch variance of every channel; NaN for an
        empty batch (no values, no statistics).
    """
    x = _as_float_array(x)
    _checks.check_input_rank(x.ndim)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    mean, var = _statistics(_channel_view(x, axis)[0])
    return mean.astype(x.dtype), var.astype(x.dtype)


def _statistics(x3: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    r"""float64 (mean, biased var) of an ``(A, C, B)`` view, reading it from memory once.

    The shift :math:`s_c` is the mean of the first block. Each block, while it
    is in the cache, adds :math:`S_1 = \sum (x - s)` and
    :math:`S_2 = \sum (x - s)^2` to float64 totals; then

    .. math:: \mu = s + \frac{S_1}{m}, \qquad
              \sigma^2 = \frac{S_2}{m} - \Big(\frac{S_1}{m}\Big)^2 .

    Both identities are exact; as :math:`s` is close to :math:`\mu`, the
    deviations are of the order of the spread and the subtraction loses no
    digits, even when the mean dwarfs the spread.
    """
    m = x3.shape[0] * x3.shape[2]
    if m == 0:                                          # an empty batch: no statistics
        return np.full(x3.shape[1], np.nan), np.full(x3.shape[1], np.nan)
    blocks = _blocks(x3)
    first = x3[blocks[0]]
    shift = (_sum_ab(first) / (first.shape[0] * first.shape[2])).astype(_compute_dtype(x3.dtype))
    shift3 = shift.reshape(1, -1, 1)                    # x - s is formed in the compute dtype
    s1 = s2 = 0.0
    for s in blocks:
        d = x3[s] - shift3
        s1 = s1 + _sum_ab(d)
        s2 = s2 + _dot_ab(d, d)
    offset = s1 / m                                     # mu - s
    var = np.maximum(s2 / m - offset * offset, 0.0)
    return shift.astype(np.float64) + offset, var


def normalize(x, mean, var, weight=None, bias=None, eps: float = 1e-5,
              channel_axis: int = 1) -> np.ndarray:
    r"""Normalize with given statistics: :math:`y = \gamma (x - \mu)/\sqrt{\sigma^2 + \varepsilon} + \beta`.

    The eval-mode transform (``mean``, ``var`` = running statistics) and the
    second half of the training-mode one (``mean``, ``var`` = batch statistics).

    Parameters
    ----------
    x : ndarray of shape (N, C, ...)
        Floating-point input.
    mean, var : array_like of shape (C,)
        Statistics to normalize with.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.
    eps : float, default 1e-5
        Added to the variance.
    channel_axis : int, default 1

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
    """
    x = _as_float_array(x)
    _checks.check_input_rank(x.ndim)
    _checks.check_eps(eps)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    c = x.shape[axis]
    _check_vectors(c, mean=mean, var=var, weight=weight, bias=bias)
    return _normalize(x, axis, np.asarray(mean, np.float64), np.asarray(var, np.float64),
                      weight, bias, eps)


def _normalize(x: np.ndarray, axis: int, mean: np.ndarray, var: np.ndarray,
               weight, bias, eps: float) -> np.ndarray:
    x3, order = _channel_view(x, axis)
    return _from_channel_view(_normalize3(x3, mean, var, weight, bias, eps), x.shape, order)


def _normalize3(x3: np.ndarray, mean: np.ndarray, var: np.ndarray, weight, bias,
                eps: float) -> np.ndarray:
    """The normalize step on an ``(A, C, B)`` view; returns a new ``(A, C, B)`` array."""
    c = x3.shape[1]
    # y = gamma (x - mu) / sqrt(var + eps) + beta = x * scale + shift: two operations
    scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * np.asarray(weight, np.float64)
    shift = -mean * scale
    if bias is not None:
        shift = shift + np.asarray(bias, np.float64)
    dtype = _compute_dtype(x3.dtype)
    scale3 = _per_channel(scale, c, dtype)
    shift3 = _per_channel(shift, c, dtype)
    y3 = np.empty_like(x3)
    for s in _blocks(x3):
        if dtype == x3.dtype:
            out = y3[s]
            np.multiply(x3[s], scale3, out=out)
            out += shift3
        else:                               # float16: x * a + b in float32, rounded once
            t = x3[s] * scale3
            t += shift3
            y3[s] = t
    return y3


def update_running_stats(running_mean, running_var, mean, var, m: int,
                         momentum: float) -> None:
    r"""Update running statistics in place, in PyTorch's convention.

    .. math::

        \hat\mu \leftarrow (1 - \text{momentum})\,\hat\mu + \text{momentum}\,\mu_\mathcal{B}, \qquad
        \hat\sigma^2 \leftarrow (1 - \text{momentum})\,\hat\sigma^2
            + \text{momentum}\,\frac{m}{m-1}\sigma^2_\mathcal{B}

    The stored variance is the *unbiased* estimate (factor :math:`m/(m-1)`).
    The PyTorch case of :func:`bnkit.conventions.update_moving_stats`.

    Parameters
    ----------
    running_mean, running_var : ndarray of shape (C,), or None
        Updated in place (skipped when ``None``).
    mean, var : ndarray of shape (C,)
        Batch mean and biased batch variance.
    m : int
        Values per channel in the batch (> 1).
    momentum : float in [0, 1]
    """
    update_moving_stats(running_mean, running_var, mean, var, m, momentum,
                        convention="torch", unbiased=True)


def batch_norm(x, running_mean=None, running_var=None, weight=None, bias=None,
               training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
               channel_axis: int = 1) -> np.ndarray:
    r"""Batch normalization, the NumPy twin of :func:`torch.nn.functional.batch_norm`.

    .. math::

        y = \gamma\,\frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}} + \beta

    In training mode :math:`\mu, \sigma^2` are the batch mean and *biased*
    batch variance of each channel, and ``running_mean``/``running_var`` (when
    given) are updated in place with :func:`update_running_stats`. In eval mode
    the running statistics are used and nothing is updated. An empty batch
    (a zero-size axis, e.g. N = 0 at the end of a sharded dataset) gives an
    empty output and leaves the running statistics as they are, as in PyTorch.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...)
        Floating-point input of rank >= 2 (float16 and float32 stay what they are).
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics; required in eval mode, updated in place (in their
        own dtype) in training mode.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.
    training : bool, default False
        Use batch statistics (and update the running ones).
    momentum : float in [0, 1], default 0.1
        Weight of the new batch in the running update (PyTorch's convention).
    eps : float > 0, default 1e-5
    channel_axis : int, default 1
        The axis of the channels: 1 for (N, C, ...) like PyTorch, -1 for
        channels-last (N, ..., C) like Keras' ``axis=-1``.

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Raises
    ------
    TypeError
        ``x`` is not floating point.
    ValueError
        Rank < 2, a per-channel vector of the wrong length, one value per
        channel in training, ``eps <= 0``, ``momentum`` outside [0, 1], or
        eval mode without running statistics. Nothing is updated then.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> x = np.array([[1.0, 10.0], [3.0, 30.0]])
    >>> bnp.batch_norm(x, training=True, eps=1e-12).round(6)
    array([[-1., -1.],
           [ 1.,  1.]])
    """
    x = _as_float_array(x)
    _checks.check_input_rank(x.ndim)
    _checks.check_eps(eps)
    _checks.check_momentum(momentum)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    c = x.shape[axis]
    _check_vectors(c, running_mean=running_mean, running_var=running_var,
                   weight=weight, bias=bias)
    if training:
        _checks.check_training_batch(x.shape, axis)
        y, mean, var = _batch_norm_training(x, axis, weight, bias, eps)
        update_running_stats(running_mean, running_var, mean, var,
                             _values_per_channel(x.shape, axis), momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var; "
                         "pass training=True to normalize with batch statistics")
    return _normalize(x, axis, np.asarray(running_mean, np.float64),
                      np.asarray(running_var, np.float64), weight, bias, eps)


def batch_norm_training(x, weight=None, bias=None, eps: float = 1e-5, channel_axis: int = 1):
    r"""Training-mode batch normalization that also returns the batch statistics it used.

    The computation of :func:`batch_norm` with ``training=True``, without the
    running statistics: a layer that keeps its own (in another convention, say)
    updates them from the returned ``mean`` and ``var``, which are the float64
    sums before any rounding to the input's dtype.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...)
        Floating-point input of rank >= 2.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.
    eps : float > 0, default 1e-5
    channel_axis : int, default 1

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
    mean, var : ndarray of shape (C,), float64
        The batch mean and biased batch variance; NaN for an empty batch.

    Raises
    ------
    TypeError, ValueError
        As :func:`batch_norm` in training mode.
    """
    x = _as_float_array(x)
    _checks.check_input_rank(x.ndim)
    _checks.check_eps(eps)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    _check_vectors(x.shape[axis], weight=weight, bias=bias)
    _checks.check_training_batch(x.shape, axis)
    return _batch_norm_training(x, axis, weight, bias, eps)


def _batch_norm_training(x: np.ndarray, axis: int, weight, bias, eps: float):
    """(y, float64 mean, float64 biased var) of checked arguments; ``x`` viewed once."""
    x3, order = _channel_view(x, axis)
    mean, var = _statistics(x3)
    y3 = _normalize3(x3, mean, var, weight, bias, eps)
    return _from_channel_view(y3, x.shape, order), mean, var


def _values_per_channel(shape, axis: int) -> int:
    """m: how many values each channel holds (0 for an empty batch)."""
    return math.prod(d for i, d in enumerate(shape) if i != axis)


# ----------------------------------------------------------------------------- backward
def batch_norm_backward(grad_y, x, weight=None, eps: float = 1e-5,
                        channel_axis: int = 1):
    r"""Gradients of training-mode batch normalization, in closed form.

    With :math:`\hat x = (x - \mu)/\sqrt{\sigma^2 + \varepsilon}` (batch
    statistics recomputed from ``x``), :math:`m` values per channel and
    :math:`g = \partial L/\partial y`:

    .. math::

        \frac{\partial L}{\partial \beta_c} = \sum_i g_{ic}, \qquad
        \frac{\partial L}{\partial \gamma_c} = \sum_i g_{ic}\,\hat x_{ic}, \qquad
        \frac{\partial L}{\partial x_{ic}} = \frac{\gamma_c}{m\sqrt{\sigma^2_c + \varepsilon}}
            \Big(m\,g_{ic} - \frac{\partial L}{\partial \beta_c}
                 - \hat x_{ic}\,\frac{\partial L}{\partial \gamma_c}\Big).

    The sums :math:`\sum_i` run over every value of channel :math:`c`.

    Parameters
    ----------
    grad_y : ndarray, same shape as ``x``
        :math:`\partial L/\partial y`.
    x : ndarray of shape (N, C, ...)
        The forward input.
    weight : array_like of shape (C,), optional
        :math:`\gamma` (``None`` means 1).
    eps : float > 0, default 1e-5
    channel_axis : int, default 1

    Returns
    -------
    grad_x : ndarray, same shape and dtype as ``x``
    grad_weight, grad_bias : ndarray of shape (C,)
        In the dtype of ``weight`` (a gradient has its parameter's dtype, as in
        torch), of ``x`` when ``weight`` is ``None``; then they are what the
        gradients of a weight of ones and a bias of zeros would be. Zeros for
        an empty batch, as in PyTorch.
    """
    x = _as_float_array(x)
    grad_y = _as_float_array(grad_y, "grad_y")
    _checks.check_input_rank(x.ndim)
    _checks.check_eps(eps)
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y has shape {grad_y.shape} but x has shape {x.shape}")
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    c = x.shape[axis]
    _check_vectors(c, weight=weight)
    _checks.check_training_batch(x.shape, axis)
    if x.size == 0:          # an empty batch: an empty gradient, sums over nothing are 0
        return np.empty_like(x), np.zeros(c, _grad_dtype(x, weight)), np.zeros(
            c, _grad_dtype(x, weight))

    x3, order = _channel_view(x, axis)
    g3, _ = _channel_view(grad_y.astype(x.dtype, copy=False), axis, order)
    m = x3.shape[0] * x3.shape[2]
    mean, var = _statistics(x3)
    invstd = 1.0 / np.sqrt(var + eps)
    dtype = _compute_dtype(x.dtype)
    mean3 = _per_channel(mean, c, dtype)

    sum_g = np.zeros(c)
    sum_g_xc = np.zeros(c)                  # sum of g * (x - mu)
    for s in _blocks(x3):
        sum_g += _sum_ab(g3[s])
        sum_g_xc += _dot_ab(g3[s], x3[s] - mean3)
    sum_g_xhat = sum_g_xc * invstd

    # grad_x = k (g - sum_g/m - xhat sum_g_xhat/m) with k = gamma invstd, written as
    # k g + c_x x + c_0: with c_x = -k invstd sum_g_xhat/m and c_0 = -k sum_g/m - c_x mu
    gamma = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    k = gamma * invstd
    c_x = -k * invstd * sum_g_xhat / m
    c_0 = -k * sum_g / m - c_x * mean
    k3, c_x3, c_03 = (_per_channel(v, c, dtype) for v in (k, c_x, c_0))
    grad_x3 = np.empty_like(x3)
    for s in _blocks(x3):
        if dtype == x.dtype:
            out = grad_x3[s]
            np.multiply(x3[s], c_x3, out=out)
            out += c_03
            out += k3 * g3[s]
        else:                               # float16: formed in float32, rounded once
            t = x3[s] * c_x3
            t += c_03
            t += k3 * g3[s]
            grad_x3[s] = t
    gdt = _grad_dtype(x, weight)
    return (_from_channel_view(grad_x3, x.shape, order), sum_g_xhat.astype(gdt),
            sum_g.astype(gdt))


def batch_norm_eval_backward(grad_y, x, running_mean, running_var, weight=None,
                             eps: float = 1e-5, channel_axis: int = 1):
    r"""Gradients of eval-mode batch normalization (statistics are constants).

    .. math::

        \frac{\partial L}{\partial x_{ic}} = \frac{\gamma_c\, g_{ic}}{\sqrt{\hat\sigma^2_c + \varepsilon}},
        \qquad \frac{\partial L}{\partial \gamma_c} = \sum_i g_{ic}\hat x_{ic}, \qquad
        \frac{\partial L}{\partial \beta_c} = \sum_i g_{ic}

    with :math:`\hat x` normalized by the running statistics.

    Returns
    -------
    grad_x, grad_weight, grad_bias : as in :func:`batch_norm_backward`
    """
    x = _as_float_array(x)
    grad_y = _as_float_array(grad_y, "grad_y")
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y has shape {grad_y.shape} but x has shape {x.shape}")
    _checks.check_input_rank(x.ndim)
    _checks.check_eps(eps)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    c = x.shape[axis]
    _check_vectors(c, running_mean=running_mean, running_var=running_var, weight=weight)
    x3, order = _channel_view(x, axis)
    g3, _ = _channel_view(grad_y.astype(x.dtype, copy=False), axis, order)
    invstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)
    gamma = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    dtype = _compute_dtype(x.dtype)
    xhat3 = (x3 - _per_channel(running_mean, c, dtype)) * _per_channel(invstd, c, dtype)
    grad_x3 = (g3 * _per_channel(gamma * invstd, c, dtype)).astype(x.dtype, copy=False)
    gdt = _grad_dtype(x, weight)
    return (_from_channel_view(grad_x3, x.shape, order), _dot_ab(g3, xhat3).astype(gdt),
            _sum_ab(g3).astype(gdt))

