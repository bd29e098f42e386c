r"""The two conventions for the running statistics: PyTorch's and Keras'.

Both frameworks keep an exponential moving average (EMA) of the batch
statistics, but they name its parameter from opposite ends and store a
different variance:

* ``"torch"`` (PyTorch): :math:`r \leftarrow (1 - m)\,r + m\,s_\mathcal{B}`,
  default ``momentum=0.1``, ``eps=1e-5``, stores the *unbiased* batch variance
  :math:`\frac{n}{n-1}\sigma^2_\mathcal{B}`.
* ``"keras"`` (Keras 3): :math:`r \leftarrow m\,r + (1 - m)\,s_\mathcal{B}`,
  default ``momentum=0.99``, ``epsilon=1e-3``, stores the *biased* batch
  variance :math:`\sigma^2_\mathcal{B}`.

Here :math:`r` is a running (PyTorch) or moving (Keras) statistic,
:math:`s_\mathcal{B}` the batch's mean or variance and :math:`n` the number of
values per channel in the batch. PyTorch's ``momentum`` is the weight of the
*new* batch, Keras' the weight of the *old* average, so the same EMA has
:math:`m_\text{torch} = 1 - m_\text{keras}` (:func:`keras_momentum_to_torch`).
The stored variances differ by the factor :math:`n/(n-1)` (Bessel's
correction): 2 for a batch of 2 values, 1.03 for 32, 1.004 for 256.

Everything here is pure NumPy (no torch, no Keras). :class:`bnkit.numpy.BatchNorm`
runs either convention through ``momentum_convention`` and
``unbiased_running_var``.
"""

from __future__ import annotations

from typing import Dict, Optional, Tuple

import numpy as np

from . import _checks

__all__ = [
    "CONVENTIONS",
    "DEFAULTS",
    "keras_momentum_to_torch",
    "torch_momentum_to_keras",
    "new_batch_weight",
    "stores_unbiased_variance",
    "update_moving_stats",
    "running_stats_after_identical_batches",
]

#: The two conventions, by name.
CONVENTIONS = ("torch", "keras")

#: The defaults of each framework. ``momentum`` in its own convention, ``eps``, and
#: whether the running variance is stored unbiased.
DEFAULTS: Dict[str, Dict[str, object]] = {
    "torch": {"momentum": 0.1, "eps": 1e-5, "unbiased": True},
    "keras": {"momentum": 0.99, "eps": 1e-3, "unbiased": False},
}


def _check_convention(convention: str) -> None:
    if convention not in CONVENTIONS:
        raise ValueError(f"convention must be one of {CONVENTIONS} (got {convention!r})")


def keras_momentum_to_torch(momentum: float) -> float:
    r"""PyTorch's ``momentum`` for the EMA that Keras calls ``momentum``: :math:`1 - m`.

    Keras' ``momentum=0.99`` (weight of the old average) is PyTorch's
    ``momentum=0.01`` (weight of the new batch).

    Parameters
    ----------
    momentum : float in [0, 1]
        Keras' momentum.

    Returns
    -------
    float
        ``1 - momentum``.

    Examples
    --------
    >>> from bnkit.conventions import keras_momentum_to_torch
    >>> round(keras_momentum_to_torch(0.99), 12)
    0.01
    """
    _checks.check_momentum(momentum)
    return 1.0 - momentum


def torch_momentum_to_keras(momentum: float) -> float:
    r"""Keras' ``momentum`` for the EMA that PyTorch calls ``momentum``: :math:`1 - m`.

    The inverse of :func:`keras_momentum_to_torch` (the map is its own inverse).

    Examples
    --------
    >>> from bnkit.conventions import torch_momentum_to_keras
    >>> torch_momentum_to_keras(0.1)
    0.9
    """
    _checks.check_momentum(momentum)
    return 1.0 - momentum


def new_batch_weight(momentum: float, convention: str = "torch") -> float:
    r"""The weight :math:`w` of the new batch in :math:`r \leftarrow (1 - w)\,r + w\,s_\mathcal{B}`.

    ``momentum`` itself in PyTorch's convention, ``1 - momentum`` in Keras'.
    """
    _check_convention(convention)
    _checks.check_momentum(momentum)
    return momentum if convention == "torch" else 1.0 - momentum


def stores_unbiased_variance(convention: str) -> bool:
    """Whether a framework stores the unbiased batch variance: True for torch, False for Keras 3."""
    _check_convention(convention)
    return bool(DEFAULTS[convention]["unbiased"])


def update_moving_stats(running_mean, running_var, mean, var, m: int, momentum: float,
                        convention: str = "torch", unbiased: Optional[bool] = None) -> None:
    r"""Update running (moving) statistics in place, in either convention.

    PyTorch's convention (``momentum`` :math:`=m` weighs the new batch):

    .. math::

        r \leftarrow (1 - m)\,r + m\,s_\mathcal{B}

    Keras' convention (``momentum`` :math:`=m` weighs the old average, computed
    as Keras 3 writes it):

    .. math::

        r \leftarrow m\,r + (1 - m)\,s_\mathcal{B}

    for :math:`r` = the running mean with :math:`s_\mathcal{B} = \mu_\mathcal{B}`,
    and :math:`r` = the running variance with :math:`s_\mathcal{B} =
    \frac{m_\mathcal{B}}{m_\mathcal{B} - 1}\sigma^2_\mathcal{B}` (unbiased) or
    :math:`\sigma^2_\mathcal{B}` (biased), where :math:`m_\mathcal{B}` = ``m``
    values per channel.

    Parameters
    ----------
    running_mean, running_var : ndarray of shape (C,), or None
        Updated in place (skipped when ``None``).
    mean, var : array_like of shape (C,)
        The batch mean and *biased* batch variance.
    m : int
        Values per channel in the batch (N, or N*H*W); must be > 1 when the
        unbiased variance is stored. ``m = 0`` (an empty batch) changes nothing,
        as in PyTorch.
    momentum : float in [0, 1]
        In the chosen convention.
    convention : {"torch", "keras"}, default "torch"
    unbiased : bool or None, default None
        Store the unbiased variance. ``None`` takes the convention's default:
        True for ``"torch"`` (PyTorch), False for ``"keras"`` (Keras 3 stores the
        biased batch variance).

    Raises
    ------
    ValueError
        Unknown convention, momentum outside [0, 1], or ``m = 1`` with an
        unbiased variance. Nothing is updated then.

    Examples
    --------
    >>> import numpy as np
    >>> from bnkit.conventions import update_moving_stats
    >>> rm, rv = np.zeros(1), np.ones(1)
    >>> update_moving_stats(rm, rv, np.array([2.0]), np.array([4.0]), m=2,
    ...                     momentum=0.99, convention="keras")
    >>> rm.round(6), rv.round(6)              # 0.01 * 2, 0.99 + 0.01 * 4 (biased)
    (array([0.02]), array([1.03]))
    """
    _check_convention(convention)
    _checks.check_momentum(momentum)
    if unbiased is None:
        unbiased = stores_unbiased_variance(convention)
    if m == 0:               # an empty batch has no statistics: nothing to average in (torch)
        return
    if unbiased and running_var is not None and m <= 1:
        raise ValueError(f"the unbiased variance needs more than 1 value per channel (got m={m})")
    var_stored = None
    if running_var is not None:
        var_stored = np.asarray(var) * (m / (m - 1)) if unbiased else np.asarray(var)
    for running, batch in ((running_mean, mean), (running_var, var_stored)):
        if running is None:
            continue
        if convention == "torch":
            running[...] = momentum * batch + (1.0 - momentum) * running
        else:
            running[...] = running * momentum + batch * (1.0 - momentum)


def running_stats_after_identical_batches(k, mean, var, momentum: float = 0.1,
                                          convention: str = "torch", initial_mean=0.0,
                                          initial_var=1.0) -> Tuple[np.ndarray, np.ndarray]:
    r"""Closed form of the running statistics after ``k`` updates with the same batch statistics.

    With :math:`w` the weight of the new batch (:func:`new_batch_weight`) and
    the buffers initialised to :math:`r_0` (0 for the mean, 1 for the variance,
    as in PyTorch and Keras), ``k`` updates with the same :math:`s` give

    .. math::

        r_k = (1 - w)^k\, r_0 + \big(1 - (1 - w)^k\big)\, s,

    so with PyTorch's defaults (:math:`w = 0.1`):
    :math:`\hat\mu_k = (1 - 0.9^k)\,\mu` and
    :math:`\hat\sigma^2_k = 0.9^k + (1 - 0.9^k)\,\sigma^2`. The running mean
    reaches 99 % of :math:`\mu` only after :math:`k = \ln 0.01/\ln 0.9 \approx 44`
    steps (459 with Keras' ``momentum=0.99``): the *start-up bias*.

    Parameters
    ----------
    k : int or array_like of int, >= 0
        Number of updates.
    mean, var : float or array_like
        The statistics every update sees (``var`` as stored: unbiased for
        PyTorch, biased for Keras).
    momentum : float in [0, 1], default 0.1
    convention : {"torch", "keras"}, default "torch"
    initial_mean, initial_var : float or array_like, default 0 and 1

    Returns
    -------
    running_mean, running_var : ndarray
        Broadcast of ``k`` against ``mean`` (resp. ``var``).
    """
    if np.any(np.asarray(k) < 0):
        raise ValueError(f"k must be >= 0 (got {k!r})")
    keep = (1.0 - new_batch_weight(momentum, convention)) ** np.asarray(k, dtype=np.float64)
    mean = np.asarray(mean, dtype=np.float64)
    var = np.asarray(var, dtype=np.float64)
    return (keep * initial_mean + (1.0 - keep) * mean,
            keep * initial_var + (1.0 - keep) * var)
