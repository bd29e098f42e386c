"""bnkit.plotting: the book style, and the normalization-set picture against torch's own functions.

The oracle for :func:`normalization_set`: the values a normalized output depends on.
For generic input, y[0, 0, 0] of torch's batch/layer/instance/group norm has a
non-zero derivative with respect to exactly the values that share its statistics.
"""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from bnkit.plotting import NORMALIZATIONS, normalization_set, plot_normalization_sets  # noqa: E402

SHAPE = (4, 6, 5)   # (N, C, S)
GROUPS = 3


def _torch_dependence(norm):
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    if norm == "batch":
        y = F.batch_norm(x, None, None, training=True)
    elif norm == "layer":
        y = F.layer_norm(x, x.shape[1:])
    elif norm == "instance":
        y = F.instance_norm(x)
    else:
        y = F.group_norm(x, GROUPS)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    return (grad.abs() > 1e-12).numpy()


@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
def test_normalization_set_is_what_torch_normalizes_together(norm):
    np.testing.assert_array_equal(normalization_set(norm, SHAPE, GROUPS), _torch_dependence(norm))


def test_normalization_set_refuses_unknown_norms_and_bad_groups():
    with pytest.raises(ValueError, match="norm must be one of"):
        normalization_set("weight", SHAPE)
    with pytest.raises(ValueError, match="groups=4 must divide the 6 channels"):
        normalization_set("group", SHAPE, groups=4)


def test_plot_normalization_sets_draws_one_titled_cube_per_norm():
    fig = plot_normalization_sets()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Batch norm", "Layer norm", "Instance norm", "Group norm (3 groups)"]
    # matplotlib draws the visible voxels, shaded: some blue (the set), the rest grey
    for ax in fig.axes:
        faces = np.array([p.get_facecolor()[0][:3] for p in ax.collections])
        blue = faces[:, 2] - faces[:, 0] > 0.3
        assert 0 < blue.sum() < len(faces)


# --- chapter 1: the N x D matrix ------------------------------------------------------

from matplotlib.colors import to_hex  # noqa: E402

from bnkit.plotting import (HIGHLIGHT, RUNNING_STATS_FLOW, STAGED_GRAPH_EDGES,  # noqa: E402
                            STAGED_GRAPH_NODES, column_set, plot_band, plot_batch_matrix,
                            plot_running_stats_flow, plot_staged_graph, plot_unit_histograms)


@pytest.mark.parametrize("column", [0, 2, -1])
def test_column_set_is_what_y_of_that_column_depends_on(column):
    x = torch.randn(5, 4, dtype=torch.float64, generator=torch.Generator().manual_seed(1),
                    requires_grad=True)
    y = F.batch_norm(x, None, None, training=True)
    (grad,) = torch.autograd.grad(y[0, column], x)
    np.testing.assert_array_equal(column_set((5, 4), column), (grad.abs() > 1e-12).numpy())


def test_column_set_refuses_a_column_out_of_range():
    with pytest.raises(ValueError, match="column=4 is out of range for 4 columns"):
        column_set((3, 4), 4)


def _cells(fig):
    ax = fig.axes[0]
    rects = {p.get_gid(): p for p in ax.patches if p.get_gid()}
    texts = {t.get_gid()[:-5]: t.get_text() for t in ax.texts if (t.get_gid() or "").endswith(":text")}
    return rects, texts


def test_batch_matrix_marks_one_column_and_shows_its_statistics_and_torch_output():
    rng = np.random.default_rng(0)
    x = rng.normal([10.0, -2.0, 0.5], [3.0, 0.5, 0.1], size=(6, 3))
    gamma, beta = np.array([1.0, 2.0, 0.5]), np.array([0.0, -1.0, 4.0])
    fig = plot_batch_matrix(x, gamma, beta, column=1, eps=1e-3, fmt=".4g")
    rects, texts = _cells(fig)
    highlighted = {gid for gid, r in rects.items() if to_hex(r.get_facecolor()) == HIGHLIGHT.lower()}
    expected = {f"{b}[{i},1]" for b in "xy" for i in range(6)} | {f"{v}[1]" for v in
                                                                   ("mu", "sigma", "gamma", "beta")}
    assert highlighted == expected
    assert len(rects) == 2 * 6 * 3 + 4 * 3
    y = F.batch_norm(torch.from_numpy(x), None, None, torch.from_numpy(gamma), torch.from_numpy(beta),
                     training=True, eps=1e-3).numpy()
    for k in range(3):
        assert texts[f"mu[{k}]"] == f"{x[:, k].mean():.4g}"
        assert texts[f"sigma[{k}]"] == f"{x[:, k].std():.4g}"        # biased: divides by N
        assert texts[f"gamma[{k}]"] == f"{gamma[k]:.4g}"
        for i in range(6):
            assert texts[f"x[{i},{k}]"] == f"{x[i, k]:.4g}"
            assert texts[f"y[{i},{k}]"] == f"{y[i, k]:.4g}"


def test_batch_matrix_refuses_bad_shapes():
    with pytest.raises(ValueError, match=r"gamma and beta must have shape \(3,\)"):
        plot_batch_matrix(np.zeros((4, 3)), np.ones(2), np.zeros(3))
    with pytest.raises(ValueError, match="N >= 2"):
        plot_batch_matrix(np.zeros((1, 3)), np.ones(3), np.zeros(3))


# --- chapter 2: the staged graph ------------------------------------------------------

def _stage_dependencies():
    """Which earlier quantities each stage reads directly, found by torch autograd.

    Every quantity is recomputed from fresh leaves holding the values of its
    candidate inputs, so a non-None gradient means a direct edge.
    """
    gen = torch.Generator().manual_seed(0)
    values = {"x": torch.randn(6, 3, dtype=torch.float64, generator=gen),
              "weight": torch.rand(3, dtype=torch.float64, generator=gen) + 0.5,
              "bias": torch.randn(3, dtype=torch.float64, generator=gen)}
    stages = {
        "mean": lambda v: v["x"].mean(0),
        "x_centered": lambda v: v["x"] - v["mean"],
        "var": lambda v: (v["x_centered"] ** 2).mean(0),
        "invstd": lambda v: (v["var"] + 1e-5) ** -0.5,
        "xhat": lambda v: v["x_centered"] * v["invstd"],
        "y": lambda v: v["weight"] * v["xhat"] + v["bias"],
        "loss": lambda v: (v["y"] ** 2).sum(),
    }
    edges = set()
    for name, fn in stages.items():
        leaves = {k: t.detach().clone().requires_grad_(True) for k, t in values.items()}
        out = fn(leaves)
        grads = torch.autograd.grad(out.sum(), list(leaves.values()), allow_unused=True)
        edges |= {(k, name) for k, g in zip(leaves, grads) if g is not None}
        values[name] = out.detach()
    return edges


def test_staged_graph_edges_are_the_dependencies_of_the_stages():
    assert set(STAGED_GRAPH_EDGES) == _stage_dependencies()
    assert len(set(STAGED_GRAPH_EDGES)) == len(STAGED_GRAPH_EDGES)


def test_staged_graph_draws_every_node_and_edge_and_marks_the_nodes_used_twice():
    fig = plot_staged_graph()
    ax = fig.axes[0]
    gids = [t.get_gid() for t in ax.texts if t.get_gid()]
    assert sorted(g for g in gids if "->" not in g) == sorted(STAGED_GRAPH_NODES)
    assert sorted(g for g in gids if "->" in g) == sorted(f"{a}->{b}" for a, b in STAGED_GRAPH_EDGES)
    marked = [t for t in ax.texts if t.get_text() == "used twice"]
    positions = sorted(t.get_position()[0] for t in marked)
    assert positions == sorted(STAGED_GRAPH_NODES[n][3][0] for n in ("x", "x_centered"))
    stages = sorted(t.get_text() for t in ax.texts if t.get_text().startswith("stage "))
    assert stages == [f"stage {k}" for k in range(1, 7)]


# --- chapter 4: what each mode reads and writes ---------------------------------------

STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _torch_reads_and_writes(mode):
    """The state a torch BatchNorm1d's output depends on, and the state a forward pass changes."""
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(8, 3, generator=gen, dtype=torch.float64)

    def fresh():
        bn = torch.nn.BatchNorm1d(3, dtype=torch.float64)
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0, generator=gen)
            bn.bias.uniform_(-1.0, 1.0, generator=gen)
            bn.running_mean.uniform_(-1.0, 1.0, generator=gen)
            bn.running_var.uniform_(0.5, 2.0, generator=gen)
            bn.num_batches_tracked.fill_(5)
        return bn.train(mode == "train")

    reads, writes = set(), set()
    with torch.no_grad():
        bn = fresh()
        state = {k: v.clone() for k, v in bn.state_dict().items()}
        out = bn(x)
        writes = {k for k in STATE if not torch.equal(bn.state_dict()[k], state[k])}
        for name in STATE:
            other = fresh()
            other.load_state_dict(state)
            t = other.state_dict()[name]
            t.add_(1 if name == "num_batches_tracked" else 0.5)
            if not torch.equal(other(x), out):
                reads.add(name)
    return reads, writes


@pytest.mark.parametrize("mode", ["train", "eval"])
def test_running_stats_flow_is_what_torch_reads_and_writes(mode):
    reads, writes = _torch_reads_and_writes(mode)
    assert set(RUNNING_STATS_FLOW[mode]["reads"]) == reads
    assert set(RUNNING_STATS_FLOW[mode]["writes"]) == writes


def test_running_stats_flow_figure_draws_the_reads_and_writes():
    fig = plot_running_stats_flow()
    gids = {t.get_gid() for ax in fig.axes for t in ax.texts if t.get_gid()}
    writes = {g for g in gids if ":write:" in g}
    assert writes == {"train:write:running_mean", "train:write:num_batches_tracked"}
    assert "eval:read:running_mean" in gids and "train:read:running_mean" not in gids
    assert "train:read:batch statistics" in gids and "eval:read:batch statistics" not in gids
    assert [ax.get_title().split(":")[0] for ax in fig.axes] == ["model.train()", "model.eval()"]


# --- results over seeds -----------------------------------------------------------------

def test_plot_band_draws_the_mean_and_the_range():
    import matplotlib.pyplot as plt

    runs = np.array([[1.0, 4.0, 2.0], [3.0, 0.0, 2.0], [2.0, 2.0, 5.0]])
    _, ax = plt.subplots()
    line, band = plot_band(ax, [1, 2, 3], runs)
    np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0, 3.0])
    vertices = band.get_paths()[0].vertices
    assert vertices[:, 1].min() == 0.0 and vertices[:, 1].max() == 5.0
    with pytest.raises(ValueError, match=r"runs must have shape \(seeds, 2\)"):
        plot_band(ax, [1, 2], runs)


def test_plot_unit_histograms_counts_each_unit():
    import matplotlib.pyplot as plt

    z = np.random.default_rng(1).normal(size=(200, 4))
    bins = np.linspace(-4, 4, 17)
    _, ax = plt.subplots()
    drawn = plot_unit_histograms(ax, z, units=(1, 3), bins=bins, saturated_beyond=3.0)
    assert len(drawn) == 2
    heights = [p.get_path().vertices[:, 1].max() for p in drawn[1]]
    assert max(heights) == np.histogram(z[:, 3], bins=bins)[0].max()
    assert len([p for p in ax.patches if p not in drawn[0] + drawn[1]]) == 2   # two shaded tails
