"""The array arguments of bnkit.numpy: converted and checked in one place.

The functions and layers of :mod:`bnkit.numpy` (its modules ``functional``,
``layers`` and ``norms``) take array-likes (NumPy arrays, lists, torch tensors
in a state dict); these helpers turn them into NumPy arrays and check them with
the pure-Python checks of :mod:`bnkit.validation`, so every function raises
the same error for the same bad argument. They are helpers of the
implementation, not exported by :mod:`bnkit.numpy`.
"""

from __future__ import annotations

import numpy as np

from .. import validation

__all__ = ["as_float_array", "check_channel_vectors", "to_numpy"]


def as_float_array(x, name: str = "x") -> np.ndarray:
    """Return ``x`` as a floating-point ndarray (no copy when it already is one).

    Parameters
    ----------
    x : array_like
        Any floating dtype (float16, float32, float64, ...).
    name : str, default "x"
        The argument's name, for the error message.

    Returns
    -------
    ndarray
        ``np.asarray(x)``, its dtype unchanged.

    Raises
    ------
    TypeError
        ``x``'s dtype is not floating point (integers are not promoted, as in torch).
    """
    x = np.asarray(x)
    if not np.issubdtype(x.dtype, np.floating):
        raise TypeError(f"{name} must be a floating-point array (got dtype {x.dtype})")
    return x


def check_channel_vectors(num_channels: int, **vectors) -> None:
    """Raise ``ValueError`` unless every given per-channel vector has shape ``(num_channels,)``.

    Parameters
    ----------
    num_channels : int
        :math:`C`, the input's number of channels.
    **vectors : array_like or None
        The vectors by name (``weight=..., running_mean=...``), checked in that
        order by :func:`bnkit.validation.check_channel_vector`; ``None`` (an
        absent vector) passes.
    """
    for name, v in vectors.items():
        validation.check_channel_vector(name, None if v is None else np.shape(v), num_channels)


def to_numpy(v):
    """A state-dict value as something ``np.asarray`` reads: a torch tensor becomes an ndarray.

    A torch tensor (anything with ``.detach()``) is detached and copied to the
    CPU as an ndarray, without importing torch; a NumPy array or a number is
    returned as it is.
    """
    if hasattr(v, "detach"):
        v = v.detach().cpu().numpy()
    return v
