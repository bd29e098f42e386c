"""bnkit.experiments.seed_figures: the plotted marks are the means and ranges over seeds."""

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
import pytest

from bnkit.experiments.seed_figures import network_color, plot_band, plot_sweep_seeds
from bnkit.experiments.sweeps import Sweep


def test_sweep_error_bars_span_min_to_max_around_the_mean():
    acc = np.array([[[0.1, 0.2, 0.3], [0.8, 0.9, 0.7]], [[0.5, 0.5, 0.5], [0.9, 0.95, 1.0]]])
    s = Sweep("lr", (0.1, 1.0), ("plain", "BN"), (0, 1, 2), acc, np.zeros_like(acc, dtype=bool), 10)
    fig = plot_sweep_seeds(s, title="t")
    ax = fig.axes[0]
    bars = [c for c in ax.containers if isinstance(c, matplotlib.container.ErrorbarContainer)]
    assert len(bars) == 2
    for i, bar in enumerate(bars):
        line, _, (segments,) = bar.lines
        np.testing.assert_allclose(line.get_ydata(), 100 * acc[i].mean(1))
        ends = np.array([[seg[0, 1], seg[1, 1]] for seg in segments.get_segments()])
        np.testing.assert_allclose(np.sort(ends, axis=1), 100 * np.stack([acc[i].min(1), acc[i].max(1)], 1))
        assert line.get_color() == network_color(s.networks[i])
    # every seed is drawn as a dot
    dots = [l for l in ax.lines if l.get_marker() == "."]
    assert sorted(len(d.get_ydata()) for d in dots) == [6, 6]
    assert ax.get_xscale() == "log"
    plt.close(fig)


def test_band_is_the_min_max_envelope():
    steps = np.array([0, 10, 20])
    values = np.array([[0.1, 0.5, 0.9], [0.3, 0.4, 0.8]])
    fig = plot_band(steps, values, label="BN", scale=100)
    ax = fig.axes[0]
    np.testing.assert_allclose(ax.lines[0].get_ydata(), [20, 45, 85])
    verts = ax.collections[0].get_paths()[0].vertices
    assert verts[:, 1].min() == pytest.approx(10) and verts[:, 1].max() == pytest.approx(90)
    with pytest.raises(ValueError, match="shape"):
        plot_band(steps, values[:, :2])
    plt.close("all")
