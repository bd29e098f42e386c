"""Executed claims: one printed line per statement of the text that code has verified.

Every claim a chapter makes in prose is backed by a cell that checks it. Readers
should see the claim, not a wall of ``assert``: each function here checks one
statement, prints it as one line (``✓ the statement``) when it holds, and raises
:class:`ClaimError` (an ``AssertionError``, so the notebook, and nbval, fail)
with the evidence when it does not.

>>> from bnkit.checks import claim
>>> claim("two plus two is four", 2 + 2 == 4)
✓ two plus two is four

Unlike ``assert``, these checks still run under ``python -O``.
"""

from __future__ import annotations

from typing import Sequence

import numpy as np

from .stats import compare, spread

__all__ = ["ClaimError", "claim", "claim_close", "claim_order"]

#: The mark printed in front of a claim that held.
MARK = "✓"


class ClaimError(AssertionError):
    """A claim of the text that the computation does not support."""


def _held(statement: str) -> None:
    print(f"{MARK} {statement}")


def claim(statement: str, holds) -> None:
    """Check that ``holds`` is true (a bool, or a NumPy/torch boolean scalar); print the statement.

    Raises
    ------
    ClaimError
        When ``holds`` is false.
    """
    if not bool(holds):
        raise ClaimError(f"claim does not hold: {statement}")
    _held(statement)


def claim_close(statement: str, actual, desired, rtol: float = 1e-7, atol: float = 0.0) -> None:
    """Check ``|actual - desired| <= atol + rtol * |desired|`` elementwise (NumPy's rule).

    ``actual`` and ``desired`` are anything :func:`numpy.asarray` takes (torch
    tensors on the CPU included) and broadcast against each other.

    Raises
    ------
    ClaimError
        With NumPy's report of the largest deviations.
    """
    try:
        np.testing.assert_allclose(np.asarray(actual), np.asarray(desired), rtol=rtol, atol=atol)
    except AssertionError as e:
        raise ClaimError(f"claim does not hold: {statement}\n{e}") from None
    _held(statement)


def claim_order(statement: str, a: Sequence[float], b: Sequence[float],
                expected: str = "above") -> None:
    """Check how two settings compare over seeds, by :func:`bnkit.stats.compare`'s rule.

    Parameters
    ----------
    statement : str
        What the text says, e.g. ``"with BN the test accuracy is higher"``.
    a, b : sequence of float
        One result per seed for each setting.
    expected : {"above", "below", "indistinguishable"}
        ``"above"``: every seed of ``a`` beats every seed of ``b``.

    Raises
    ------
    ClaimError
        When the comparison comes out otherwise; the message gives both spreads.
    ValueError
        For an unknown ``expected``.
    """
    if expected not in ("above", "below", "indistinguishable"):
        raise ValueError(f"expected must be 'above', 'below' or 'indistinguishable' "
                         f"(got {expected!r})")
    got = compare(a, b)
    if got != expected:
        sa, sb = spread(a), spread(b)
        raise ClaimError(f"claim does not hold: {statement}\n"
                         f"expected a {expected} b, got {got}: a = {sa:.4g} (range {sa.range('.4g')}), "
                         f"b = {sb:.4g} (range {sb.range('.4g')})")
    _held(statement)
