"""The book's figure style: one look for every chapter.

Colour-blind-safe colours (Okabe & Ito), white figure background (readable in
the book's dark theme too), labelled axes, a modest resolution so notebooks
stay small.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ["COLORS", "use_book_style", "book_style", "NORMALIZATIONS", "normalization_set",
           "plot_normalization_sets"]

#: Okabe-Ito palette, safe for the common forms of colour blindness.
COLORS: Dict[str, str] = {
    "blue": "#0072B2",
    "orange": "#E69F00",
    "green": "#009E73",
    "vermillion": "#D55E00",
    "sky": "#56B4E9",
    "purple": "#CC79A7",
    "yellow": "#F0E442",
    "black": "#000000",
}

#: Matplotlib settings applied by :func:`use_book_style`.
book_style = {
    "figure.figsize": (6.4, 4.0),
    "figure.dpi": 80,
    "savefig.dpi": 120,
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": "medium",
    "axes.labelsize": "medium",
    "legend.frameon": False,
    "font.size": 10,
    "image.cmap": "viridis",
}


def use_book_style() -> None:
    """Apply the book's style to matplotlib (call once at the top of a notebook)."""
    import matplotlib as mpl
    from cycler import cycler

    mpl.rcParams.update(book_style)
    mpl.rcParams["axes.prop_cycle"] = cycler(color=[
        COLORS[k] for k in ("blue", "orange", "green", "vermillion", "sky", "purple", "black")])


#: The four normalizations of Wu & He (2018)'s figure, with their titles.
NORMALIZATIONS: Dict[str, str] = {
    "batch": "Batch norm",
    "layer": "Layer norm",
    "instance": "Instance norm",
    "group": "Group norm",
}


def normalization_set(norm: str, shape: Tuple[int, int, int] = (6, 6, 4),
                      groups: int = 3) -> np.ndarray:
    """The values normalized together with value (0, 0, 0), as a boolean mask.

    Parameters
    ----------
    norm : {"batch", "layer", "instance", "group"}
    shape : (N, C, S)
        The input's batch size, channels and positions (:math:`S = H W`, flattened).
    groups : int, default 3
        :math:`G` for group norm; must divide :math:`C`.

    Returns
    -------
    ndarray of bool, shape (N, C, S)
        Batch norm: channel 0 of every example; layer norm: every channel of
        example 0; instance norm: channel 0 of example 0; group norm: the first
        :math:`C/G` channels of example 0.
    """
    n, c, s = shape
    if norm not in NORMALIZATIONS:
        raise ValueError(f"norm must be one of {sorted(NORMALIZATIONS)} (got {norm!r})")
    if norm == "group" and (groups < 1 or c % groups):
        raise ValueError(f"groups={groups} must divide the {c} channels")
    mask = np.zeros((n, c, s), bool)
    if norm == "batch":
        mask[:, 0, :] = True
    elif norm == "layer":
        mask[0, :, :] = True
    elif norm == "instance":
        mask[0, 0, :] = True
    else:
        mask[0, : c // groups, :] = True
    return mask


def plot_normalization_sets(norms: Sequence[str] = tuple(NORMALIZATIONS),
                            shape: Tuple[int, int, int] = (6, 6, 4), groups: int = 3,
                            fig=None):
    """Wu & He's picture: one cube per normalization, the values that share a mean in blue.

    Each cube is a batch of shape (N, C, H·W) (the spatial axes flattened into
    one); the blue cells are :func:`normalization_set` of the front corner.

    Returns
    -------
    matplotlib Figure, with one 3-D axes per entry of ``norms``.
    """
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(2.9 * len(norms), 3.0), layout="constrained")
    for i, norm in enumerate(norms, start=1):
        ax = fig.add_subplot(1, len(norms), i, projection="3d")
        mask = normalization_set(norm, shape, groups).transpose(1, 0, 2)   # voxel axes: (C, N, S)
        colors = np.where(mask, COLORS["blue"], "#F0F0F0")
        ax.voxels(np.ones(mask.shape, bool), facecolors=colors, edgecolor="#707070", linewidth=0.3)
        ax.set_box_aspect(mask.shape, zoom=0.95)
        ax.view_init(elev=22, azim=-60)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_xlabel("C (channels)", labelpad=-10)
        ax.set_ylabel("N (batch)", labelpad=-10)
        ax.set_zlabel("H, W", labelpad=-12)
        title = NORMALIZATIONS[norm] + (f" ({groups} groups)" if norm == "group" else "")
        ax.set_title(title)
    return fig
