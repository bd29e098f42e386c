r"""What :class:`~bnkit.torch.sync.SyncBatchNorm` costs in communication: collectives and bytes.

A training step of a model with :math:`L` synchronized layers runs, per layer,
one all-gather in the forward pass (the statistics, the count and a status
word, in one float64 tensor) and one all-reduce in the backward pass (two
gradient sums), as :class:`torch.nn.SyncBatchNorm` does: :math:`2L` collectives
per step. The first training forward of each layer adds a one-off all-gather
of its ``num_features``, which checks that every rank holds the same layer
before the exchanges whose sizes depend on it.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

__all__ = ["HEADER_VALUES", "collectives_per_step", "sync_payload_bytes", "ring_bytes_sent"]

#: float64 values per rank after the :math:`2C` statistics in the forward all-gather:
#: the count :math:`m_k`, the status (input accepted?) and the input's dtype.
HEADER_VALUES = 3


def collectives_per_step(num_layers: int, first_step: bool = False) -> int:
    r"""Collective operations per training step for ``num_layers`` SyncBatchNorm layers.

    .. math:: n = 2L \quad (\text{the first step: } 3L)

    one all-gather per forward and one all-reduce per backward of each layer;
    the first step also runs each layer's one-off ``num_features`` check. For
    ResNet-50 (53 batch-norm layers): 106 per step, as torch's SyncBatchNorm.

    Examples
    --------
    >>> collectives_per_step(53)
    106
    """
    if not (isinstance(num_layers, int) and num_layers >= 0):
        raise ValueError(f"num_layers must be an int >= 0 (got {num_layers!r})")
    return (3 if first_step else 2) * num_layers


def sync_payload_bytes(num_channels: Sequence[int], bytes_per_value: int = 8):
    r"""Bytes each rank contributes per training step, for each SyncBatchNorm layer.

    Forward: the mean and :math:`M` of the :math:`C` channels and 3 header
    values (count, status, dtype); backward: :math:`\sum g` and :math:`\sum g \hat x`.

    .. math::

        b_\text{forward} = (2C + 3)\,b, \qquad b_\text{backward} = 2 C b

    with :math:`b` bytes per value: 8, as bnkit exchanges float64 on every
    device (torch's SyncBatchNorm uses the input's float dtype, 4 for float32).

    Parameters
    ----------
    num_channels : sequence of int, length L
        :math:`C` of each layer.
    bytes_per_value : int, default 8

    Returns
    -------
    forward, backward : ndarray of int64, shape (L,)
    """
    c = np.asarray(num_channels, dtype=np.int64)
    forward = (2 * c + HEADER_VALUES) * bytes_per_value
    backward = 2 * c * bytes_per_value
    return forward, backward


def ring_bytes_sent(payload, world_size: int, collective: str):
    r"""Bytes each rank sends in a ring all-gather or all-reduce of ``payload`` bytes per rank.

    .. math::

        \text{all-gather: } (W - 1)\,p, \qquad
        \text{all-reduce: } 2\,\frac{W - 1}{W}\,p

    (a ring all-reduce is a reduce-scatter then an all-gather of :math:`p/W`
    bytes per rank). The same amount is received.

    Parameters
    ----------
    payload : float or ndarray
        :math:`p`, bytes each rank contributes.
    world_size : int
        :math:`W \geq 1`.
    collective : {"all_gather", "all_reduce"}
    """
    w = world_size
    if collective == "all_gather":
        return (w - 1) * np.asarray(payload)
    if collective == "all_reduce":
        return 2 * (w - 1) / w * np.asarray(payload)
    raise ValueError(f"collective must be 'all_gather' or 'all_reduce' (got {collective!r})")
