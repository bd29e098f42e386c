"""Plots of :class:`~bnkit.experiments.training.History` objects, in the book's style.

Every function draws into the axes it is given (or new ones) and returns the
figure, so a notebook can show it and the command line can save it.

* :func:`plot_figure1` -- Ioffe & Szegedy's Figure 1: (a) test accuracy,
  (b) percentiles of a sigmoid input without BN, (c) with BN.
* :func:`plot_accuracy`, :func:`plot_percentiles` -- its panels, one at a time;
  :func:`plot_accuracy_band` -- test accuracy over seeds, mean and min--max band.
* :func:`plot_beta_gamma` -- BN's beta and gamma against the measured mean
  and standard deviation of the unit they control (and the plain network's).
* :func:`plot_sweep` -- a metric against a swept setting, one curve per network.
* :func:`plot_ics`, :func:`plot_train_percentiles`, :func:`plot_landscape` --
  Chapter 6's measurements over training.
"""

from __future__ import annotations

from typing import Dict, Mapping, Optional, Sequence

import numpy as np

from ..plotting import COLORS
from .training import History

__all__ = ["NET_COLORS", "net_color", "plot_accuracy", "plot_accuracy_band", "plot_percentiles", "plot_figure1",
           "plot_beta_gamma", "plot_sweep", "plot_ics", "plot_train_percentiles", "plot_landscape", "plot_seed_bands"]

#: Colours of the networks across the book's experiment figures.
NET_COLORS = {"plain": COLORS["blue"], "BN": COLORS["vermillion"], "noisy BN": COLORS["green"],
              "BN after": COLORS["purple"]}


def _axes(ax, ncols=1, figsize=None):
    import matplotlib.pyplot as plt

    if ax is not None:
        return ax.figure, ax
    fig, ax = plt.subplots(1, ncols, figsize=figsize, layout="constrained")
    return fig, ax


def net_color(label: str, i: int = 0, colors: Optional[Mapping[str, str]] = None) -> str:
    """The colour of network ``label``: ``colors[label]``, else :data:`NET_COLORS`, else the ``i``-th book colour."""
    if colors and label in colors:
        return colors[label]
    order = ("blue", "vermillion", "green", "orange", "purple", "sky", "black")
    return NET_COLORS.get(label, COLORS[order[i % len(order)]])


def _label_accuracy_axes(ax, title: str, ylim: Optional[Sequence[float]]) -> None:
    """Axis labels, limits, title and legend of an accuracy-against-steps plot."""
    ax.set_xlabel("training step")
    ax.set_ylabel("test accuracy (%)")
    if ylim is not None:
        ax.set_ylim(*ylim)
    ax.set_title(title)
    ax.legend(loc="lower right")


def plot_accuracy(histories: Mapping[str, History], ax=None, title: str = "Test accuracy",
                  ylim: Optional[Sequence[float]] = None):
    """Test accuracy (%) against training steps, one line per labelled history."""
    fig, ax = _axes(ax)
    for i, (label, h) in enumerate(histories.items()):
        ax.plot(h.eval_steps, 100 * h.test_accuracy, color=net_color(label, i), label=label)
    _label_accuracy_axes(ax, title, ylim)
    return fig


def plot_accuracy_band(histories: Mapping[str, Sequence[History]], ax=None, title: str = "Test accuracy",
                       ylim: Optional[Sequence[float]] = None):
    """Test accuracy (%) over seeds: the mean as a line, the min--max over seeds as a band.

    ``histories`` maps a label to one History per seed, all evaluated at the
    same steps (the same ``eval_every`` and number of steps).
    """
    fig, ax = _axes(ax)
    for i, (label, hs) in enumerate(histories.items()):
        steps = hs[0].eval_steps
        if any(len(h.eval_steps) != len(steps) or (h.eval_steps != steps).any() for h in hs):
            raise ValueError(f"the histories of {label!r} were not evaluated at the same steps")
        acc = 100 * np.stack([h.test_accuracy for h in hs])
        c = net_color(label, i)
        ax.fill_between(steps, acc.min(0), acc.max(0), color=c, alpha=0.3, lw=0)
        ax.plot(steps, acc.mean(0), color=c, label=f"{label} ({len(hs)} seeds)")
    _label_accuracy_axes(ax, title, ylim)
    return fig


def plot_percentiles(history: History, ax=None, title: Optional[str] = None, color: Optional[str] = None,
                     label: str = "", ylim: Optional[Sequence[float]] = None, legend_loc: str = "best",
                     legend_ncol: int = 1):
    """The recorded percentiles of the watched sigmoid input against training steps.

    The median is drawn thick, the outer percentiles thin, as in the paper's
    Figure 1 (b, c).
    """
    fig, ax = _axes(ax)
    color = color or COLORS["blue"]
    levels = history.config.get("percentile_levels", [15, 50, 85])
    widths = {0: 1.0, len(levels) - 1: 1.0}
    for j, p in enumerate(levels):
        middle = j == len(levels) // 2
        ax.plot(history.record_steps, history.percentiles[:, j], color=color,
                lw=2.0 if middle else widths.get(j, 1.0), alpha=1.0 if middle else 0.75,
                ls="-" if middle else "--", label=f"{p:g}th")
    ax.set_xlabel("training step")
    ax.set_ylabel("sigmoid input $z$")
    if ylim is not None:
        ax.set_ylim(*ylim)
    layer, unit = history.config.get("train", {}).get("watch", (-1, 0))
    ax.set_title(title or f"{label} sigmoid input (layer {layer}, unit {unit})".strip())
    ax.legend(loc=legend_loc, ncol=legend_ncol, fontsize="small", title="percentile", title_fontsize="small")
    return fig


def plot_figure1(plain: History, bn: History, axes=None, suptitle: Optional[str] = None):
    """The paper's Figure 1, three panels side by side.

    (a) test accuracy of both networks; (b) the 15th/50th/85th percentiles of
    the watched sigmoid input without BN; (c) the same with BN. Panels (b) and
    (c) share their y-axis so the spreads compare directly.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(13.5, 3.8), layout="constrained")
    else:
        fig = axes[0].figure
    plot_accuracy({"plain": plain, "BN": bn}, ax=axes[0], title="(a) test accuracy")
    legend = {"legend_loc": "upper center", "legend_ncol": 3}
    plot_percentiles(plain, ax=axes[1], color=NET_COLORS["plain"], title="(b) sigmoid input, without BN", **legend)
    plot_percentiles(bn, ax=axes[2], color=NET_COLORS["BN"], title="(c) sigmoid input, with BN", **legend)
    lo = min(plain.percentiles.min(), bn.percentiles.min())
    hi = max(plain.percentiles.max(), bn.percentiles.max())
    span = hi - lo if hi > lo else 1.0
    for ax in axes[1:]:  # headroom at the top for the legend
        ax.set_ylim(lo - 0.05 * span, hi + 0.3 * span)
    if suptitle:
        fig.suptitle(suptitle)
    return fig


def plot_beta_gamma(bn: History, plain: Optional[History] = None, axes=None):
    r"""Where the distribution of the watched unit lives.

    Left: BN's :math:`\beta` and the measured mean of the sigmoid input
    :math:`z` (and, dashed, the plain network's measured mean, which no single
    parameter holds). Right: :math:`|\gamma|` and the measured standard
    deviation of :math:`z` (and the plain network's).
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), layout="constrained")
    else:
        fig = axes[0].figure
    c_bn, c_plain = NET_COLORS["BN"], NET_COLORS["plain"]
    s = bn.record_steps
    axes[0].plot(s, bn.beta, color=c_bn, lw=2.5, alpha=0.5, label=r"BN: $\beta$ (a parameter)")
    axes[0].plot(s, bn.unit_mean, color=c_bn, lw=1.0, ls="--", label="BN: measured mean of $z$")
    axes[1].plot(s, np.abs(bn.gamma), color=c_bn, lw=2.5, alpha=0.5, label=r"BN: $|\gamma|$ (a parameter)")
    axes[1].plot(s, bn.unit_std, color=c_bn, lw=1.0, ls="--", label="BN: measured std of $z$")
    if plain is not None:
        axes[0].plot(plain.record_steps, plain.unit_mean, color=c_plain, lw=1.0,
                     label="plain: measured mean of $z$")
        axes[1].plot(plain.record_steps, plain.unit_std, color=c_plain, lw=1.0,
                     label="plain: measured std of $z$")
    axes[0].set_title("mean of the sigmoid input")
    axes[1].set_title("spread of the sigmoid input")
    for ax, lab in zip(axes, ("mean", "standard deviation")):
        ax.set_xlabel("training step")
        ax.set_ylabel(f"{lab} of $z$")
        ax.legend(loc="best", fontsize="small")
    return fig


def plot_sweep(x: Sequence[float], curves: Mapping[str, Sequence[float]], ax=None, xlabel: str = "",
               ylabel: str = "", title: str = "", logx: bool = True, percent: bool = False):
    """One line with markers per labelled curve: ``curves[label][i]`` at ``x[i]``.

    ``percent`` multiplies the values by 100 (for accuracies in [0, 1]).
    """
    fig, ax = _axes(ax)
    for i, (label, ys) in enumerate(curves.items()):
        ys = np.asarray(ys, dtype=float) * (100 if percent else 1)
        ax.plot(x, ys, marker="o", color=net_color(label, i), label=label)
    if logx:
        ax.set_xscale("log")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.legend(loc="best")
    return fig


# --------------------------------------------------------------------------- #
# Chapter 6: ICS and the landscape over training
# --------------------------------------------------------------------------- #
_ICS_ROWS = {
    "diff_norm": r"ICS $\|G - G'\|_2$",
    "relative": r"$\|G - G'\|_2 \,/\, \|G\|_2$",
    "cosine": r"$\cos(G, G')$",
}


def plot_ics(histories: Dict[str, object], layer_labels: Sequence[str], prefix: str = "ics",
             rows: Sequence[str] = ("diff_norm", "cosine"), colors: Optional[Dict[str, str]] = None,
             title: str = ""):
    r"""ICS over training: one row per quantity in ``rows``, one column per measured layer.

    ``rows`` among ``"diff_norm"`` (:math:`\lVert G - G'\rVert`, log scale
    when positive), ``"relative"`` (:math:`\lVert G - G'\rVert / \lVert G\rVert`)
    and ``"cosine"``. ``histories`` maps a label ("plain", "BN", "noisy BN")
    to a History with the series of :func:`~bnkit.experiments.ics.ics_callback`. Returns the figure.
    """
    import matplotlib.pyplot as plt

    k = len(layer_labels)
    fig, axes = plt.subplots(len(rows), k, figsize=(3.1 * k, 2.3 * len(rows) + 0.4), sharex=True,
                             squeeze=False, layout="constrained")
    for i, (label, h) in enumerate(histories.items()):
        steps, diff = h.logged(f"{prefix}/diff_norm")
        series = {"diff_norm": diff, "cosine": h.logged(f"{prefix}/cosine")[1]}
        with np.errstate(divide="ignore", invalid="ignore"):
            series["relative"] = diff / h.logged(f"{prefix}/grad_norm")[1]
        for r, row in enumerate(rows):
            for j in range(k):
                axes[r, j].plot(steps, series[row][:, j], color=net_color(label, i, colors), label=label)
    for j, name in enumerate(layer_labels):
        axes[0, j].set_title(name)
        axes[-1, j].set_xlabel("training step")
        for r, row in enumerate(rows):
            if row == "diff_norm" and all((h.logged(f"{prefix}/diff_norm")[1][:, j] > 0).all()
                                          for h in histories.values()):
                axes[r, j].set_yscale("log")
            if row == "cosine":
                axes[r, j].set_ylim(min(-0.05, axes[r, j].get_ylim()[0]), 1.05)
    for r, row in enumerate(rows):
        axes[r, 0].set_ylabel(_ICS_ROWS[row])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_train_percentiles(history, ax=None, key: str = "train_percentiles", color: Optional[str] = None,
                           title: str = ""):
    """The percentiles logged by :func:`~bnkit.experiments.santurkar.percentile_callback` over training.

    The median is drawn thick, the other percentiles dashed.
    """
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    steps, p = history.logged(key)
    levels = (15, 50, 85) if p.shape[1] == 3 else range(p.shape[1])
    mid = p.shape[1] // 2
    for j, level in enumerate(levels):
        ax.plot(steps, p[:, j], color=color, lw=2.0 if j == mid else 1.0, ls="-" if j == mid else "--",
                alpha=1.0 if j == mid else 0.75, label=f"{level}th percentile")
    ax.set_xlabel("training step")
    ax.set_ylabel("sigmoid input $z$ (training mode)")
    if title:
        ax.set_title(title)
    return ax.figure


def plot_landscape(histories: Dict[str, object], axes=None, prefix: str = "landscape",
                   colors: Optional[Dict[str, str]] = None, title: str = ""):
    r"""Three panels over training: loss variation band, gradient-predictiveness band, :math:`\beta_{\text{eff}}`.

    Each band spans the min and max over the step sizes :math:`\eta` at every
    measured step. ``histories`` maps a label ("plain", "BN", "noisy BN") to a
    History with the series of :func:`~bnkit.experiments.landscape.landscape_callback`; ``axes`` is an
    optional row of 3 axes. Returns the figure.
    """
    import matplotlib.pyplot as plt

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.4), layout="constrained")
    else:
        fig = axes[0].figure
    for i, (label, h) in enumerate(histories.items()):
        c = net_color(label, i, colors)
        steps, loss = h.logged(f"{prefix}/loss")
        _, diff = h.logged(f"{prefix}/grad_diff")
        _, beta = h.logged(f"{prefix}/beta")
        axes[0].fill_between(steps, loss.min(1), loss.max(1), color=c, alpha=0.35, lw=0, label=label)
        axes[1].fill_between(steps, diff.min(1), diff.max(1), color=c, alpha=0.35, lw=0, label=label)
        axes[2].plot(steps, beta, color=c, label=label)
    axes[0].set_ylabel(r"loss $\mathcal{L}(w - \eta g)$")
    axes[1].set_ylabel(r"$\|\nabla\mathcal{L}(w) - \nabla\mathcal{L}(w - \eta g)\|_2$")
    axes[2].set_ylabel(r"effective $\beta$-smoothness")
    for ax, t in zip(axes, ("loss variation", "gradient predictiveness", r"$\beta$-smoothness")):
        ax.set_xlabel("training step")
        ax.set_title(f"{title}: {t}" if title else t)
    for ax in axes:
        ax.set_yscale("log")
    axes[0].legend(fontsize="small")
    return fig


def plot_seed_bands(curves: Mapping[str, Sequence], ax=None, window: Optional[float] = None, logy: bool = False,
                    ylabel: str = "", title: str = "", colors: Optional[Mapping[str, str]] = None):
    """One measurement over training and over seeds: the mean as a line, the min--max over seeds as a band.

    ``curves`` maps a label to ``(steps, values)`` with ``steps`` of shape
    ``(T,)`` and ``values`` of shape ``(seeds, T)``. ``window``: the first
    step of the summary window, shaded from there to the last step. NaNs are
    ignored. Returns the figure.
    """
    fig, ax = _axes(ax)
    last = 0
    for i, (label, (steps, values)) in enumerate(curves.items()):
        values = np.asarray(values, dtype=np.float64)
        if values.ndim != 2 or values.shape[1] != len(steps):
            raise ValueError(f"{label!r}: values must have shape (seeds, {len(steps)}), got {values.shape}")
        c = net_color(label, i, colors)
        with np.errstate(all="ignore"):
            lo, hi, mean = np.nanmin(values, 0), np.nanmax(values, 0), np.nanmean(values, 0)
        ax.fill_between(steps, lo, hi, color=c, alpha=0.25, lw=0)
        ax.plot(steps, mean, color=c, label=f"{label} ({values.shape[0]} seeds)")
        last = max(last, float(np.max(steps)))
    if window is not None:
        ax.axvspan(window, last, color="0.85", alpha=0.5, lw=0, zorder=0, label="summary window")
    if logy:
        ax.set_yscale("log")
    ax.set_xlabel("training step")
    if ylabel:
        ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    ax.legend(fontsize="small")
    return fig
