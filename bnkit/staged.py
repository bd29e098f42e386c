r"""Training-mode batch normalization as a staged computational graph.

The forward pass is split into six elementary stages; the backward pass walks
them in reverse, applying each stage's local derivative (the chain rule done by
hand, the way an autograd engine would). For every channel :math:`c` (axis 1)
over its :math:`m` values in the batch:

.. math::

    \text{(1)}\ \mu = \frac{1}{m}\sum_i x_i, \quad
    \text{(2)}\ x_\mu = x - \mu, \quad
    \text{(3)}\ \sigma^2 = \frac{1}{m}\sum_i x_{\mu,i}^2, \quad
    \text{(4)}\ r = \frac{1}{\sqrt{\sigma^2 + \varepsilon}}, \quad
    \text{(5)}\ \hat x = x_\mu\, r, \quad
    \text{(6)}\ y = \gamma \hat x + \beta .

This is the *teaching* version: plain NumPy, every intermediate kept. The
closed form :func:`bnkit.numpy.batch_norm_backward` gives the same gradients
with fewer passes over the data and no cache.
"""

from __future__ import annotations

from typing import NamedTuple, Optional, Tuple

import numpy as np

from . import validation

__all__ = ["StagedCache", "staged_forward", "staged_backward"]


class StagedCache(NamedTuple):
    """Every intermediate of :func:`staged_forward` that :func:`staged_backward` needs.

    Per-channel vectors have shape ``(C,)``; full arrays have the shape of ``x``.
    """

    mean: np.ndarray        #: (C,)       stage 1, :math:`\mu`
    x_centered: np.ndarray  #: (N, C, \*) stage 2, :math:`x_\mu = x - \mu`
    var: np.ndarray         #: (C,)       stage 3, :math:`\sigma^2` (biased)
    invstd: np.ndarray      #: (C,)       stage 4, :math:`r = 1/\sqrt{\sigma^2 + \varepsilon}`
    xhat: np.ndarray        #: (N, C, \*) stage 5, :math:`\hat x`
    weight: np.ndarray      #: (C,)       :math:`\gamma` (ones when no weight was given)
    eps: float


def _reduce_axes(ndim: int) -> Tuple[int, ...]:
    """Every axis but the channel axis 1."""
    return (0,) + tuple(range(2, ndim))


def _bc(v: np.ndarray, ndim: int) -> np.ndarray:
    """A (C,) vector viewed as (1, C, 1, ..., 1) to broadcast against an ndim-D array."""
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def staged_forward(x, weight=None, bias=None, eps: float = 1e-5):
    r"""Training-mode batch normalization, one elementary stage at a time.

    Statistics are taken per channel (axis 1) over every other axis, so
    :math:`m = N` for ``(N, D)`` input and :math:`m = N H W` for ``(N, C, H, W)``.

    1. :math:`\mu = \frac{1}{m}\sum_i x_i`, shape (C,)
    2. :math:`x_\mu = x - \mu`, shape (N, C, \*)
    3. :math:`\sigma^2 = \frac{1}{m}\sum_i x_{\mu,i}^2` (biased), shape (C,)
    4. :math:`r = (\sigma^2 + \varepsilon)^{-1/2}`, shape (C,)
    5. :math:`\hat x = x_\mu\, r`, shape (N, C, \*)
    6. :math:`y = \gamma\,\hat x + \beta`, shape (N, C, \*)

    Parameters
    ----------
    x : ndarray of shape (N, D) or (N, C, \*)
        Floating-point input; channels on axis 1.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means ones and zeros.
    eps : float > 0, default 1e-5

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``
    cache : StagedCache
        The intermediates of stages 1--5 (and :math:`\gamma`), for :func:`staged_backward`.

    Raises
    ------
    TypeError
        ``x`` is not floating point.
    ValueError
        Rank < 2, ``weight``/``bias`` not of shape (C,), one value per channel,
        an empty batch, or ``eps <= 0``.
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"x must be a floating-point array (got dtype {x.dtype})")
    validation.check_input_rank(x.ndim)
    validation.check_eps(eps)
    c = x.shape[1]
    for name, v in (("weight", weight), ("bias", bias)):
        validation.check_channel_vector(name, None if v is None else np.shape(v), c)
    validation.check_training_batch(x.shape, 1)
    if x.size == 0:
        # the staged graph starts from the batch mean, which an empty batch does not have
        raise ValueError(f"staged_forward needs a non-empty batch (got input size {x.shape}); "
                         "bnkit.numpy.batch_norm handles empty batches as torch does")

    axes = _reduce_axes(x.ndim)
    gamma = np.ones(c, x.dtype) if weight is None else np.asarray(weight, x.dtype)
    mean = x.mean(axis=axes)                                   # 1: (C,)
    x_centered = x - _bc(mean, x.ndim)                         # 2: (N, C, *)
    var = (x_centered * x_centered).mean(axis=axes)            # 3: (C,)
    invstd = 1.0 / np.sqrt(var + eps)                          # 4: (C,)
    xhat = x_centered * _bc(invstd, x.ndim)                    # 5: (N, C, *)
    y = xhat * _bc(gamma, x.ndim)                              # 6: (N, C, *)
    if bias is not None:
        y = y + _bc(np.asarray(bias, x.dtype), x.ndim)
    cache = StagedCache(mean, x_centered, var, invstd, xhat, gamma, float(eps))
    return y.astype(x.dtype, copy=False), cache


def staged_backward(grad_y, cache: StagedCache):
    r"""Back-propagate through the six stages of :func:`staged_forward`, in reverse.

    With :math:`g = \partial L/\partial y` and a bar for
    :math:`\partial L/\partial(\cdot)`, sums over the :math:`m` values of a channel:

    - stage 6: :math:`\bar\beta = \sum_i g_i` and :math:`\bar\gamma = \sum_i g_i \hat x_i`,
      shape (C,); :math:`\bar{\hat x} = \gamma\, g`, shape (N, C, \*)
    - stage 5: :math:`\bar x_\mu = r\,\bar{\hat x}`, shape (N, C, \*);
      :math:`\bar r = \sum_i x_{\mu,i}\,\bar{\hat x}_i`, shape (C,)
    - stage 4: :math:`\overline{\sigma^2} = -\tfrac12 r^3\,\bar r`, shape (C,)
    - stage 3: :math:`\bar x_\mu \mathrel{+}= \tfrac{2}{m}\, x_\mu\,\overline{\sigma^2}`,
      shape (N, C, \*)
    - stage 2: :math:`\bar x = \bar x_\mu` and :math:`\bar\mu = -\sum_i \bar x_{\mu,i}`,
      shape (C,)
    - stage 1: :math:`\bar x \mathrel{+}= \tfrac{1}{m}\,\bar\mu`, shape (N, C, \*)

    :math:`x_\mu` feeds stages 3 and 5, and :math:`x` feeds stages 1 and 2, so
    their gradients are sums over both uses ("+=").

    Parameters
    ----------
    grad_y : ndarray, same shape as the forward ``x``
        :math:`\partial L/\partial y`.
    cache : StagedCache
        The second return value of :func:`staged_forward`.

    Returns
    -------
    grad_x : ndarray, same shape as ``x``
    grad_weight, grad_bias : ndarray of shape (C,)
        Returned even when the forward had no weight/bias (then they are the
        gradients of a weight of ones and a bias of zeros).

    Raises
    ------
    ValueError
        ``grad_y`` does not have the shape of the forward input.
    """
    grad_y = np.asarray(grad_y)
    x_centered, xhat = cache.x_centered, cache.xhat
    if grad_y.shape != xhat.shape:
        raise ValueError(f"grad_y has shape {grad_y.shape} but the forward input had "
                         f"shape {xhat.shape}")
    grad_y = grad_y.astype(xhat.dtype, copy=False)
    ndim = xhat.ndim
    axes = _reduce_axes(ndim)
    m = xhat.size // xhat.shape[1]

    # 6: y = gamma * xhat + beta
    grad_bias = grad_y.sum(axis=axes)
    grad_weight = (grad_y * xhat).sum(axis=axes)
    grad_xhat = grad_y * _bc(cache.weight, ndim)
    # 5: xhat = x_centered * invstd
    grad_xc = grad_xhat * _bc(cache.invstd, ndim)
    grad_invstd = (grad_xhat * x_centered).sum(axis=axes)
    # 4: invstd = (var + eps) ** -1/2
    grad_var = -0.5 * cache.invstd ** 3 * grad_invstd
    # 3: var = mean(x_centered ** 2)  -- second use of x_centered, so accumulate
    grad_xc = grad_xc + (2.0 / m) * x_centered * _bc(grad_var, ndim)
    # 2: x_centered = x - mean
    grad_x = grad_xc
    grad_mean = -grad_xc.sum(axis=axes)
    # 1: mean = (1/m) sum x  -- second use of x
    grad_x = grad_x + _bc(grad_mean / m, ndim)
    return grad_x, grad_weight, grad_bias
