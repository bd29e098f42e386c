"""Chapter 8's experiments: the α–β fit, the per-process simulation, the live runs behind them.

Oracles: closed forms and ``np.polyfit`` for the fit; ``torch.nn.functional.batch_norm``
per shard for :class:`LocalBatchNorm`; real processes (gloo, 2 ranks) running
``DistributedDataParallel`` with plain and synchronized batch norm for the simulation.
Timings are never asserted, only their structure and the collectives counted.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.torch as bnt
from bn_testing import TOL64, random_batch
from bnkit.experiments.data_parallel import (
    LocalBatchNorm,
    build_model,
    convert_local_batchnorm,
    layer_steps,
    run_data_parallel,
    run_layer_on_shards,
    shard_slices,
    simulate_data_parallel,
)
from bnkit.experiments.small_batch import mnist_images
from bnkit.experiments.sync_benefit import (
    METRICS,
    MODES,
    NormalizationBatchResult,
    compare_normalization_batches,
)
from bnkit.experiments.sync_cost import (
    LatencyBandwidth,
    SyncCost,
    fit_latency_bandwidth,
    measure_sync_cost,
    predict_sync_overhead,
)
from bnkit.torch.communication import collectives_per_step, sync_payload_bytes

RUN_TIMEOUT = 90.0


# --------------------------------------------------------------------------- the α–β fit


@pytest.mark.parametrize("relative", [True, False])
def test_fit_recovers_an_exact_line(relative):
    p = np.array([8, 64, 512, 4096, 32768, 262144])
    t = 5e-5 + 2e-9 * p
    fit = fit_latency_bandwidth(p, t, relative=relative)
    np.testing.assert_allclose([fit.alpha, fit.beta], [5e-5, 2e-9], rtol=1e-9)
    assert fit.crossover_bytes == pytest.approx(5e-5 / 2e-9, rel=1e-9)
    np.testing.assert_allclose(fit.time(p), t, rtol=1e-9)


def test_fit_on_noisy_times_is_the_weighted_least_squares_solution(rng):
    p = np.repeat([8.0, 512.0, 32768.0, 1048576.0], 3)
    t = (4e-5 + 1e-9 * p) * rng.uniform(0.7, 1.3, p.size)
    # np.polyfit multiplies each residual by w: w = 1/t gives relative residuals.
    beta, alpha = np.polyfit(p, t, 1, w=1 / t)
    fit = fit_latency_bandwidth(p, t)
    np.testing.assert_allclose([fit.alpha, fit.beta], [alpha, beta], rtol=1e-8)
    beta, alpha = np.polyfit(p, t, 1)
    plain = fit_latency_bandwidth(p, t, relative=False)
    np.testing.assert_allclose([plain.alpha, plain.beta], [alpha, beta], rtol=1e-8)


def test_relative_fit_keeps_the_latency_when_the_largest_times_are_noisy():
    # +10 % and -5 % on the two largest times (more seconds than alpha itself): the plain
    # fit's latency moves by more than 5 %, the relative fit's by less than 1 %.
    p = np.array([8.0, 64.0, 512.0, 4096.0, 32768.0, 262144.0, 1048576.0])
    t = 1e-4 + 1e-9 * p
    t[-2] *= 1.1
    t[-1] *= 0.95
    assert abs(fit_latency_bandwidth(p, t).alpha / 1e-4 - 1) < 0.01
    assert abs(fit_latency_bandwidth(p, t, relative=False).alpha / 1e-4 - 1) > 0.05


@pytest.mark.parametrize(("p", "t", "match"), [
    ([8, 8, 8], [1e-4, 2e-4, 3e-4], "two distinct payloads"),
    ([8, 64], [1e-4, 0.0], "times must be finite and > 0"),
    ([8, 64], [1e-4, np.nan], "times must be finite"),
    ([8, 64, 512], [1e-4, 2e-4], "one length"),
])
def test_fit_refuses_bad_input(p, t, match):
    with pytest.raises(ValueError, match=match):
        fit_latency_bandwidth(p, t)


def test_predicted_overhead_is_the_alpha_beta_sum_over_the_layers():
    channels = [8, 16, 32]
    ag, ar = LatencyBandwidth(3e-5, 2e-9), LatencyBandwidth(4e-5, 1e-9)
    fwd, bwd = sync_payload_bytes(channels)
    expected_latency = sum(3e-5 + 4e-5 for _ in channels)
    expected_bandwidth = sum(2e-9 * f + 1e-9 * b for f, b in zip(fwd, bwd))
    got = predict_sync_overhead(channels, ag, ar)
    assert got.collectives == collectives_per_step(3) == 6
    assert got.payload_bytes == int(fwd.sum() + bwd.sum()) == (2 * 56 + 9) * 8 + 2 * 56 * 8
    assert got.latency == pytest.approx(expected_latency, rel=1e-12)
    assert got.bandwidth == pytest.approx(expected_bandwidth, rel=1e-12)
    assert got.latency_share == pytest.approx(
        expected_latency / (expected_latency + expected_bandwidth), rel=1e-12)


# --------------------------------------------------------------------------- LocalBatchNorm


def test_local_batch_norm_normalizes_each_shard_by_itself(rng):
    x = torch.tensor(random_batch(rng, (12, 3, 4, 5)), requires_grad=True)
    g = torch.tensor(rng.standard_normal((12, 3, 4, 5)))
    w = torch.tensor(rng.uniform(0.5, 2.0, 3), requires_grad=True)
    b = torch.tensor(rng.normal(size=3), requires_grad=True)
    local = LocalBatchNorm(3, shard_size=4, dtype=torch.float64)
    with torch.no_grad():
        local.weight.copy_(w)
        local.bias.copy_(b)
    y = local(x)
    y.backward(g)
    # The oracle: torch's batch norm on each shard; the running statistics from shard 0 only.
    x_ref = x.detach().clone().requires_grad_(True)
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    y_ref = torch.cat([F.batch_norm(s, rm if k == 0 else None, rv if k == 0 else None, w, b,
                                    training=True) for k, s in enumerate(x_ref.split(4))])
    y_ref.backward(g)
    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL64)
    torch.testing.assert_close(local.weight.grad, w.grad, **TOL64)
    torch.testing.assert_close(local.bias.grad, b.grad, **TOL64)
    torch.testing.assert_close(local.running_mean, rm, **TOL64)
    torch.testing.assert_close(local.running_var, rv, **TOL64)
    assert int(local.num_batches_tracked) == 1


def test_local_batch_norm_in_eval_mode_and_with_one_shard_is_batch_norm(rng):
    x = torch.tensor(random_batch(rng, (6, 4)))
    local, bn = LocalBatchNorm(4, shard_size=6, dtype=torch.float64), bnt.BatchNorm1d(
        4, dtype=torch.float64)
    assert torch.equal(local(x), bn(x))                       # one shard: the whole batch
    assert all(torch.equal(u, v) for u, v in zip(local.state_dict().values(),
                                                 bn.state_dict().values()))
    local.eval(), bn.eval()
    assert torch.equal(local(x[:1]), bn(x[:1]))                # eval: running statistics
    assert list(local.state_dict()) == list(bn.state_dict())


def test_local_batch_norm_refuses_unequal_shards_and_changes_nothing(rng):
    local = LocalBatchNorm(2, shard_size=4, dtype=torch.float64)
    before = {k: v.clone() for k, v in local.state_dict().items()}
    with pytest.raises(ValueError, match="multiple of shard_size=4"):
        local(torch.tensor(random_batch(rng, (6, 2))))
    with pytest.raises(ValueError, match="positive int"):
        LocalBatchNorm(2, shard_size=0)
    assert all(torch.equal(before[k], v) for k, v in local.state_dict().items())


def test_convert_local_batchnorm_keeps_the_tensors_and_keys():
    model = build_model("plain", {"seed": 3})
    keys = list(model.state_dict())
    weight = model.norm1.weight
    converted = convert_local_batchnorm(model, 4)
    assert isinstance(converted.norm1, LocalBatchNorm) and isinstance(converted.norm_fc,
                                                                      LocalBatchNorm)
    assert converted.norm1.weight is weight and converted.norm_fc.shard_size == 4
    assert list(converted.state_dict()) == keys
    with pytest.raises(ValueError, match="mode"):
        build_model("ghost")
    with pytest.raises(ValueError, match="shard_size"):
        build_model("local")


def test_shard_slices():
    assert shard_slices([3, 0, 2]) == [slice(0, 3), slice(3, 3), slice(3, 5)]
    with pytest.raises(ValueError, match="shard sizes"):
        shard_slices([2, -1])


# --------------------------------------------------------------------------- live runs


@pytest.fixture(scope="module")
def steps():
    data = mnist_images()
    x, y = torch.from_numpy(data["x_train"][:24]), torch.from_numpy(data["y_train"][:24])
    return list(x.split(8)), list(y.split(8))


@pytest.mark.parametrize("mode", ["sync", "plain"])
def test_simulation_equals_ddp_on_two_processes(steps, mode):
    """DDP on 2 real processes (rank 0's state) equals the one-process simulation."""
    xs, ys = steps
    live = run_data_parallel(mode, 2, xs, ys, timeout=RUN_TIMEOUT)
    sim = simulate_data_parallel(mode, 2, xs, ys)
    np.testing.assert_allclose(live[0]["losses"], sim["losses"], rtol=1e-10)
    for key, value in sim["state"].items():
        torch.testing.assert_close(live[0]["state"][key], value, rtol=1e-9, atol=1e-12,
                                   msg=f"{mode}: {key}")
    # SyncBatchNorm: every rank holds the same buffers; plain: rank 1 its own.
    same = all(torch.equal(live[0]["state"][k], live[1]["state"][k]) for k in sim["state"])
    assert same == (mode == "sync")


def test_simulation_differs_between_modes(steps):
    xs, ys = steps
    sync, plain = (simulate_data_parallel(m, 2, xs, ys)["losses"] for m in ("sync", "plain"))
    assert abs(sync[-1] - plain[-1]) > 1e-3


def test_run_layer_on_shards_equals_the_whole_batch(rng):
    xs = [torch.tensor(random_batch(rng, (7, 3, 2, 2))) for _ in range(2)]
    gs = [torch.tensor(rng.standard_normal((7, 3, 2, 2))) for _ in range(2)]
    ref = layer_steps(bnt.BatchNorm2d(3, dtype=torch.float64), xs, gs)
    got = run_layer_on_shards(xs, gs, [5, 2], timeout=RUN_TIMEOUT)
    for key in ("output", "grad_input", "grad_weight", "grad_bias"):
        for a, b in zip(got[key], ref[key]):
            torch.testing.assert_close(a, b, **TOL64)
    for state in got["states"]:
        for key, value in ref["state"].items():
            torch.testing.assert_close(state[key], value, **TOL64)
    with pytest.raises(ValueError, match="add up"):
        run_layer_on_shards(xs, gs, [5, 1])


def test_measure_sync_cost_counts_two_collectives_per_layer():
    cost = measure_sync_cost(2, payload_bytes=(8, 64), calls=1, repeats=2, steps=2, warmup=1,
                             timeout=RUN_TIMEOUT)
    assert cost.num_channels == [8, 16, 32]
    assert cost.collectives_counted == {"all_gather": 3, "all_reduce": 3}
    assert sum(cost.collectives_counted.values()) == collectives_per_step(3)
    assert cost.collective_seconds["all_gather"].shape == (2,)
    assert cost.step_seconds["sync"].shape == (2,) and np.all(cost.step_seconds["plain"] > 0)
    with pytest.raises(ValueError, match="multiples of 8"):
        measure_sync_cost(2, payload_bytes=(4, 64))
    with pytest.raises(ValueError, match="world_size"):
        measure_sync_cost(1)


# --------------------------------------------------------------------------- the comparison


def _small_data():
    d = mnist_images()
    return {"x_train": d["x_train"][:256], "y_train": d["y_train"][:256],
            "x_test": d["x_test"][:64], "y_test": d["y_test"][:64]}


def test_one_process_local_and_sync_are_the_same_run():
    # W = 1: the shard is the whole batch, so both modes must agree exactly.
    res = compare_normalization_batches(world_size=1, shard_size=8, seeds=(0, 1), steps=8,
                                        data=_small_data())
    for metric in METRICS:
        np.testing.assert_array_equal(res.values["local"][metric], res.values["sync"][metric])
    assert res.values["local"]["eval_accuracy"].shape == (2,)
    np.testing.assert_array_equal(res.gap("sync"), res.values["sync"]["eval_accuracy"]
                                  - res.values["sync"]["batch_stats_accuracy"])


def test_four_shards_change_the_run():
    res = compare_normalization_batches(world_size=4, shard_size=2, seeds=(0,), steps=8,
                                        data=_small_data())
    assert set(res.values) == set(MODES)
    assert res.values["local"]["train_loss"][0] != res.values["sync"]["train_loss"][0]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"shard_size": 1}, "shard_size must be >= 2"),
    ({"seeds": ()}, "at least one seed"),
    ({"net": {"seed": 1}}, "must not set 'seed'"),
    ({"shard_size": 3}, "multiple of shard_size=3"),
])
def test_compare_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        compare_normalization_batches(**{"steps": 1, "data": _small_data(), **kwargs})


# --------------------------------------------------------------------------- reports, options


def test_sync_cost_report_and_overheads_from_known_times():
    p = np.array([8, 1024, 1048576])
    cost = SyncCost(
        world_size=2, payload_bytes=p,
        collective_seconds={"all_gather": 1e-4 + 1e-9 * p, "all_reduce": 2e-4 + 2e-9 * p},
        step_seconds={"plain": np.array([1e-3, 3e-3, 2e-3]), "sync": np.array([5e-3, 4e-3, 9e-3])},
        num_channels=[8, 16, 32], collectives_counted={"all_gather": 3, "all_reduce": 3})
    assert cost.measured_overhead == pytest.approx(5e-3 - 2e-3)
    pred = cost.predicted_overhead()
    assert pred.latency == pytest.approx(3 * (1e-4 + 2e-4))
    text = cost.report()
    assert "alpha =   100.0 us, beta =  1.00 ns/B (1.00 GB/s)" in text
    assert "alpha =   200.0 us" in text and "measured overhead 3.00 ms" in text
    assert f"{1e3 * pred.latency:.2f} ms latency" in text


def test_normalization_batch_table_shows_the_spreads():
    vals = {m: {k: np.array([0.9, 0.92, 0.94]) for k in METRICS} for m in MODES}
    vals["sync"]["eval_accuracy"] = np.array([0.95, 0.96, 0.97])
    res = NormalizationBatchResult(seeds=(0, 1, 2), values=vals,
                                   config={"world_size": 4, "shard_size": 4})
    text = res.table()
    assert "per-process, 4 x 4 images" in text and "synchronized, 16 images" in text
    assert "96.0 ± 1.0" in text                           # sync eval accuracy, sample std
    assert "synchronized 95.0–97.0" in text
    np.testing.assert_allclose(res.gap("sync"), [0.05, 0.04, 0.03])


def test_command_options_take_the_experiments_defaults():
    import argparse

    from bnkit.experiments import sync_benefit, sync_cost

    p = argparse.ArgumentParser()
    sync_cost.configure(p)
    args = p.parse_args([])
    assert (args.steps, args.repeats, args.calls, args.shard_size) == (40, 15, 5, 16)
    p = argparse.ArgumentParser()
    sync_benefit.configure(p)
    args = p.parse_args(["--seeds", "3", "4"])
    assert (args.world_size, args.shard_size, args.steps, args.seeds) == (4, 4, 512, [3, 4])
