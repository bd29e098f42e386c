"""Plots of results over seeds: a sweep with error bars, curves as a mean with a min--max band.

Every function draws into the axes it is given (or new ones) and returns the
figure, like :mod:`bnkit.experiments.figures`.

* :func:`plot_sweep_seeds` -- a :class:`~bnkit.experiments.sweeps.Sweep`: per
  network the mean over seeds (line and markers), the min--max range (error
  bars) and every seed (small dots).
* :func:`plot_band` -- curves of several seeds against training steps: their
  mean as a line, their min--max range as a shaded band.
"""

from __future__ import annotations

from typing import Optional

import numpy as np

from .figures import NET_COLORS, net_color
from .sweeps import Sweep

__all__ = ["network_color", "plot_sweep_seeds", "plot_band"]

#: Other names of the networks of :data:`~bnkit.experiments.figures.NET_COLORS` (the command line's ``bn``).
_ALIASES = {"bn": NET_COLORS["BN"], "BN before": NET_COLORS["BN"]}


def network_color(label: str, i: int = 0) -> str:
    """The book's colour of a network (:func:`~bnkit.experiments.figures.net_color`), ``bn`` and ``BN before`` as ``BN``."""
    return net_color(label, i, _ALIASES)


def _axes(ax, figsize=(6.4, 4.0)):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    return plt.subplots(figsize=figsize, layout="constrained")


def plot_sweep_seeds(sweep: Sweep, ax=None, xlabel: str = "", ylabel: str = "", title: str = "",
                     logx: bool = True, percent: bool = True):
    """Final test accuracy against the swept value, per network: mean, min--max error bars, each seed.

    Networks are offset slightly along x (by a few percent of a decade on a
    log axis) so that their error bars do not hide each other.
    """
    fig, ax = _axes(ax)
    scale = 100.0 if percent else 1.0
    x = np.asarray(sweep.values, dtype=float)
    n = len(sweep.networks)
    for i, label in enumerate(sweep.networks):
        shift = (i - (n - 1) / 2) * 0.06
        xs = x * 10 ** shift if logx else x + shift * (np.ptp(x) / 10 if x.size > 1 else 1)
        acc = scale * sweep.accuracy[i]                       # (values, seeds)
        mean, lo, hi = acc.mean(1), acc.min(1), acc.max(1)
        color = network_color(label, i)
        ax.errorbar(xs, mean, yerr=np.vstack([mean - lo, hi - mean]), color=color, marker="o", ms=5,
                    capsize=3, lw=1.5, label=f"{label} (mean, min–max of {acc.shape[1]} seeds)")
        ax.plot(np.repeat(xs, acc.shape[1]), acc.ravel(), ls="none", marker=".", ms=3, color=color, alpha=0.6)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel or sweep.param)
    ax.set_ylabel(ylabel or ("test accuracy (%)" if percent else "test accuracy"))
    ax.set_title(title)
    ax.legend(loc="best", fontsize="small")
    return fig


def plot_band(steps, values, ax=None, color: Optional[str] = None, label: str = "", scale: float = 1.0,
              alpha: float = 0.25):
    """Mean over seeds (line) and min--max over seeds (band) of curves sharing x values.

    Parameters
    ----------
    steps : array of shape (E,)
    values : array of shape (S, E), one curve per seed.
    scale : multiplies the values (100 for accuracies in percent).
    """
    fig, ax = _axes(ax)
    values = scale * np.asarray(values, dtype=float)
    if values.ndim != 2 or values.shape[1] != len(steps):
        raise ValueError(f"values must have shape (seeds, {len(steps)}), got {values.shape}")
    color = color or network_color(label)
    ax.fill_between(steps, values.min(0), values.max(0), color=color, alpha=alpha, lw=0)
    ax.plot(steps, values.mean(0), color=color, lw=1.5, label=f"{label} (mean, min–max of {len(values)} seeds)")
    return fig
