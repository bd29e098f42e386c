r"""The memory roofline of batch normalization: bytes moved, passes over memory, time.

Batch normalization does a handful of arithmetic operations per value it reads,
far fewer than a CPU can do in the time one value arrives from memory, so its
speed is set by the bytes it moves. This module is arithmetic only: it counts
those bytes, lists the passes over memory that move them, and turns bytes and
a bandwidth into a time. Measuring a machine's bandwidth is
:mod:`bnkit.timing`'s job (:func:`bnkit.timing.measure_copy_bandwidth`,
:func:`bnkit.timing.stream_passes`); timing batch norm itself is
:mod:`bnkit.benchmarking`'s.

**The model.** An input ``x`` of shape ``(N, C, *)`` holds :math:`n` values of :math:`s` bytes
each (:math:`s = 4` in float32), :math:`C` of them per channel position. A
kernel is counted as streaming each full-size array (``x``, ``y``, ``g``,
``dx``) between memory and the CPU; a pass that finds its data still in cache
costs nothing. The per-channel vectors (length :math:`C`) are counted too,
though they are negligible unless :math:`n/C` is tiny.

Training forward, :math:`y = \gamma (x - \mu)/\sqrt{\sigma^2 + \varepsilon} + \beta`:

* the statistics :math:`\mu, \sigma^2` read ``x`` :math:`r` times: :math:`r = 1`
  for a one-pass kernel (Welford's update, or cache-sized blocks whose second
  pass hits the cache), :math:`r = 2` for the textbook two passes over memory
  (mean first, then squared deviations);
* normalizing reads ``x`` once more and writes ``y`` once: the statistics are
  only known after the whole of ``x`` has been read, so this is a second read;
* per channel: reads :math:`\gamma, \beta` (when affine), reads and writes the
  running mean and variance (when tracked), writes the batch mean and
  :math:`1/\sqrt{\sigma^2 + \varepsilon}` kept for the backward pass.

.. math::

    B_\text{fwd} = s\,\big[(r + 2)\,n + (2a + 4t + 2)\,C\big]

with :math:`a = 1` when affine (else 0) and :math:`t = 1` when running
statistics are tracked. The minimum is :math:`r = 1`: **3 n s**, in two passes
(:func:`forward_passes`): one that reads ``x``, one that reads ``x`` and writes
``y``, two bytes read for every byte written.

Training backward, :math:`g = \partial L/\partial y`:

* the sums :math:`\sum g` and :math:`\sum g\hat x` read ``g`` and ``x`` once each
  (:math:`\hat x` is recomputed from ``x`` and the saved statistics, not stored);
* :math:`\partial L/\partial x` needs those sums, so it reads ``g`` and ``x``
  again and writes ``dx`` once;
* an implementation that does not keep the statistics from the forward pass
  recomputes them: :math:`r` more reads of ``x`` (``recompute_statistics``);
* per channel: reads the saved mean and :math:`1/\sqrt{\sigma^2+\varepsilon}`
  and :math:`\gamma`, writes :math:`\partial L/\partial\gamma` and
  :math:`\partial L/\partial\beta` (when affine).

.. math::

    B_\text{bwd} = s\,\big[(5 + r_\text{re})\,n + (2 + 3a)\,C\big]

with :math:`r_\text{re} = 0`, or :math:`r` when the statistics are recomputed.
The minimum is **5 n s**, in two passes (:func:`backward_passes`), four bytes
read for every byte written: a forward and backward step moves at least
:math:`8 n s` bytes.

**From bytes to time.** :func:`roofline_time` divides bytes by a bandwidth. Which
bandwidth is the question: a copy (one read per write, streaming stores) is the
most favourable mix a machine has, and batch norm's mixes are 2:1 and 4:1. The
*floor* of Chapter 9 therefore times the passes themselves, with kernels that
do no arithmetic (:func:`bnkit.timing.stream_passes`). Two things the byte
count leaves out, both measured rather than modelled: an input that fits in a
cache is served at that cache's bandwidth, and a freshly allocated output costs
the operating system a page fault per page on its first write.
"""

from __future__ import annotations

import math
from typing import Sequence, Tuple

import numpy as np

# Kept importable from here for callers written before it moved; it lives in bnkit.timing.
from .timing import measure_copy_bandwidth  # noqa: F401

__all__ = [
    "forward_bytes",
    "backward_bytes",
    "training_bytes",
    "forward_passes",
    "backward_passes",
    "training_passes",
    "roofline_time",
    "achieved_bandwidth",
]

#: A pass over memory: ``(reads, writes)``, how many full-size arrays it reads and writes.
Pass = Tuple[int, int]


def _sizes(shape: Sequence[int], channel_axis: int) -> tuple:
    shape = tuple(int(d) for d in shape)
    if len(shape) < 2 or any(d < 0 for d in shape):
        raise ValueError(f"expected a shape (N, C, *) of rank >= 2 (got {shape})")
    return math.prod(shape), shape[channel_axis]


def _itemsize(dtype) -> int:
    return np.dtype(dtype).itemsize


def _check_passes(name: str, value: int, allowed) -> None:
    if value not in allowed:
        raise ValueError(f"{name} must be one of {allowed} (got {value!r})")


def forward_bytes(shape: Sequence[int], dtype="float32", *, stat_reads: int = 1,
                  affine: bool = True, track_running_stats: bool = True,
                  channel_axis: int = 1) -> int:
    r"""Bytes a training-mode forward pass moves: :math:`s[(r + 2)n + (2a + 4t + 2)C]`.

    Parameters
    ----------
    shape : sequence of int
        Shape of ``x``, ``(N, C, *)`` (or with the channels on ``channel_axis``).
    dtype : numpy dtype or str, default "float32"
        Of ``x``, ``y`` and the per-channel vectors (:math:`s` = its item size).
    stat_reads : {1, 2}, default 1
        :math:`r`, how many times computing the statistics reads ``x`` from
        memory: 1 for a one-pass kernel (the minimum), 2 for two passes.
    affine : bool, default True
        :math:`\gamma` and :math:`\beta` are read.
    track_running_stats : bool, default True
        The running mean and variance are read and written.
    channel_axis : int, default 1

    Returns
    -------
    int
        Bytes read plus bytes written.

    Examples
    --------
    >>> forward_bytes((4096, 1024))          # 3 * 4096 * 1024 * 4 + 8 * 1024 * 4
    50364416
    """
    _check_passes("stat_reads", stat_reads, (1, 2))
    n, c = _sizes(shape, channel_axis)
    per_channel = 2 * bool(affine) + 4 * bool(track_running_stats) + 2
    return _itemsize(dtype) * ((stat_reads + 2) * n + per_channel * c)


def backward_bytes(shape: Sequence[int], dtype="float32", *, recompute_statistics: int = 0,
                   affine: bool = True, channel_axis: int = 1) -> int:
    r"""Bytes a training-mode backward pass moves: :math:`s[(5 + r_\text{re})n + (2 + 3a)C]`.

    Reads ``g`` and ``x`` for the two per-channel sums, reads them again for
    :math:`\partial L/\partial x` and writes it.

    Parameters
    ----------
    shape : sequence of int
        Shape of ``x`` (and of ``g``, ``dx``).
    dtype : numpy dtype or str, default "float32"
    recompute_statistics : {0, 1, 2}, default 0
        :math:`r_\text{re}`, extra reads of ``x`` to recompute the batch
        statistics when the forward pass did not keep them (0: kept, the minimum).
    affine : bool, default True
        :math:`\gamma` is read and :math:`\partial L/\partial\gamma`,
        :math:`\partial L/\partial\beta` are written.
    channel_axis : int, default 1

    Returns
    -------
    int
        Bytes read plus bytes written.

    Examples
    --------
    >>> backward_bytes((4096, 1024))         # 5 * 4096 * 1024 * 4 + 5 * 1024 * 4
    83906560
    """
    _check_passes("recompute_statistics", recompute_statistics, (0, 1, 2))
    n, c = _sizes(shape, channel_axis)
    per_channel = 2 + 3 * bool(affine)
    return _itemsize(dtype) * ((5 + recompute_statistics) * n + per_channel * c)


def training_bytes(shape: Sequence[int], dtype="float32", *, stat_reads: int = 1,
                   recompute_statistics: int = 0, affine: bool = True,
                   track_running_stats: bool = True, channel_axis: int = 1) -> int:
    r"""Bytes of one training step (forward and backward): :func:`forward_bytes` + :func:`backward_bytes`.

    At the minimum (one-pass statistics, kept for the backward) that is
    :math:`8 n s` plus the per-channel vectors.
    """
    return (forward_bytes(shape, dtype, stat_reads=stat_reads, affine=affine,
                          track_running_stats=track_running_stats, channel_axis=channel_axis)
            + backward_bytes(shape, dtype, recompute_statistics=recompute_statistics,
                             affine=affine, channel_axis=channel_axis))


def forward_passes(stat_reads: int = 1) -> Tuple[Pass, ...]:
    """The passes over memory of a training forward, in order: ``(reads, writes)`` of full-size arrays.

    ``stat_reads`` passes read ``x`` for the statistics, ``(1, 0)`` each; the
    last reads ``x`` and writes ``y``, ``(1, 1)``. Their bytes are those of
    :func:`forward_bytes` without the per-channel vectors.

    Examples
    --------
    >>> forward_passes()
    ((1, 0), (1, 1))
    """
    _check_passes("stat_reads", stat_reads, (1, 2))
    return ((1, 0),) * stat_reads + ((1, 1),)


def backward_passes(recompute_statistics: int = 0) -> Tuple[Pass, ...]:
    r"""The passes over memory of a training backward, in order: ``(reads, writes)``.

    ``recompute_statistics`` passes read ``x`` again, ``(1, 0)`` each; then one
    reads ``g`` and ``x`` for the two sums, ``(2, 0)``, and one reads both again
    and writes :math:`\partial L/\partial x`, ``(2, 1)``. Their bytes are those of
    :func:`backward_bytes` without the per-channel vectors.

    Examples
    --------
    >>> backward_passes()
    ((2, 0), (2, 1))
    """
    _check_passes("recompute_statistics", recompute_statistics, (0, 1, 2))
    return ((1, 0),) * recompute_statistics + ((2, 0), (2, 1))


def training_passes(stat_reads: int = 1, recompute_statistics: int = 0) -> Tuple[Pass, ...]:
    """:func:`forward_passes` then :func:`backward_passes`: a training step's passes over memory.

    Examples
    --------
    >>> training_passes()
    ((1, 0), (1, 1), (2, 0), (2, 1))
    """
    return forward_passes(stat_reads) + backward_passes(recompute_statistics)


def roofline_time(nbytes: float, bandwidth: float) -> float:
    r"""Least time to move ``nbytes`` at ``bandwidth``: :math:`t = B / W` seconds.

    Parameters
    ----------
    nbytes : float
        Bytes to move (read + written), e.g. from :func:`forward_bytes`.
    bandwidth : float
        Bytes per second (read + written), e.g. from
        :func:`bnkit.timing.measure_copy_bandwidth`.

    Examples
    --------
    >>> roofline_time(2e9, 40e9)             # 2 GB at 40 GB/s
    0.05
    """
    if not bandwidth > 0:
        raise ValueError(f"bandwidth must be > 0 bytes/s (got {bandwidth!r})")
    if nbytes < 0:
        raise ValueError(f"nbytes must be >= 0 (got {nbytes!r})")
    return nbytes / bandwidth


def achieved_bandwidth(nbytes: float, seconds: float) -> float:
    """Bytes per second a kernel that moves ``nbytes`` in ``seconds`` achieves.

    With ``nbytes`` the *minimal* traffic (:func:`forward_bytes`), this is the
    bandwidth the kernel would need to reach if it moved nothing more; compare
    it with :func:`bnkit.timing.measure_copy_bandwidth`.
    """
    if not seconds > 0:
        raise ValueError(f"seconds must be > 0 (got {seconds!r})")
    return nbytes / seconds
