r"""Small statistics the chapters share: skewness, and summaries over seeds.

An experiment in the book is repeated with several seeds; a comparison between
two settings is claimed only when the gap is larger than the seed-to-seed spread.
:class:`Spread` summarizes one setting's results over seeds, and
:func:`compare` decides, by a rule stated once here, whether two settings differ:

    **A is above B when every seed of A is above every seed of B**
    (``min(A) > max(B)``); likewise below; otherwise they are indistinguishable.

With 3 seeds each, two settings whose true values are equal are ordered this way
by chance with probability 2 / 20 = 10 % (each of the 20 orderings of six
exchangeable values is equally likely, and 2 of them separate the groups); with 5
seeds each, 2 / 252 < 1 %. A chapter that needs a stronger claim uses more seeds.

Pure NumPy; no torch, no matplotlib.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np

__all__ = ["skewness", "Spread", "spread", "compare"]


def skewness(a, axis: int = 0) -> np.ndarray:
    r"""Sample skewness :math:`\frac{1}{m}\sum (a - \bar a)^3 / \sigma^3` along ``axis``.

    :math:`\sigma` is the biased standard deviation (NumPy's ``std`` with ``ddof=0``).
    A per-column affine map :math:`a \mapsto \gamma a + \beta` multiplies it by
    :math:`\operatorname{sign}\gamma` and changes nothing else, which is why batch
    norm leaves the shape of every column's distribution as it was.

    Parameters
    ----------
    a : array_like, e.g. of shape (N, D)
    axis : int, default 0
        The axis the statistics run over (the batch axis for an N x D matrix).

    Returns
    -------
    ndarray, ``a``'s shape without ``axis``.
    """
    a = np.asarray(a, dtype=np.float64)
    centered = a - a.mean(axis=axis, keepdims=True)
    return (centered ** 3).mean(axis=axis) / centered.std(axis=axis) ** 3


@dataclass(frozen=True)
class Spread:
    """A result over seeds: its values, their mean, standard deviation, min and max.

    ``format(s, ".1f")`` gives ``"93.1 ± 0.4"``; ``s.range(".1f")`` gives
    ``"92.7–93.5"``. The standard deviation is the sample one (``ddof=1``;
    0 for a single seed).
    """

    values: tuple

    @property
    def n(self) -> int:
        return len(self.values)

    @property
    def mean(self) -> float:
        return float(np.mean(self.values))

    @property
    def std(self) -> float:
        return float(np.std(self.values, ddof=1)) if self.n > 1 else 0.0

    @property
    def min(self) -> float:
        return float(np.min(self.values))

    @property
    def max(self) -> float:
        return float(np.max(self.values))

    def __format__(self, spec: str) -> str:
        spec = spec or ".3g"
        return f"{self.mean:{spec}} ± {self.std:{spec}}"

    def range(self, spec: str = ".3g") -> str:
        """``"min–max"``, each formatted with ``spec``."""
        return f"{self.min:{spec}}–{self.max:{spec}}"


def spread(values: Sequence[float]) -> Spread:
    """A :class:`Spread` of one setting's results, one value per seed.

    Raises ``ValueError`` for an empty sequence or a non-finite value.
    """
    vals = tuple(float(v) for v in np.asarray(values, dtype=np.float64).ravel())
    if not vals:
        raise ValueError("spread needs at least one value (one per seed)")
    if not all(np.isfinite(vals)):
        raise ValueError(f"spread got a non-finite value: {vals}")
    return Spread(vals)


def compare(a: Sequence[float], b: Sequence[float]) -> str:
    """``"above"``, ``"below"`` or ``"indistinguishable"``: how ``a`` stands to ``b``.

    ``a`` and ``b`` hold one result per seed. ``"above"`` when ``min(a) > max(b)``,
    ``"below"`` when ``max(a) < min(b)``; otherwise the ranges overlap and the
    seeds cannot tell the two apart.

    Examples
    --------
    >>> compare([93.1, 93.4, 92.9], [91.0, 91.8, 91.5])
    'above'
    >>> compare([93.1, 91.4], [91.0, 92.0])
    'indistinguishable'
    """
    sa, sb = spread(a), spread(b)
    if sa.min > sb.max:
        return "above"
    if sa.max < sb.min:
        return "below"
    return "indistinguishable"
