"""bnkit.experiments.sweeps: runs over seeds and sweeps, checked against direct calls of mlp and train."""

import numpy as np
import pytest
import torch

from bnkit.experiments import mlp, train
from bnkit.experiments.sweeps import Run, Sweep, WorkerPool, run_seeds, sweep

SIZES = (784, 16, 12, 10)


def direct(data, seed, model_kwargs, train_kwargs):
    """The oracle: what run_seeds must reproduce, one plain call of mlp and train."""
    model = mlp(**model_kwargs, seed=seed)
    return train(model, data, seed=seed, **train_kwargs), model


def assert_same_history(a, b):
    for name in ("eval_steps", "test_accuracy", "test_loss", "record_steps", "percentiles", "beta", "gamma"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name), err_msg=name)
    np.testing.assert_array_equal(np.isnan(a.train_loss), np.isnan(b.train_loss))
    assert a.steps_done == b.steps_done and a.diverged == b.diverged and a.config == b.config


MODEL = {"sizes": SIZES, "batch_norm": True, "init_std": 0.1}
TRAIN = {"steps": 30, "batch_size": 20, "lr": 0.5, "eval_every": 10, "record_every": 10, "record_size": 50}


def test_run_seeds_equals_direct_calls_per_seed(tiny_data):
    runs = {"BN": Run(MODEL, TRAIN), "plain": Run({**MODEL, "batch_norm": False}, TRAIN)}
    histories, models = run_seeds(runs, tiny_data, seeds=(3, 1), return_models=True)
    assert list(histories) == ["BN", "plain"] and [len(v) for v in histories.values()] == [2, 2]
    for label, model_kwargs in (("BN", MODEL), ("plain", {**MODEL, "batch_norm": False})):
        for k, seed in enumerate((3, 1)):
            h, m = direct(tiny_data, seed, model_kwargs, TRAIN)
            assert_same_history(histories[label][k], h)
            for (name, p), q in zip(m.state_dict().items(), models[label][k].state_dict().values()):
                torch.testing.assert_close(q, p, rtol=0, atol=0, msg=name)
    # different seeds are different runs: other weights and other batches
    assert not np.array_equal(histories["BN"][0].test_loss, histories["BN"][1].test_loss)


def test_worker_processes_give_identical_results(tiny_data):
    runs = {"BN": Run(MODEL, TRAIN), "after": Run({**MODEL, "bn_position": "after"}, TRAIN)}
    here = run_seeds(runs, tiny_data, seeds=(0, 1), processes=1)
    there = run_seeds(runs, tiny_data, seeds=(0, 1), processes=2)
    for label in runs:
        for a, b in zip(here[label], there[label]):
            assert_same_history(a, b)
    # a pool kept for several calls: the same histories, and a sweep through it too
    nets = {"BN": {"sizes": SIZES, "batch_norm": True}}
    with WorkerPool(tiny_data, processes=2) as pool:
        pooled = run_seeds(runs, tiny_data, seeds=(0, 1), pool=pool)
        s_pool = sweep("lr", [0.1, 1.0], nets, tiny_data, steps=10, seeds=(0, 1), pool=pool,
                       train_options={"batch_size": 20})
        with pytest.raises(ValueError, match="other data"):
            run_seeds(runs, dict(tiny_data), seeds=(0,), pool=pool)
    for label in runs:
        for a, b in zip(here[label], pooled[label]):
            assert_same_history(a, b)
    s_here = sweep("lr", [0.1, 1.0], nets, tiny_data, steps=10, seeds=(0, 1), train_options={"batch_size": 20})
    np.testing.assert_array_equal(s_pool.accuracy, s_here.accuracy)
    np.testing.assert_array_equal(s_pool.weight_norm, s_here.weight_norm)


def test_sweep_routes_the_parameter_and_collects_final_accuracy(tiny_data):
    nets = {"plain": {"sizes": SIZES, "batch_norm": False}, "BN": {"sizes": SIZES, "batch_norm": True}}
    s_lr = sweep("lr", [0.1, 2.0], nets, tiny_data, steps=25, seeds=(0, 2), train_options={"batch_size": 20})
    s_init = sweep("init_std", [0.01, 0.5], nets, tiny_data, steps=25, seeds=(0, 2),
                   train_options={"batch_size": 20, "lr": 0.3})
    assert s_lr.accuracy.shape == s_init.accuracy.shape == (2, 2, 2)
    for i, (label, kw) in enumerate(nets.items()):
        for j, v in enumerate((0.1, 2.0)):
            for k, seed in enumerate((0, 2)):
                h, _ = direct(tiny_data, seed, kw, {"steps": 25, "batch_size": 20, "lr": v,
                                                     "eval_every": 25, "record_every": 0})
                assert s_lr.accuracy[i, j, k] == h.final_accuracy and s_lr.diverged[i, j, k] == h.diverged
        for j, v in enumerate((0.01, 0.5)):
            for k, seed in enumerate((0, 2)):
                h, _ = direct(tiny_data, seed, {**kw, "init_std": v}, {"steps": 25, "batch_size": 20, "lr": 0.3,
                                                                        "eval_every": 25, "record_every": 0})
                assert s_init.accuracy[i, j, k] == h.final_accuracy
    np.testing.assert_array_equal(s_lr.at("BN", 2.0), s_lr.accuracy[1, 1])


def test_divergence_is_recorded(tiny_data):
    s = sweep("lr", [float("inf")], {"plain": {"sizes": SIZES}}, tiny_data, steps=50, seeds=(0, 1),
              train_options={"batch_size": 20})
    assert s.diverged.all()
    assert "†2" in s.table()


def make_sweep():
    acc = np.array([[[0.10, 0.12, 0.11], [0.85, 0.79, 0.90], [0.92, 0.93, 0.91]],
                    [[0.95, 0.94, 0.96], [0.96, 0.95, 0.97], [0.10, 0.10, 0.10]]])
    div = np.zeros_like(acc, dtype=bool)
    div[1, 2] = True
    return Sweep("lr", (0.1, 1.0, 10.0), ("plain", "BN"), (0, 1, 2), acc, div, 100)


def test_sweep_summaries():
    s = make_sweep()
    assert s.working("plain", 0.8) == [10.0]          # at 1.0 one seed (0.79) falls short
    assert s.failing("plain", 0.8) == [0.1]
    assert s.working("BN", 0.8) == [0.1, 1.0] and s.failing("BN", 0.8) == [10.0]
    sp = s.spread("plain", 1.0)
    assert sp.values == (0.85, 0.79, 0.90)
    np.testing.assert_allclose(sp.std, np.std([0.85, 0.79, 0.90], ddof=1))
    lines = s.table().splitlines()
    assert len(lines) == 2 + 3
    assert "84.7 ± 5.5 (79.0–90.0)" in lines[3]       # mean ± std (min–max) in percent
    assert lines[4].endswith("†3")


@pytest.mark.parametrize("kwargs, match", [
    ({"model": {"seed": 1}, "train": {"steps": 5}}, "not allowed"),
    ({"model": {"widths": 3}, "train": {"steps": 5}}, "not allowed"),
    ({"model": {}, "train": {"steps": 5, "seed": 2}}, "not allowed"),
    ({"model": {}, "train": {"lr": 0.1}}, "steps"),
])
def test_run_refuses_bad_options(kwargs, match):
    with pytest.raises(ValueError, match=match):
        Run(**kwargs)


def test_bad_arguments(tiny_data):
    run = {"a": Run({"sizes": SIZES}, {"steps": 1})}
    with pytest.raises(ValueError, match="distinct"):
        run_seeds(run, tiny_data, seeds=(1, 1))
    with pytest.raises(ValueError, match="processes"):
        run_seeds(run, tiny_data, seeds=(1,), processes=0)
    with pytest.raises(TypeError, match="must be a Run"):
        run_seeds({"a": {"steps": 1}}, tiny_data)
    with pytest.raises(TypeError, match="pool must be a WorkerPool"):
        run_seeds(run, tiny_data, seeds=(1,), pool=2)
    with pytest.raises(ValueError, match="processes"):
        WorkerPool(tiny_data, processes=0)
    with pytest.raises(ValueError, match="param must be"):
        sweep("momentumm", [0.1], {"a": {}}, tiny_data, steps=1)
    with pytest.raises(ValueError, match="is swept"):
        sweep("init_std", [0.1], {"a": {"init_std": 0.2}}, tiny_data, steps=1)
    with pytest.raises(ValueError, match="distinct"):
        sweep("lr", [0.1, 0.1], {"a": {}}, tiny_data, steps=1)
    s = make_sweep()
    with pytest.raises(ValueError, match="was not swept"):
        s.at("BN", 3.0)
    with pytest.raises(ValueError, match="network must be"):
        s.spread("LN", 1.0)


def test_sweep_weight_norms_and_changes_match_the_trained_models(tiny_data):
    nets = {"BN": {"sizes": SIZES, "batch_norm": True}}
    s = sweep("lr", [0.5, 5.0], nets, tiny_data, steps=20, seeds=(0, 1), train_options={"batch_size": 20})
    assert s.weight_norm.shape == s.weight_change.shape == (1, 2, 2, 2)
    for j, lr in enumerate((0.5, 5.0)):
        for k, seed in enumerate((0, 1)):
            w0 = [b.linear.weight.detach().clone() for b in mlp(sizes=SIZES, batch_norm=True, seed=seed).blocks]
            _, model = direct(tiny_data, seed, nets["BN"], {"steps": 20, "batch_size": 20, "lr": lr,
                                                            "eval_every": 20, "record_every": 0})
            for layer, (a0, block) in enumerate(zip(w0, model.blocks)):
                a = block.linear.weight.detach()
                np.testing.assert_allclose(s.weight_norm[0, j, k, layer], a.norm().item(), rtol=1e-6)
                np.testing.assert_allclose(s.weight_change[0, j, k, layer], ((a - a0).norm() / a0.norm()).item(),
                                           rtol=1e-5)
    # a larger rate moves the weights further
    assert np.all(s.weight_change[0, 1] > s.weight_change[0, 0])
