"""The book's figure style: one look for every chapter.

Colour-blind-safe colours (Okabe & Ito), white figure background (readable in
the book's dark theme too), labelled axes, a modest resolution so notebooks
stay small.
"""

from __future__ import annotations

from typing import Dict, Sequence, Tuple

import numpy as np

__all__ = ["COLORS", "use_book_style", "book_style", "NORMALIZATIONS", "normalization_set",
           "plot_normalization_sets", "HIGHLIGHT", "PLAIN", "column_set", "plot_batch_matrix",
           "STAGED_GRAPH_NODES", "STAGED_GRAPH_EDGES", "plot_staged_graph", "RUNNING_STATS_FLOW",
           "plot_running_stats_flow", "plot_band", "plot_unit_histograms"]

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
        ax.set_box_aspect(mask.shape, zoom=0.85)
        ax.view_init(elev=22, azim=-60)
        ax.set_xticks([]), ax.set_yticks([]), ax.set_zticks([])
        ax.set_xlabel("C (channels)", labelpad=-10)
        ax.set_ylabel("N (batch)", labelpad=-10)
        ax.set_zlabel("H, W", labelpad=-14)
        title = NORMALIZATIONS[norm] + (f" ({groups} groups)" if norm == "group" else "")
        ax.set_title(title)
    return fig


# --------------------------------------------------------------------------------------
# Chapter 1: the N x D matrix, one column's statistics and parameters
# --------------------------------------------------------------------------------------

#: Face colour of the highlighted cells in the schematic figures.
HIGHLIGHT = "#CFE3F3"
#: Face colour of the other cells.
PLAIN = "#F4F4F4"


def column_set(shape: Tuple[int, int], column: int) -> np.ndarray:
    """The entries of an (N, D) batch that share :math:`\\mu_j` and :math:`\\sigma_j^2` with column ``column``.

    Parameters
    ----------
    shape : (N, D)
    column : int
        :math:`j`, in ``range(D)`` (negative values count from the end).

    Returns
    -------
    ndarray of bool, shape (N, D)
        True on every row of column :math:`j` and nowhere else.
    """
    n, d = shape
    if not -d <= column < d:
        raise ValueError(f"column={column} is out of range for {d} columns")
    mask = np.zeros((n, d), bool)
    mask[:, column] = True
    return mask


def _cell(ax, x0, y0, text, highlighted, gid, width=1.0, height=0.62, fontsize=8.5):
    import matplotlib.patches as mpatches

    rect = mpatches.Rectangle((x0, y0), width, height, facecolor=HIGHLIGHT if highlighted else PLAIN,
                              edgecolor=COLORS["blue"] if highlighted else "#B0B0B0",
                              linewidth=1.3 if highlighted else 0.6, gid=gid)
    ax.add_patch(rect)
    ax.text(x0 + width / 2, y0 + height / 2, text, ha="center", va="center", fontsize=fontsize,
            gid=f"{gid}:text")
    return rect


def plot_batch_matrix(x, gamma, beta, column: int = 0, eps: float = 1e-5,
                      names: Sequence[str] = None, fmt: str = ".3g", fig=None):
    r"""An (N, D) batch, its per-column statistics and parameters, and the output; one column highlighted.

    Left, the input :math:`x` with its :math:`N` rows and :math:`D` columns; under
    it the four :math:`D`-vectors :math:`\mu` (column means), :math:`\sigma`
    (square roots of the biased variances :math:`\sigma_j^2`), :math:`\gamma` and
    :math:`\beta`; right, the training-mode output
    :math:`y_{ij} = \gamma_j (x_{ij} - \mu_j)/\sqrt{\sigma_j^2 + \varepsilon} + \beta_j`.
    Column ``column`` (:math:`j`) is highlighted in all six: its :math:`N` inputs
    are the only values that enter :math:`\mu_j` and :math:`\sigma_j`, and its
    outputs use only :math:`\mu_j, \sigma_j, \gamma_j, \beta_j`.

    Every highlighted or plain cell is a ``Rectangle`` whose ``gid`` names it:
    ``"x[i,j]"``, ``"y[i,j]"``, ``"mu[j]"``, ``"sigma[j]"``, ``"gamma[j]"``, ``"beta[j]"``;
    the number in it is a text with ``gid`` ``"<name>:text"``.

    Parameters
    ----------
    x : array_like of shape (N, D)
        A small batch (the figure shows every value).
    gamma, beta : array_like of shape (D,)
    column : int, default 0
    eps : float, default 1e-5
    names : sequence of D str, optional
        Column headers; default ``"j = 1"``, ... (1-based, as in the text).
    fmt : str, default ".3g"
        Format of the numbers in the cells.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.pyplot as plt

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 2:
        raise ValueError(f"x must be an (N, D) array with N >= 2 (got shape {x.shape})")
    n, d = x.shape
    gamma, beta = np.asarray(gamma, np.float64), np.asarray(beta, np.float64)
    if gamma.shape != (d,) or beta.shape != (d,):
        raise ValueError(f"gamma and beta must have shape ({d},) (got {gamma.shape} and {beta.shape})")
    mask = column_set((n, d), column)
    j = column % d
    names = [f"j = {k + 1}" for k in range(d)] if names is None else list(names)
    if len(names) != d:
        raise ValueError(f"names has {len(names)} entries for {d} columns")
    mu, var = x.mean(axis=0), x.var(axis=0)
    y = gamma * (x - mu) / np.sqrt(var + eps) + beta
    vectors = [("mu", r"$\mu$", mu), ("sigma", r"$\sigma$", np.sqrt(var)),
               ("gamma", r"$\gamma$", gamma), ("beta", r"$\beta$", beta)]

    if fig is None:
        fig = plt.figure(figsize=(0.8 * (2 * d + 3.8), 0.8 + 0.42 * (n + 5)))
    ax = fig.add_subplot(1, 1, 1)
    h, w = 0.62, 1.0
    gap = 2.8                                           # between the x and y blocks
    top = 0.0
    for block, values, left in (("x", x, 0.0), ("y", y, d * w + gap)):
        for k in range(d):
            ax.text(left + k * w + w / 2, top + 0.25, names[k], ha="center", va="bottom",
                    fontsize=8, fontweight="bold" if k == j else "normal",
                    color=COLORS["blue"] if k == j else "0.3")
        for i in range(n):
            for k in range(d):
                _cell(ax, left + k * w, top - (i + 1) * h, f"{values[i, k]:{fmt}}", mask[i, k],
                      f"{block}[{i},{k}]")
        ax.text(left + d * w / 2, top + 0.9, f"{block}  ({n} × {d})", ha="center", va="bottom",
                fontsize=10, fontweight="bold")
    for i in range(n):
        ax.text(-0.15, top - (i + 0.5) * h, f"i = {i + 1}", ha="right", va="center", fontsize=8,
                color="0.3")
    base = top - (n + 0.6) * h
    for r, (key, label, values) in enumerate(vectors):
        y0 = base - (r + 1) * h
        ax.text(-0.15, y0 + h / 2, label, ha="right", va="center", fontsize=10)
        for k in range(d):
            _cell(ax, k * w, y0, f"{values[k]:{fmt}}", k == j, f"{key}[{k}]")
    # the column's statistics: a bracket down the highlighted column
    xc = (j + 0.5) * w
    ax.annotate("", xy=(xc, base - 0.05), xytext=(xc, top - n * h - 0.02),
                arrowprops=dict(arrowstyle="-|>", color=COLORS["blue"], lw=1.4))
    ax.text(d * w + 0.12, base - 3 * h, "learned, one per column:\n" r"$\gamma_j$ (weight), $\beta_j$ (bias)",
            ha="left", va="center", fontsize=8, color="0.25")
    ax.text(d * w + 0.12, base - h, "computed from column $j$'s\n$N$ values, over the rows",
            ha="left", va="center", fontsize=8, color="0.25")
    # x -> y
    ax.annotate("", xy=(d * w + gap - 0.1, top - n * h / 2), xytext=(d * w + 0.1, top - n * h / 2),
                arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.4))
    ax.text(d * w + gap / 2, top - n * h / 2 + 0.15, "BN", ha="center", va="bottom", fontsize=9)
    ax.text(d * w + gap + d * w / 2, base - 1.5 * h,
            r"$y_{ij} = \gamma_j\,\dfrac{x_{ij} - \mu_j}{\sqrt{\sigma_j^2 + \varepsilon}} + \beta_j$",
            ha="center", va="center", fontsize=12)
    ax.set_xlim(-1.0, 2 * d * w + gap + 0.2)
    ax.set_ylim(base - 4 * h - 0.2, top + 1.5)
    ax.set_aspect("equal")
    ax.axis("off")
    ax.set_title(f"Batch norm on an N × D batch: column j = {j + 1} and everything it uses")
    return fig


# --------------------------------------------------------------------------------------
# Chapter 2: the staged computational graph
# --------------------------------------------------------------------------------------

# The value is hidden on the API page: its raw LaTeX labels would print untypeset in the PDF.
#: Nodes of :func:`plot_staged_graph`: name -> (label, kind, stage or None, (x, y) position).
#:
#: :meta hide-value:
STAGED_GRAPH_NODES: Dict[str, tuple] = {
    "x": (r"$x$", "array", None, (0.4, 1.0)),
    "mean": (r"$\mu$", "vector", 1, (1.9, 2.3)),
    "x_centered": (r"$x_\mu = x - \mu$", "array", 2, (3.3, 1.0)),
    "var": (r"$\sigma^2$", "vector", 3, (4.6, 2.3)),
    "invstd": (r"$r = 1/\sqrt{\sigma^2 + \varepsilon}$", "vector", 4, (6.3, 2.3)),
    "xhat": (r"$\hat{x} = x_\mu\, r$", "array", 5, (6.3, 1.0)),
    "weight": (r"$\gamma$", "param", None, (7.45, -0.25)),
    "bias": (r"$\beta$", "param", None, (8.65, -0.25)),
    "y": (r"$y = \gamma\hat{x} + \beta$", "array", 6, (8.05, 1.0)),
    "loss": (r"$L$", "loss", None, (9.75, 1.0)),
}

#: Edges of :func:`plot_staged_graph`: (input, output) of each stage of :mod:`bnkit.staged`.
STAGED_GRAPH_EDGES: Tuple[Tuple[str, str], ...] = (
    ("x", "mean"), ("x", "x_centered"), ("mean", "x_centered"), ("x_centered", "var"),
    ("var", "invstd"), ("x_centered", "xhat"), ("invstd", "xhat"), ("xhat", "y"),
    ("weight", "y"), ("bias", "y"), ("y", "loss"),
)


def plot_staged_graph(ax=None):
    r"""The six stages of training-mode batch norm (:mod:`bnkit.staged`) as a graph.

    Boxes are :data:`STAGED_GRAPH_NODES` (blue: (N, D) arrays, orange: (D,)
    per-channel vectors, green: parameters), arrows :data:`STAGED_GRAPH_EDGES`;
    the two nodes that feed two stages (:math:`x` and :math:`x_\mu`) are marked
    "used twice". Backpropagation runs the arrows in reverse.

    Each box is a text artist with ``gid`` the node's name; each arrow an
    annotation with ``gid`` ``"input->output"``.

    Returns
    -------
    matplotlib Figure
    """
    import matplotlib.colors as mcolors
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=(9.0, 3.6))
    fig = ax.figure
    kind_color = {"array": COLORS["blue"], "vector": COLORS["orange"],
                  "param": COLORS["green"], "loss": COLORS["black"]}
    boxes = {}
    for name, (label, kind, stage, (px, py)) in STAGED_GRAPH_NODES.items():
        color = kind_color[kind]
        boxes[name] = ax.text(px, py, label, ha="center", va="center", fontsize=11, zorder=2,
                              gid=name, bbox=dict(boxstyle="round,pad=0.45", ec=color, lw=1.4,
                                                  fc=mcolors.to_rgba(color, 0.15)))
        if stage is not None:
            ax.text(px, py + 0.42, f"stage {stage}", ha="center", va="bottom", fontsize=8,
                    color="0.3")
    # The arrows are drawn after the boxes (higher zorder), so at every draw they are clipped
    # at the edges the boxes have just been laid out with, at any resolution.
    for a, b in STAGED_GRAPH_EDGES:
        ax.annotate("", xy=boxes[b].get_position(), xytext=boxes[a].get_position(), zorder=3,
                    gid=f"{a}->{b}",
                    arrowprops=dict(arrowstyle="-|>", color="0.25", lw=1.2, mutation_scale=12,
                                    patchA=boxes[a].get_bbox_patch(),
                                    patchB=boxes[b].get_bbox_patch()))
    ax.text(9.0, 1.18, r"$g$", fontsize=10, color="0.25")
    outputs = {}
    for a, _ in STAGED_GRAPH_EDGES:
        outputs[a] = outputs.get(a, 0) + 1
    for name, count in outputs.items():
        if count > 1:
            px, py = STAGED_GRAPH_NODES[name][3]
            ax.text(px, py - 0.5, "used twice", ha="center", va="top", fontsize=8,
                    color=COLORS["vermillion"])
    handles = [plt.Rectangle((0, 0), 1, 1, fc=mcolors.to_rgba(COLORS[c], 0.15), ec=COLORS[c])
               for c in ("blue", "orange", "green")]
    ax.legend(handles, ["(N, D) array", "(D,) per-channel vector", "parameter (D,)"],
              loc="lower left", ncol=3, fontsize=8, bbox_to_anchor=(0.0, -0.12))
    ax.set_xlim(-0.1, 10.2)
    ax.set_ylim(-0.75, 2.95)
    ax.axis("off")
    ax.set_title("Training-mode batch norm as a graph; backpropagation runs the arrows in reverse")
    return fig


# --------------------------------------------------------------------------------------
# Chapter 4: what each mode reads and writes
# --------------------------------------------------------------------------------------

#: Per forward pass of a PyTorch batch-norm layer (default ``momentum``, ``track_running_stats=True``):
#: the state its output depends on ("reads") and the state it changes ("writes"), by mode.
RUNNING_STATS_FLOW: Dict[str, Dict[str, Tuple[str, ...]]] = {
    "train": {"reads": ("weight", "bias"),
              "writes": ("running_mean", "running_var", "num_batches_tracked")},
    "eval": {"reads": ("weight", "bias", "running_mean", "running_var"),
             "writes": ()},
}


def plot_running_stats_flow(fig=None):
    r"""Training mode and eval mode side by side: what a forward pass reads and writes.

    Training mode (``model.train()``): the output is normalized with the batch's
    own :math:`\mu_\mathcal{B}, \sigma^2_\mathcal{B}`; the running statistics are
    not read, but every forward pass *writes* them (moving average with
    momentum :math:`\alpha`, unbiased variance) and counts the batch in
    ``num_batches_tracked``. Eval mode (``model.eval()``): the output is
    normalized with ``running_mean`` and ``running_var``, which are read and
    never written. The arrows follow :data:`RUNNING_STATS_FLOW`: blue solid
    arrows are reads (into the normalization), vermillion dashed arrows writes
    (into the buffers). Arrow artists have ``gid`` ``"<mode>:<read|write>:<state>"``.

    Returns
    -------
    matplotlib Figure with two axes, "train" first.
    """
    import matplotlib.pyplot as plt

    if fig is None:
        fig = plt.figure(figsize=(11.0, 4.4))
    axes = fig.subplots(1, 2)
    spots = {"x": (1.3, 5.0), "params": (5.2, 5.0), "batch": (1.3, 3.0), "norm": (5.2, 3.0),
             "y": (8.6, 3.0), "running": (4.5, 0.9), "counter": (9.4, 0.9)}
    texts = {
        "x": "batch x\n(m values per channel)",
        "params": "parameters " r"$\gamma$, $\beta$" "\n(weight, bias)",
        "batch": "batch statistics\n" r"$\mu_\mathcal{B},\ \sigma^2_\mathcal{B}$",
        "norm": "normalize\n" r"$\gamma\,(x - \mu)\,/\sqrt{\sigma^2 + \varepsilon} + \beta$",
        "y": "output y",
        "running": "buffers\nrunning_mean " r"$\hat\mu$" "\nrunning_var " r"$\hat\sigma^2$",
        "counter": "buffer\nnum_batches_tracked",
    }
    edge = {"x": "0.2", "params": COLORS["green"], "batch": COLORS["orange"], "norm": "0.2",
            "y": "0.2", "running": COLORS["blue"], "counter": COLORS["blue"]}
    nodes = {}
    for ax, mode in zip(axes, ("train", "eval")):
        for key, text in texts.items():
            active = mode == "train" or key != "batch"
            nodes[mode, key] = ax.text(
                *spots[key], text, ha="center", va="center", fontsize=8.5, zorder=2,
                color="black" if active else "0.6",
                bbox=dict(boxstyle="round,pad=0.4", lw=1.2, fc="white" if active else "#F4F4F4",
                          ec=edge[key] if active else "0.75"))
    # arrows above the boxes (zorder 3): drawn after them, clipped at their fresh edges
    for ax, mode in zip(axes, ("train", "eval")):
        flow = RUNNING_STATS_FLOW[mode]
        training = mode == "train"

        def arrow(a, b, color, style, gid, rad=0.0):
            ax.annotate("", xy=nodes[mode, b].get_position(), xytext=nodes[mode, a].get_position(),
                        gid=gid, zorder=3,
                        arrowprops=dict(arrowstyle="-|>", color=color, lw=1.5, linestyle=style,
                                        mutation_scale=14, patchA=nodes[mode, a].get_bbox_patch(),
                                        patchB=nodes[mode, b].get_bbox_patch(),
                                        connectionstyle=f"arc3,rad={rad}"))

        arrow("x", "norm", "0.3", "-", f"{mode}:input")
        arrow("norm", "y", "0.3", "-", f"{mode}:output")
        if training:
            arrow("x", "batch", "0.3", "-", f"{mode}:compute")
            arrow("batch", "norm", COLORS["blue"], "-", f"{mode}:read:batch statistics")
        for state in flow["reads"]:
            if state in ("bias", "running_var"):
                continue                       # one arrow per box: weight and bias, mean and var
            source = "params" if state == "weight" else "running"
            arrow(source, "norm", COLORS["blue"], "-", f"{mode}:read:{state}")
            if source == "running":
                ax.text(5.05, 2.0, "read", fontsize=8, color=COLORS["blue"], ha="left", va="center")
        for state in flow["writes"]:
            if state == "running_mean":
                arrow("batch", "running", COLORS["vermillion"], "--", f"{mode}:write:{state}", rad=0.3)
                ax.text(-0.2, 0.45, "write:\n"
                        r"$\hat\mu \leftarrow (1-\alpha)\,\hat\mu + \alpha\,\mu_\mathcal{B}$" "\n"
                        r"$\hat\sigma^2 \leftarrow (1-\alpha)\,\hat\sigma^2 + \alpha\,\frac{m}{m-1}\,\sigma^2_\mathcal{B}$",
                        fontsize=8, color=COLORS["vermillion"], ha="left", va="center")
            elif state == "num_batches_tracked":
                arrow("running", "counter", COLORS["vermillion"], "--", f"{mode}:write:{state}")
                ax.text(6.85, 1.1, "+= 1", fontsize=8, color=COLORS["vermillion"], ha="center")
        if not training:
            ax.text(1.3, 2.25, "not used", ha="center", va="center", fontsize=8, color="0.55")
            ax.text(9.4, 0.0, "nothing is written", ha="center", va="center", fontsize=8,
                    color=COLORS["vermillion"])
        ax.set_xlim(-0.3, 10.7)
        ax.set_ylim(-0.3, 5.6)
        ax.axis("off")
        ax.set_title(("model.train(): normalize with the batch, update the buffers" if training
                      else "model.eval(): normalize with the buffers, change nothing"), fontsize=10)
    return fig


# --------------------------------------------------------------------------------------
# Results over seeds, distributions per unit
# --------------------------------------------------------------------------------------

def plot_band(ax, x, runs, label: str = None, color: str = None, marker: str = "o"):
    """The mean over seeds as a line with markers, and the min–max range as a band.

    Parameters
    ----------
    ax : matplotlib Axes
    x : array_like of shape (K,)
    runs : array_like of shape (S, K)
        One row per seed.
    label, color, marker : passed to ``ax.plot``.

    Returns
    -------
    (line, band) : the Line2D of the mean and the PolyCollection of the range.
    """
    runs = np.asarray(runs, dtype=np.float64)
    x = np.asarray(x)
    if runs.ndim != 2 or runs.shape[1] != x.shape[0]:
        raise ValueError(f"runs must have shape (seeds, {x.shape[0]}) (got {runs.shape})")
    (line,) = ax.plot(x, runs.mean(axis=0), marker=marker, markersize=4, color=color, label=label)
    band = ax.fill_between(x, runs.min(axis=0), runs.max(axis=0), color=line.get_color(),
                           alpha=0.25, linewidth=0)
    return line, band


def plot_unit_histograms(ax, z, units: Sequence[int] = (0, 1, 2, 3, 4), bins=None,
                         saturated_beyond: float = None):
    """Histograms of a few units of a layer, one colour per unit; the saturated range shaded.

    Parameters
    ----------
    ax : matplotlib Axes
    z : array_like of shape (N, D)
        One layer's pre-activations over a batch.
    units : sequence of int
        Columns of ``z`` to draw.
    bins : array_like, optional
        Bin edges shared by the units (default: 60 bins over the range of the drawn values).
    saturated_beyond : float, optional
        Shade :math:`|z| >` this value (the saturated range of the nonlinearity).

    Returns
    -------
    list of the histogram patches' containers, one per unit.
    """
    z = np.asarray(z, dtype=np.float64)
    if z.ndim != 2:
        raise ValueError(f"z must be an (N, D) array (got shape {z.shape})")
    if bins is None:
        bins = np.linspace(z[:, list(units)].min(), z[:, list(units)].max(), 61)
    palette = [COLORS[k] for k in ("blue", "orange", "green", "vermillion", "purple", "sky")]
    drawn = []
    for k, unit in enumerate(units):
        drawn.append(ax.hist(z[:, unit], bins=bins, color=palette[k % len(palette)], alpha=0.65,
                             histtype="stepfilled")[2])
    if saturated_beyond is not None:
        lo, hi = bins[0], bins[-1]
        for a, b in ((lo, -saturated_beyond), (saturated_beyond, hi)):
            if b > a:
                ax.axvspan(a, b, color="0.5", alpha=0.15, linewidth=0)
    return drawn
