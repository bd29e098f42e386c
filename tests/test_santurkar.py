"""Chapter 6's experiment driver (bnkit.experiments.santurkar): when and on what it measures, summaries, CLI.

Oracles: the training loop itself (the loss it reports for an update must be
the loss measured just before that update, on its batch and with its noise),
histories with known series, and the saved files.
"""

import json

import numpy as np
import pytest
import torch

from bnkit.experiments import History, StepContext, cli, mlp, train
from bnkit.experiments.noise import advance_noise, noise_hook
from bnkit.experiments.probes import (buffer_copies, heldout_batch, loss_and_grads, next_training_batch,
                                     parameter_copies, preserved_state)
from bnkit.experiments.santurkar import (MEASURES, SHIFT_SCALE_NOISE, measurement_callback, plateau_end,
                                         run_experiment, run_seeds, series, window_median, window_start,
                                         window_table)
from bnkit.experiments.runs import load_histories
from bnkit.experiments.training import as_tensors


def tiny_data(rng, n=120, d=8):
    return {"x_train": rng.random((n, d)).astype(np.float32), "y_train": rng.integers(0, 10, n),
            "x_test": rng.random((50, d)).astype(np.float32), "y_test": rng.integers(0, 10, 50)}


# --------------------------------------------------------------------------- #
# measured on the step's own batch, before its update
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("noise", [None, {"kind": "iid", "mean_range": 1.0, "std_range": (0.5, 1.5)},
                                   SHIFT_SCALE_NOISE])
def test_measurement_is_on_the_next_updates_batch_with_its_noise(rng, noise):
    data = tiny_data(rng)
    hook = noise_hook(seed=5, **noise) if noise else None
    model = mlp((8, 7, 6, 10), batch_norm=True, init_std=0.5, post_norm=hook, seed=1)
    callback = measurement_callback(("landscape",), layers=[1], eta_factors=(1.0,), heldout_size=0)
    # eval_every=1: train_loss at step t+1 is exactly the loss of update t+1
    h = train(model, data, steps=6, batch_size=10, lr=0.3, seed=2, eval_every=1, record_every=0,
              callback=callback, callback_every=1)
    steps, loss0 = h.logged("landscape/loss0")
    np.testing.assert_array_equal(steps, np.arange(7))
    np.testing.assert_allclose(loss0[:-1], h.train_loss[1:], rtol=1e-6)


def test_without_drawing_ahead_a_noisy_measurement_would_see_the_wrong_noise(rng):
    data = tiny_data(rng)
    model = mlp((8, 7, 6, 10), batch_norm=True, init_std=0.5, post_norm=noise_hook(seed=5), seed=1)
    seen = []

    def stale(ctx):  # the same measurement, but without advance_noise
        from bnkit.experiments.landscape import landscape
        x, y = next_training_batch(ctx)
        seen.append(landscape(ctx.model, x, y, [0.0]).loss0)

    h = train(model, data, steps=4, batch_size=10, lr=0.3, seed=2, eval_every=1, record_every=0,
              callback=stale, callback_every=1)
    assert not np.allclose(seen[:-1], h.train_loss[1:], rtol=1e-3)


def test_the_measured_gradient_is_the_one_the_update_applies(rng):
    data = tiny_data(rng)
    lr = 0.3
    model = mlp((8, 7, 6, 10), batch_norm=True, init_std=0.5, post_norm=noise_hook(seed=3), seed=1)
    measured, weights = [], []

    def callback(ctx):
        advance_noise(ctx.model)
        x, y = next_training_batch(ctx)
        with preserved_state(ctx.model):
            params, names = parameter_copies(ctx.model), [n for n, _ in ctx.model.named_parameters()]
            _, grads = loss_and_grads(ctx.model, params, buffer_copies(ctx.model), x, y,
                                      torch.nn.functional.cross_entropy, names)
        measured.append(grads)
        weights.append([p.detach().clone() for p in ctx.model.parameters()])

    train(model, data, steps=5, batch_size=10, lr=lr, seed=2, eval_every=5, record_every=0,
          callback=callback, callback_every=1)
    for t in range(5):
        for g, w0, w1 in zip(measured[t], weights[t], weights[t + 1]):
            torch.testing.assert_close((w0 - w1) / lr, g, rtol=1e-3, atol=1e-5)


def test_heldout_batches_are_fresh_test_images_the_same_for_every_network(rng):
    tensors = as_tensors(tiny_data(rng))
    source = heldout_batch(size=20, seed=3)

    def ctx(step):
        return StepContext(step, None, History(), None, None, tensors, 0.1)

    x0, y0 = source(ctx(0))
    x1, _ = source(ctx(1))
    assert x0.shape == (20, 8) and not torch.equal(x0, x1)
    torch.testing.assert_close(source(ctx(0))[0], x0, rtol=0, atol=0)
    rows = {tuple(r) for r in tensors["x_test"].numpy().round(6)}
    assert all(tuple(r) in rows for r in x0.numpy().round(6))
    with pytest.raises(ValueError, match="size"):
        heldout_batch(size=51)(ctx(0))


# --------------------------------------------------------------------------- #
# the driver
# --------------------------------------------------------------------------- #
def test_run_experiment_logs_every_measurement_and_resumes(rng, tmp_path):
    data = tiny_data(rng)
    res = run_experiment(data, steps=4, depth=3, width=6, every=2, batch_size=10, heldout_size=10,
                         variants=("plain", "BN", "noisy BN"), out=tmp_path)
    for v, h in res.items():
        for prefix in ("", "heldout/"):
            steps, diff = h.logged(f"{prefix}ics/diff_norm")
            np.testing.assert_array_equal(steps, [0, 2, 4])
            assert diff.shape == (3, 3) and (diff > 0).all()
            assert h.logged(f"{prefix}landscape/loss")[1].shape == (3, 5)
        assert not np.array_equal(h.logged("ics/diff_norm")[1], h.logged("heldout/ics/diff_norm")[1])
        assert h.logged("train_percentiles")[1].shape == (3, 3)
        assert h.config["ics_layers"] == ["blocks.1.linear", "blocks.2.linear", "head"]
        assert ("bn/gain_ratio" in h.logs) == (v != "plain")
        if v != "plain":
            assert h.logged("bn/gain_ratio")[1].shape == (3, 3) and h.logged("bn/weight_norm")[1].shape == (3, 3)
        slug = v.lower().replace(" ", "-")
        assert (tmp_path / f"run-{slug}-depth3-init0.05-seed0.json").is_file() != (v == "noisy BN")
    assert (tmp_path / "run-noisy-bn-iid-depth3-init0.05-seed0.json").is_file()
    assert res["noisy BN"].config["experiment"]["noise"]["kind"] == "iid"
    again = run_experiment(data, steps=4, depth=3, width=6, every=2, batch_size=10, heldout_size=10,
                           variants=("BN",), out=tmp_path, resume=True)
    assert again["BN"].seconds == res["BN"].seconds  # loaded, not trained again
    other = run_experiment(data, steps=4, depth=3, width=6, every=2, batch_size=10, heldout_size=10, lr=0.1,
                           variants=("BN",), out=tmp_path, resume=True)
    assert other["BN"].config["experiment"]["lr"] == 0.1  # other settings: trained again


def test_run_experiment_and_run_seeds_reject_bad_input(rng):
    with pytest.raises(ValueError, match="unknown"):
        run_experiment(tiny_data(rng), steps=1, variants=("dropout",))
    with pytest.raises(ValueError, match="unknown"):
        run_experiment(tiny_data(rng), steps=1, measure=("hessian",))
    with pytest.raises(ValueError, match="distinct"):
        run_seeds((1, 1), data=tiny_data(rng), steps=1)
    assert set(MEASURES) == {"ics", "landscape", "gains", "percentiles", "sharpness"}


def test_run_seeds_gives_one_history_per_seed(rng):
    runs = run_seeds((0, 1), data=tiny_data(rng), steps=2, depth=1, width=4, every=1, batch_size=10,
                     heldout_size=0, measure=("landscape",))
    assert [h.config["experiment"]["seed"] for h in runs["BN"]] == [0, 1]
    assert not np.array_equal(runs["BN"][0].logged("landscape/beta")[1], runs["BN"][1].logged("landscape/beta")[1])


# --------------------------------------------------------------------------- #
# summaries
# --------------------------------------------------------------------------- #
def history_with(acc, logs):
    h = History(eval_steps=np.arange(0, 100 * len(acc), 100), test_accuracy=np.array(acc, dtype=float))
    for key, (steps, values) in logs.items():
        for s, v in zip(steps, values):
            h.log(key, s, v)
    return h


def test_plateau_and_window():
    a = history_with([0.1, 0.5, 0.85, 0.9], {})
    b = history_with([0.1, 0.1, 0.3, 0.82], {})
    never = history_with([0.1, 0.1, 0.1, 0.1], {})
    assert plateau_end(a) == 200 and plateau_end(b) == 300 and plateau_end(never) is None
    assert plateau_end(a, level=0.4) == 100
    assert window_start([a, b]) == 300 and window_start([a, b, never]) is None and window_start([]) is None


def test_series_and_window_medians():
    steps = [0, 100, 200, 300]
    h = history_with([0.1] * 4, {
        "ics/diff_norm": (steps, [[1.0, 2.0], [2.0, 4.0], [3.0, 6.0], [10.0, 20.0]]),
        "ics/grad_norm": (steps, [[2.0, 2.0]] * 4),
        "landscape/loss": (steps, [[1.0, 2.0, 4.0]] * 3 + [[0.0, 5.0, 1.0]]),
        "landscape/grad_diff": (steps, [[1.0, 3.0, 2.0]] * 4),
        "landscape/beta": (steps, [1.0, np.nan, 3.0, 5.0]),
    })
    np.testing.assert_allclose(series(h, "ics/relative")[1][:, 1], [1.0, 2.0, 3.0, 10.0])
    np.testing.assert_allclose(series(h, "landscape/loss_range")[1], [3.0, 3.0, 3.0, 5.0])
    np.testing.assert_allclose(series(h, "landscape/grad_change")[1], [3.0] * 4)
    np.testing.assert_allclose(window_median(h, "ics/diff_norm", start=100), [3.0, 6.0])
    np.testing.assert_allclose(window_median(h, "ics/diff_norm", start=100, stop=200), [2.5, 5.0])
    np.testing.assert_allclose(window_median(h, "landscape/beta", start=100), 4.0)  # NaN ignored
    with pytest.raises(ValueError, match="no step"):
        window_median(h, "landscape/beta", start=400)
    table = window_table({"BN": [h, h]}, ["ics/diff_norm", "landscape/loss_range"], start=200, column=1)
    np.testing.assert_allclose(table["BN"]["ics/diff_norm"], [13.0, 13.0])
    np.testing.assert_allclose(table["BN"]["landscape/loss_range"], [4.0, 4.0])


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("command, variants", [("ics", {"plain", "BN"}), ("landscape", {"plain", "BN"}),
                                               ("santurkar", {"plain", "BN", "noisy BN"})])
def test_cli_commands_run_end_to_end_over_seeds(tmp_path, capsys, command, variants):
    assert command in cli.COMMANDS
    code = cli.main([command, "--steps", "4", "--every", "2", "--depth", "2", "--seeds", "0", "1",
                     "--out", str(tmp_path), "--no-progress", "--plateau-level", "0.0"])
    assert code == 0
    out = capsys.readouterr().out
    assert "over 2 seeds" in out
    (summary_path,) = tmp_path.glob(f"{command}-*.json")
    summary = json.loads(summary_path.read_text())
    assert set(summary["variants"]) == variants and summary["window_start"] == 0
    assert summary["settings"]["seeds"] == [0, 1] and summary["settings"]["depth"] == 2
    for v, row in summary["variants"].items():
        assert len(row["final_test_accuracy"]["values"]) == 2
    assert summary_path.with_suffix(".png").is_file()
    assert len(list(tmp_path.glob("run-*-seed1.json"))) == len(variants)
    runs = load_histories(summary_path.with_name(summary_path.stem + "-runs.json.gz"))
    assert set(runs) == variants and all(len(hs) == 2 for hs in runs.values())
    for v, hs in runs.items():
        assert [h.final_accuracy for h in hs] == pytest.approx(summary["variants"][v]["final_test_accuracy"]["values"],
                                                               rel=1e-4)


def test_santurkar_command_measures_the_sharpness_and_takes_noisy_bn_by_slug(tmp_path):
    assert cli.main(["santurkar", "--steps", "4", "--every", "2", "--depth", "1", "--seeds", "3",
                     "--variants", "noisy-BN", "--noise", "shift-scale", "--out", str(tmp_path),
                     "--no-progress"]) == 0
    (h,) = load_histories(tmp_path / "santurkar-depth1-init0.05-shift-scale-runs.json.gz")["noisy BN"]
    assert h.config["experiment"]["noise"]["kind"] == "shift-scale"
    steps, top = h.logged("sharpness/top")
    np.testing.assert_array_equal(steps, [0])
    assert np.isfinite(top).all()


def test_median_jump_and_format_table():
    from bnkit.experiments.santurkar import format_table, median_jump

    h = history_with([0.1] * 4, {"train_percentiles": ([0, 100, 200, 300],
                                                       [[0, 1.0, 2], [0, 3.0, 2], [0, 2.0, 2], [0, 6.0, 2]])})
    assert median_jump(h) == pytest.approx((2 + 1 + 4) / 3)
    assert median_jump(h, start=100) == pytest.approx((1 + 4) / 2)
    with pytest.raises(ValueError, match="fewer than two"):
        median_jump(h, start=300)
    text = format_table({"BN": {"acc": [0.9, 0.92], "layers": np.array([[1.0, 2.0], [3.0, 4.0]]), "note": "x"},
                         "plain": {"acc": [0.8, 0.8]}}, fmt=".2f")
    lines = text.splitlines()
    assert len(lines) == 3 and lines[0].split() == ["acc", "layers", "note"]
    assert "0.91 ± 0.01" in lines[1] and "2.00 ± 1.41 | 3.00 ± 1.41" in lines[1] and lines[1].endswith("x")
    assert "0.80 ± 0.00" in lines[2]
