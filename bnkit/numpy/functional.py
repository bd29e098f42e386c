r"""Batch normalization as pure NumPy functions.

For every channel :math:`c` (a column of an N x D matrix, a feature map of an
NCHW image) over the :math:`m` values the batch holds for it:

.. math::

    \mu_c = \frac{1}{m}\sum_i x_{ic}, \qquad
    \sigma^2_c = \frac{1}{m}\sum_i (x_{ic} - \mu_c)^2, \qquad
    \hat x_{ic} = \frac{x_{ic} - \mu_c}{\sqrt{\sigma^2_c + \varepsilon}}, \qquad
    y_{ic} = \gamma_c \hat x_{ic} + \beta_c .

The input is viewed as an array of shape ``(A, C, B)``: ``A`` is the product
of the axes before the channel axis, ``B`` the product of those after it.
For NCHW that is ``(N, C, H*W)``; for channels-last NHWC it is ``(N*H*W, C, 1)``.
The reductions run over axes 0 and 2 of that view, in blocks of rows that fit
in the CPU cache, so each element is read from memory as few times as
possible; partial sums are accumulated in float64, so float32 inputs whose
mean dwarfs their spread stay accurate.
"""

from __future__ import annotations

import math
from typing import Iterator, Optional, Tuple

import numpy as np

from .. import _checks
from ..conventions import update_moving_stats

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_eval_backward",
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


def _channel_view(x: np.ndarray, axis: int) -> np.ndarray:
    """View ``x`` as ``(A, C, B)`` with the channel axis in the middle."""
    a = math.prod(x.shape[:axis])
    b = math.prod(x.shape[axis + 1:])
    return np.ascontiguousarray(x).reshape(a, x.shape[axis], b)


def _blocks(x3: np.ndarray) -> Iterator[slice]:
    """Slices of axis 0 of ``x3`` whose blocks are about ``_BLOCK_BYTES`` each."""
    row_bytes = max(1, x3.shape[1] * x3.shape[2] * x3.itemsize)
    step = max(1, _BLOCK_BYTES // row_bytes)
    for start in range(0, x3.shape[0], step):
        yield slice(start, start + step)


def _sum_ab(block: np.ndarray) -> np.ndarray:
    """Per-channel sum of an ``(a, C, b)`` block, returned in float64.

    Within a cache-sized block the sum runs in the block's dtype (pairwise
    along the contiguous axis); blocks are then added in float64.
    """
    if block.shape[2] == 1:
        return block[:, :, 0].sum(axis=0).astype(np.float64)
    return block.sum(axis=2).sum(axis=0, dtype=np.float64)


def _dot_ab(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """Per-channel sum of ``u * v`` for two ``(a, C, b)`` blocks, returned in float64."""
    if u.shape[2] == 1:
        return np.einsum("ac,ac->c", u[:, :, 0], v[:, :, 0]).astype(np.float64)
    return np.einsum("acb,acb->ac", u, v).sum(axis=0, dtype=np.float64)


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

    Two passes (mean first, then squared deviations from it), each accumulated
    in float64: the textbook one-pass :math:`E[x^2] - E[x]^2` loses every digit
    when the mean dwarfs the spread.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...) (or with the channels on ``channel_axis``)
        Floating-point input of rank >= 2.
    channel_axis : int, default 1
        The axis holding the channels; ``-1`` for channels-last (NHWC).

    Returns
    -------
    mean, var : ndarray of shape (C,), dtype of ``x``
        Batch mean and biased batch variance of every channel.
    """
    x = _as_float_array(x)
    _checks.check_input_rank(x.ndim)
    axis = _checks.normalize_channel_axis(channel_axis, x.ndim)
    mean, var = _statistics(_channel_view(x, axis))
    return mean.astype(x.dtype), var.astype(x.dtype)


def _statistics(x3: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """float64 (mean, biased var) of an ``(A, C, B)`` view.

    The first pass sums ``x - s`` with ``s`` the first value of each channel
    (shifted data), so partial sums stay of the order of the spread even when
    the mean dwarfs it; the second pass sums squared deviations from the mean.
    """
    m = x3.shape[0] * x3.shape[2]
    shift = x3[:1, :, :1].copy()
    total = np.zeros(x3.shape[1])
    for s in _blocks(x3):
        total += _sum_ab(x3[s] - shift)
    mean = shift[0, :, 0].astype(np.float64) + total / m
    mean_x = mean.astype(x3.dtype).reshape(1, -1, 1)
    squares = np.zeros(x3.shape[1])
    for s in _blocks(x3):
        centered = x3[s] - mean_x
        squares += _dot_ab(centered, centered)
    return mean, squares / m


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
    x3 = _channel_view(x, axis)
    c = x3.shape[1]
    scale = 1.0 / np.sqrt(var + eps)
    if weight is not None:
        scale = scale * np.asarray(weight, np.float64)
    mean3 = _per_channel(mean, c, x.dtype)
    scale3 = _per_channel(scale, c, x.dtype)
    bias3 = _per_channel(bias, c, x.dtype)
    y3 = np.empty_like(x3)
    for s in _blocks(x3):
        out = y3[s]
        np.subtract(x3[s], mean3, out=out)
        out *= scale3
        if bias3 is not None:
            out += bias3
    return y3.reshape(x.shape)


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
    the running statistics are used and nothing is updated.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...)
        Floating-point input of rank >= 2 (float32 stays float32).
    running_mean, running_var : ndarray of shape (C,), optional
        Running statistics; required in eval mode, updated in training mode.
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
        mean, var = _statistics(_channel_view(x, axis))
        y = _normalize(x, axis, mean, var, weight, bias, eps)
        update_running_stats(running_mean, running_var, mean, var, x.size // c, momentum)
        return y
    if running_mean is None or running_var is None:
        raise ValueError("eval mode (training=False) needs running_mean and running_var; "
                         "pass training=True to normalize with batch statistics")
    return _normalize(x, axis, np.asarray(running_mean, np.float64),
                      np.asarray(running_var, np.float64), weight, bias, eps)


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
    grad_weight, grad_bias : ndarray of shape (C,), dtype of ``x``
        Returned even when ``weight`` is ``None`` (then they are what the
        gradients of a weight of ones and a bias of zeros would be).
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

    x3 = _channel_view(x, axis)
    g3 = _channel_view(grad_y.astype(x.dtype, copy=False), axis)
    m = x3.shape[0] * x3.shape[2]
    mean, var = _statistics(x3)
    invstd = 1.0 / np.sqrt(var + eps)
    mean3 = _per_channel(mean, c, x.dtype)
    invstd3 = _per_channel(invstd, c, x.dtype)

    sum_g = np.zeros(c)
    sum_g_xhat = np.zeros(c)
    for s in _blocks(x3):
        xhat = (x3[s] - mean3) * invstd3
        sum_g += _sum_ab(g3[s])
        sum_g_xhat += _dot_ab(g3[s], xhat)

    gamma = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    k3 = _per_channel(gamma * invstd, c, x.dtype)
    g_mean3 = _per_channel(sum_g / m, c, x.dtype)
    gx_mean3 = _per_channel(sum_g_xhat / m, c, x.dtype)
    grad_x3 = np.empty_like(x3)
    for s in _blocks(x3):
        out = grad_x3[s]
        np.subtract(x3[s], mean3, out=out)
        out *= invstd3                      # out = xhat
        out *= gx_mean3                     # xhat * mean(g * xhat)
        np.subtract(g3[s] - g_mean3, out, out=out)
        out *= k3
    return (grad_x3.reshape(x.shape), sum_g_xhat.astype(x.dtype), sum_g.astype(x.dtype))


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
    x3 = _channel_view(x, axis)
    g3 = _channel_view(grad_y.astype(x.dtype, copy=False), axis)
    invstd = 1.0 / np.sqrt(np.asarray(running_var, np.float64) + eps)
    gamma = np.ones(c) if weight is None else np.asarray(weight, np.float64)
    xhat3 = (x3 - _per_channel(running_mean, c, x.dtype)) * _per_channel(invstd, c, x.dtype)
    grad_x3 = g3 * _per_channel(gamma * invstd, c, x.dtype)
    return (grad_x3.reshape(x.shape), _dot_ab(g3, xhat3).astype(x.dtype),
            _sum_ab(g3).astype(x.dtype))

