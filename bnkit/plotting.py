"""The book's figure style: one look for every chapter.

Colour-blind-safe colours (Okabe & Ito), white figure background (readable in
the book's dark theme too), labelled axes, a modest resolution so notebooks
stay small.
"""

from __future__ import annotations

from typing import Dict

__all__ = ["COLORS", "use_book_style", "book_style"]

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
