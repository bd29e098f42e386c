"""Argument checks shared by the NumPy and torch implementations.

Pure Python on shapes and numbers (no NumPy, no torch), so both back ends raise
the same errors with the same messages: :mod:`bnkit.numpy`, :mod:`bnkit.torch`,
:mod:`bnkit.conventions` and :mod:`bnkit.staged` call these checks, each once
per call. Every check runs *before* any state changes, so a call that raises
leaves running statistics and counters exactly as they were.

The checks of batch norm's arguments (ranks, ``eps``, ``momentum``, the channel
axis, per-channel vectors, the batch size in training) come first; then those
of layer norm (:func:`as_normalized_shape`, :func:`check_layer_norm`) and of
group norm (:func:`check_num_groups`, :func:`check_group_norm`), which take
the input's shape rather than the input, so that the NumPy and torch functions
share them.
"""

from __future__ import annotations

import math
import numbers
from typing import Optional, Sequence, Tuple, Union

__all__ = [
    "check_positive_int",
    "check_eps",
    "check_momentum",
    "check_input_rank",
    "normalize_channel_axis",
    "check_channel_vector",
    "check_training_batch",
    "ShapeLike",
    "as_normalized_shape",
    "check_layer_norm",
    "check_num_groups",
    "check_group_norm",
]

#: A ``normalized_shape`` argument: an int ``D`` (meaning ``(D,)``) or a sequence of ints.
ShapeLike = Union[int, Sequence[int]]


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


# ----------------------------------------------------------------------------- layer norm
def as_normalized_shape(normalized_shape: ShapeLike) -> Tuple[int, ...]:
    """Return ``normalized_shape`` as a tuple of positive ints (an int ``D`` is ``(D,)``).

    Parameters
    ----------
    normalized_shape : int or sequence of ints
        The last axes layer norm normalizes over, as :class:`torch.nn.LayerNorm` takes them.

    Returns
    -------
    shape : tuple of int
        Non-empty, every size > 0.

    Raises
    ------
    TypeError
        ``normalized_shape`` is neither an int nor a sequence of ints (a bool is not an int).
    ValueError
        ``normalized_shape`` is empty or holds a size <= 0.
    """
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        raise TypeError("normalized_shape must be an int or a sequence of ints "
                        f"(got {type(normalized_shape).__name__})") from None
    for d in shape:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"normalized_shape must hold ints (got {shape!r})")
    if len(shape) == 0 or any(d <= 0 for d in shape):
        raise ValueError(f"normalized_shape must be a non-empty shape of positive sizes "
                         f"(got {shape!r})")
    return tuple(int(d) for d in shape)


def check_layer_norm(input_shape: Sequence[int], normalized_shape: ShapeLike,
                     weight_shape: Optional[Sequence[int]] = None,
                     bias_shape: Optional[Sequence[int]] = None,
                     eps: float = 1e-5) -> Tuple[int, ...]:
    r"""Every argument check of layer norm, on shapes; return ``normalized_shape`` as a tuple.

    Parameters
    ----------
    input_shape : sequence of int
        The input's shape, ``(N, ..., D_1, ..., D_k)``.
    normalized_shape : int or sequence of ints ``(D_1, ..., D_k)``
        Must be the last ``k`` axes of the input (see :func:`as_normalized_shape`).
    weight_shape, bias_shape : sequence of int or None
        Shapes of :math:`\gamma` and :math:`\beta`, which must equal ``normalized_shape``;
        ``None`` when absent (nothing to check).
    eps : float
        Checked by :func:`check_eps`.

    Returns
    -------
    shape : tuple of int
        ``normalized_shape`` as :func:`as_normalized_shape` gives it.

    Raises
    ------
    TypeError, ValueError
        The first argument that does not fit, named in the message.
    """
    shape = as_normalized_shape(normalized_shape)
    input_shape = tuple(input_shape)
    k = len(shape)
    if len(input_shape) < k or input_shape[len(input_shape) - k:] != shape:
        raise ValueError(f"normalized_shape={shape} must be the last {k} axes of the input: "
                         f"expected an input of shape (N, ..., {', '.join(map(str, shape))}), "
                         f"got {input_shape}")
    for name, s in (("weight", weight_shape), ("bias", bias_shape)):
        if s is not None and tuple(s) != shape:
            raise ValueError(f"{name} has shape {tuple(s)}, expected normalized_shape {shape}")
    check_eps(eps)
    return shape


# ----------------------------------------------------------------------------- group norm
def check_num_groups(num_groups: int, num_channels: int) -> None:
    """Raise unless ``num_groups`` is an int > 0 that divides ``num_channels``.

    Raises
    ------
    TypeError
        ``num_groups`` is not an int (Python or NumPy; a bool is not an int).
    ValueError
        ``num_groups <= 0``, or ``num_channels`` is not a multiple of ``num_groups``.
    """
    if not (isinstance(num_groups, numbers.Integral) and not isinstance(num_groups, bool)):
        raise TypeError(f"num_groups must be an int (got {type(num_groups).__name__})")
    if num_groups <= 0:
        raise ValueError(f"num_groups must be positive (got {num_groups})")
    if num_channels % num_groups:
        raise ValueError(f"num_channels ({num_channels}) must be divisible by "
                         f"num_groups ({num_groups})")


def check_group_norm(input_shape: Sequence[int], num_groups: int,
                     weight_shape: Optional[Sequence[int]] = None,
                     bias_shape: Optional[Sequence[int]] = None, eps: float = 1e-5) -> None:
    r"""Every argument check of group norm, on shapes.

    Parameters
    ----------
    input_shape : sequence of int
        The input's shape, ``(N, C, *)``: rank >= 2, channels on axis 1.
    num_groups : int
        :math:`G`, checked by :func:`check_num_groups` against :math:`C`.
    weight_shape, bias_shape : sequence of int or None
        Shapes of :math:`\gamma` and :math:`\beta`, which must be ``(C,)``;
        ``None`` when absent (nothing to check).
    eps : float
        Checked by :func:`check_eps`.

    Raises
    ------
    TypeError, ValueError
        The first argument that does not fit, named in the message.
    """
    input_shape = tuple(input_shape)
    check_input_rank(len(input_shape))
    num_channels = input_shape[1]
    check_num_groups(num_groups, num_channels)
    check_channel_vector("weight", weight_shape, num_channels)
    check_channel_vector("bias", bias_shape, num_channels)
    check_eps(eps)
