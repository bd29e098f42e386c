"""bnkit.benchmarking: the timers return what they promise and every case computes batch
norm. No assertion depends on how long anything takes."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnkit import benchmarking, roofline


def test_best_time_calls_at_least_min_repeats_plus_warm_up():
    calls = []
    seconds = benchmarking.best_time(lambda: calls.append(1), budget=0.0, min_repeats=4)
    assert len(calls) == 5                  # 1 warm-up + 4 timed
    assert seconds >= 0.0 and math.isfinite(seconds)


def test_best_time_stops_at_max_repeats():
    calls = []
    benchmarking.best_time(lambda: calls.append(1), budget=10.0, min_repeats=1, max_repeats=7)
    assert len(calls) == 8


def test_compare_times_interleaves_the_functions():
    order = []
    times = benchmarking.compare_times({"a": lambda: order.append("a"),
                                        "b": lambda: order.append("b")},
                                       budget=0.0, min_rounds=3)
    assert order == ["a", "b"] * 4          # warm-up round, then 3 timed rounds in turn
    assert set(times) == {"a", "b"} and all(t >= 0.0 for t in times.values())


@pytest.mark.parametrize("layout", benchmarking.LAYOUTS)
@pytest.mark.parametrize("mode", benchmarking.MODES)
def test_every_cpu_case_runs_batch_norm(layout, mode):
    shape = (4, 3, 5, 2)
    rng = np.random.default_rng(0)
    x = torch.from_numpy(rng.standard_normal(shape).astype(np.float32))
    expected = F.batch_norm(x, None, None, training=True).numpy()
    for impl in benchmarking.IMPLEMENTATIONS:
        out = benchmarking.make_case(impl, mode, shape, layout)()
        if mode == "forward":
            y = out if isinstance(out, np.ndarray) else out.numpy()
            if impl == "bnkit.numpy" and layout == "channels_last":
                y = np.moveaxis(y, -1, 1)   # NumPy's channels-last case stores (N, H, W, C)
            np.testing.assert_allclose(y, expected, atol=1e-5)
        else:
            grad_x = out[0] if isinstance(out[0], np.ndarray) else out[0].numpy()
            assert grad_x.shape in (shape, (4, 5, 2, 3))
            assert np.all(np.isfinite(grad_x))


def test_torch_channels_last_case_uses_the_channels_last_memory_format(monkeypatch):
    seen = []
    real = F.batch_norm

    def spy(x, *args, **kwargs):
        seen.append(x.is_contiguous(memory_format=torch.channels_last))
        return real(x, *args, **kwargs)

    monkeypatch.setattr(F, "batch_norm", spy)
    benchmarking.make_case("torch", "forward", (2, 3, 4, 4), "channels_last")()
    benchmarking.make_case("torch", "forward", (2, 3, 4, 4), "channels_first")()
    assert seen == [True, False]


def test_make_case_refuses_unknown_names():
    with pytest.raises(ValueError, match="implementation"):
        benchmarking.make_case("cudnn", "forward", (4, 3))
    with pytest.raises(ValueError, match="mode"):
        benchmarking.make_case("torch", "backward", (4, 3))
    with pytest.raises(ValueError, match="layout"):
        benchmarking.make_case("torch", "forward", (4, 3), "NCHW")


def test_run_cases_returns_one_record_per_case_with_minimal_bytes():
    threads = torch.get_num_threads()
    records = benchmarking.run_cases([(8, 4), (2, 3, 4, 4)], budget=0.0,
                                     implementations=("torch", "bnkit.numpy"))
    assert torch.get_num_threads() == threads           # restored
    # (8, 4) has one layout; (2, 3, 4, 4) two; 2 modes, 2 implementations
    assert len(records) == (1 + 2) * 2 * 2
    for r in records:
        expected = (roofline.forward_bytes(r["shape"]) if r["mode"] == "forward"
                    else roofline.training_bytes(r["shape"]))
        assert r["bytes"] == expected
        assert r["threads"] == 1 and r["dtype"] == "float32"
        assert r["GBps"] == pytest.approx(r["bytes"] / r["seconds"] / 1e9)
    benchmarking.add_ratios(records)
    assert all(r["ratio"] == 1.0 for r in records if r["implementation"] == "torch")
    assert all(r["ratio"] > 0 for r in records)


def test_add_ratios_leaves_none_without_a_baseline():
    records = [dict(implementation="bnkit.numpy", mode="forward", shape=(4, 3),
                    layout="channels_first", dtype="float32", threads=1, seconds=1.0)]
    assert benchmarking.add_ratios(records)[0]["ratio"] is None
