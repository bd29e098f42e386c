"""bnkit.experiments.figure1_summary: Figure-1 metrics on histories whose answers are known by construction."""

import json

import numpy as np
import pytest

from bnkit.experiments import History
from bnkit.experiments.figure1_summary import (band_width, curves, figure1_metrics, late_accuracy,
                                               load_seed_summary, metric_spread, read_seed_histories,
                                               summarize_seeds, write_seed_summary)

STEPS = 20_000


def synthetic(seed: int, growth: float, s90: int, late: float) -> History:
    """A history with evaluations and records every 100 steps.

    Accuracy: 0.1 until ``s90``, then ``late`` (>= 0.9). Percentiles of z:
    15th = -w/2, 50th = 0, 85th = +w/2 with the width w rising linearly from 1
    at step 0 to 1 + growth at the end.
    """
    steps = np.arange(0, STEPS + 1, 100)
    acc = np.where(steps >= s90, late, 0.1)
    width = 1 + growth * steps / STEPS
    perc = np.stack([-width / 2, np.zeros_like(width), width / 2], axis=1)
    return History(config={"train": {"seed": seed, "steps": STEPS, "lr": 0.1},
                           "model": {"seed": seed, "batch_norm": False, "init_std": 0.05},
                           "percentile_levels": [15, 50, 85]},
                   eval_steps=steps, test_accuracy=acc, test_loss=np.zeros(len(steps)),
                   train_loss=np.full(len(steps), np.nan), record_steps=steps, percentiles=perc,
                   unit_mean=np.zeros(len(steps)), unit_std=width, linear_mean=np.zeros(len(steps)),
                   linear_std=width, beta=np.full(len(steps), np.nan), gamma=np.full(len(steps), np.nan),
                   steps_done=STEPS)


def test_band_width_is_the_median_width_in_the_window():
    h = synthetic(0, growth=1.0, s90=500, late=0.95)
    # records at 5000..10000: widths 1.25..1.5, median at step 7500 -> 1.375
    assert band_width(h, 5000, 10_000) == pytest.approx(1.375)
    assert band_width(h, 0, 0) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="no percentile record"):
        band_width(h, 30_000, 40_000)


def test_late_accuracy_and_metrics():
    h = synthetic(0, growth=1.0, s90=12_000, late=0.95)
    assert late_accuracy(h, 10_000) == pytest.approx((0.1 * 20 + 0.95 * 81) / 101)
    m = figure1_metrics(h)
    assert m["steps_to_90"] == 12_000
    assert m["early_max_accuracy"] == pytest.approx(0.1)
    assert m["final_accuracy"] == pytest.approx(0.95)
    # last 5,000 steps (15k-20k): median width 1 + 17500/20000 = 1.875; steps 5-10k: 1.375
    assert m["band_growth"] == pytest.approx(1.875 / 1.375 - 1)
    assert figure1_metrics(synthetic(0, 0.0, 30_000, 0.95))["steps_to_90"] is None


def test_seed_summary_round_trip(tmp_path):
    seeds = (0, 1, 2)
    for s in seeds:
        synthetic(s, growth=1.0 + s, s90=10_000 + 100 * s, late=0.93).save(tmp_path / f"figure1-mnist-5k-seed{s}-plain.npz")
        synthetic(s, growth=0.01 * s, s90=500 + 100 * s, late=0.95).save(tmp_path / f"figure1-mnist-5k-seed{s}-bn.npz")
    path = write_seed_summary(tmp_path, tmp_path / "data" / "summary.json", seeds=seeds, command="the command")
    summary = load_seed_summary(path)
    assert summary["command"] == "the command" and summary["seeds"] == [0, 1, 2]
    assert summary["settings"]["train"] == {"steps": STEPS, "lr": 0.1}
    assert metric_spread(summary, "plain", "steps_to_90").values == (10_000, 10_100, 10_200)
    assert metric_spread(summary, "bn", "late_accuracy").mean == pytest.approx(0.95)
    g = metric_spread(summary, "plain", "band_growth")
    np.testing.assert_allclose(g.values, [(1 + (1 + s) * 0.875) / (1 + (1 + s) * 0.375) - 1 for s in seeds])
    steps, acc = curves(summary, "bn")
    assert acc.shape == (3, len(steps)) and steps[-1] == STEPS
    rsteps, band = curves(summary, "plain", "band")
    assert list(rsteps) == list(range(0, STEPS + 1, 500))
    np.testing.assert_allclose(band[1], 1 + 2 * rsteps / STEPS, atol=1e-4)


def test_bad_inputs(tmp_path):
    with pytest.raises(FileNotFoundError, match="--seeds"):
        read_seed_histories(tmp_path, "mnist-5k", [0])
    hs = {"plain": [synthetic(1, 1, 500, 0.95)], "bn": [synthetic(1, 1, 500, 0.95)]}
    with pytest.raises(ValueError, match="seed 1 where seed 0 belongs"):
        summarize_seeds(hs, [0])
    with pytest.raises(ValueError, match="2 seeds"):
        summarize_seeds(hs, [1, 2])
    (tmp_path / "x.json").write_text(json.dumps({"format": "other"}))
    with pytest.raises(ValueError, match="not a Figure-1 seed summary"):
        load_seed_summary(tmp_path / "x.json")
    summary = summarize_seeds({"plain": [synthetic(0, 1, 30_000, 0.95)], "bn": [synthetic(0, 1, 500, 0.95)]}, [0])
    with pytest.raises(ValueError, match="no value"):
        metric_spread(summary, "plain", "steps_to_90")
    with pytest.raises(ValueError, match="what must be"):
        curves(summary, "plain", "loss")
