"""Argument checks shared by the NumPy and torch implementations.

Pure Python on shapes and numbers, so both back ends raise the same errors with
the same messages. Every check runs *before* any state changes, so a call that
raises leaves running statistics and counters exactly as they were.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence

__all__ = [
    "check_positive_int",
    "check_eps",
    "check_momentum",
    "check_input_rank",
    "normalize_channel_axis",
    "check_channel_vector",
    "check_training_batch",
]


def _is_real(v) -> bool:
    """A real number (Python or NumPy scalar), not a bool."""
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def check_positive_int(name: str, value) -> None:
    """Raise ``ValueError`` unless ``value`` is an int (Python or NumPy) > 0, not a bool."""
    if not (isinstance(value, numbers.Integral) and not isinstance(value, bool) and value > 0):
        raise ValueError(f"{name} must be a positive int (got {value!r})")


def check_eps(eps: float) -> None:
    """Raise ``ValueError`` unless ``eps`` is a finite number > 0."""
    if not (_is_real(eps) and math.isfinite(eps) and eps > 0):
        raise ValueError(f"eps must be a finite number > 0 (got {eps!r})")


def check_momentum(momentum: Optional[float], allow_none: bool = False) -> None:
    """Raise ``ValueError`` unless ``momentum`` lies in [0, 1] (or is ``None`` when allowed)."""
    if momentum is None:
        if allow_none:
            return
        raise ValueError("momentum must be a number in [0, 1] (got None; "
                         "the cumulative average momentum=None is a layer option)")
    if not (_is_real(momentum) and 0.0 <= momentum <= 1.0):
        raise ValueError(f"momentum must be in [0, 1] (got {momentum!r})")


def check_input_rank(ndim: int, allowed: Optional[Sequence[int]] = None) -> None:
    """Raise ``ValueError`` if the input rank is < 2 or not one of ``allowed``."""
    if allowed is not None:
        if ndim not in allowed:
            want = " or ".join(f"{d}D" for d in allowed)
            raise ValueError(f"expected {want} input (got {ndim}D input)")
    elif ndim < 2:
        raise ValueError(f"expected an input of rank >= 2, (N, C, *) (got {ndim}D input)")


def normalize_channel_axis(channel_axis: int, ndim: int) -> int:
    """Return ``channel_axis`` as a non-negative axis of an ``ndim``-D input.

    The batch axis is axis 0, so the channel axis must be one of 1 .. ndim-1
    (or its negative form).
    """
    if not isinstance(channel_axis, int):
        raise TypeError(f"channel_axis must be an int (got {type(channel_axis).__name__})")
    axis = channel_axis + ndim if channel_axis < 0 else channel_axis
    if not 1 <= axis < ndim:
        raise ValueError(f"channel_axis={channel_axis} is not a valid channel axis for a "
                         f"{ndim}D input: axis 0 is the batch, channels are on 1..{ndim - 1}")
    return axis


def check_channel_vector(name: str, shape: Optional[Sequence[int]], num_channels: int) -> None:
    """Raise ``ValueError`` unless a per-channel vector has shape ``(num_channels,)``.

    ``shape`` is ``None`` when the vector is absent (nothing to check).
    """
    if shape is None:
        return
    if tuple(shape) != (num_channels,):
        raise ValueError(f"{name} has shape {tuple(shape)} but the input has "
                         f"{num_channels} channels: expected shape ({num_channels},)")


def check_training_batch(shape: Sequence[int], channel_axis: int) -> None:
    """Raise ``ValueError`` when training would see exactly one value per channel.

    The batch variance of a single value is 0 and its unbiased estimate divides
    by zero, so PyTorch refuses; so do we, with PyTorch's message. An empty
    batch (zero values per channel, e.g. ``N = 0``) is allowed, as in PyTorch:
    it normalizes nothing and leaves the running statistics as they are.
    """
    values_per_channel = math.prod(s for i, s in enumerate(shape) if i != channel_axis)
    if values_per_channel == 1:
        raise ValueError("Expected more than 1 value per channel when training, "
                         f"got input size {tuple(shape)}")
