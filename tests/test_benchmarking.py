"""bnkit.benchmarking: every case computes batch norm, the harness does exactly what its
docstring says one call does, and the floor makes the model's passes. No assertion depends
on how long anything takes (the timers are tested in test_timing.py)."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnkit import benchmarking, roofline, timing


def test_the_timers_stay_importable_from_benchmarking():
    assert benchmarking.best_time is timing.best_time
    assert benchmarking.compare_times is timing.compare_times
    for name in benchmarking.__all__:
        assert hasattr(benchmarking, name)


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


def test_run_cases_times_the_floor_in_the_same_rounds():
    records = benchmarking.run_cases([(8, 4)], budget=0.0, implementations=("torch",),
                                     floor=True)
    assert len(records) == 2                            # the floor is no implementation
    assert all(r["floor_s"] > 0 for r in records)
    assert "floor_s" not in benchmarking.run_cases([(8, 4)], budget=0.0,
                                                   implementations=("torch",))[0]


def test_torch_case_calls_the_function_the_way_f_batch_norm_is_called():
    seen = []

    def spy(x, running_mean, running_var, weight, bias, training):
        seen.append((tuple(x.shape), x.requires_grad, torch.is_grad_enabled(), training,
                     tuple(running_mean.shape), tuple(weight.shape)))
        return F.batch_norm(x, running_mean, running_var, weight, bias, training)

    benchmarking.torch_case(spy, "forward", (6, 3, 2))()
    benchmarking.torch_case(spy, "forward+backward", (6, 3, 2))()
    assert seen == [((6, 3, 2), False, False, True, (3,), (3,)),
                    ((6, 3, 2), True, True, True, (3,), (3,))]


def test_one_forward_call_updates_the_running_statistics_once():
    # running_mean starts at 0: after one call it is momentum * batch mean (0.1 * mean)
    captured = {}

    def keep(x, running_mean, running_var, weight, bias, training):
        captured["x"], captured["running_mean"] = x, running_mean
        return F.batch_norm(x, running_mean, running_var, weight, bias, training)

    benchmarking.torch_case(keep, "forward", (50, 4), dtype="float64", seed=3)()
    expected = 0.1 * captured["x"].mean(dim=0)
    torch.testing.assert_close(captured["running_mean"], expected, rtol=1e-12, atol=0)


def test_forward_backward_returns_the_three_gradients_of_the_harness():
    # the same x and g, built from the seed, through plain autograd
    shape = (5, 3, 4)
    rng = np.random.default_rng(7)
    x = torch.from_numpy(rng.standard_normal(shape)).requires_grad_()
    g = torch.from_numpy(rng.standard_normal(shape))
    w = torch.ones(3, dtype=torch.float64, requires_grad=True)
    b = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    expected = torch.autograd.grad(F.batch_norm(x, None, None, w, b, training=True), (x, w, b), g)
    got = benchmarking.torch_case(F.batch_norm, "forward+backward", shape, dtype="float64",
                                  seed=7)()
    for a, e in zip(got, expected):
        torch.testing.assert_close(a, e, rtol=1e-12, atol=1e-12)


def test_floor_case_makes_the_model_passes_over_arrays_of_the_size_of_x():
    # the last pass of a training step writes g + x (two arrays of the size of x)
    shape = (4, 3, 5)
    n = math.prod(shape)
    rng = np.random.default_rng(0)
    a, b = (rng.standard_normal(n).astype(np.float32) for _ in range(2))
    np.testing.assert_array_equal(benchmarking.floor_case("forward+backward", shape)(), a + b)
    np.testing.assert_array_equal(benchmarking.floor_case("forward", shape)(), -a)
    with pytest.raises(ValueError, match="mode"):
        benchmarking.floor_case("backward", shape)


def test_add_ratios_leaves_none_without_a_baseline():
    records = [dict(implementation="bnkit.numpy", mode="forward", shape=(4, 3),
                    layout="channels_first", dtype="float32", threads=1, seconds=1.0)]
    assert benchmarking.add_ratios(records)[0]["ratio"] is None


def test_chapter_9_shows_the_signature_and_body_of_torch_case():
    # notebooks/09_speed.ipynb includes torch_case with `:lines: 1-2,30-` (signature, then the
    # body without the docstring): a docstring that grows or shrinks must move that number
    import inspect
    lines = inspect.getsource(benchmarking.torch_case).splitlines()
    assert lines[1].rstrip().endswith("-> Callable[[], object]:")
    assert lines[28].strip() == '"""' and lines[29].strip() == "import torch"


def test_replayed_dispatches_exactly_the_operations_of_the_function_it_replays():
    from bnkit import op_trace
    import bnkit.torch as bnt

    for shape, layout in (((6, 5), "channels_first"), ((4, 64, 32, 32), "channels_last")):
        original = benchmarking.make_case("bnkit.torch", "forward+backward", shape, layout)
        replaying = benchmarking.torch_case(benchmarking.replayed(bnt.batch_norm, shape, layout),
                                            "forward+backward", shape, layout)
        names = [[op.name for op in op_trace.compute_ops(op_trace.record(case)[1])]
                 for case in (original, replaying)]
        assert names[0] == names[1]
        # the values of the recorded call, however often it is replayed: batch norm's gradients
        for _ in range(3):
            for got, expected in zip(replaying(), original()):
                torch.testing.assert_close(got, expected)
    assert len(names[0]) > 18        # the large path: operations per block


def test_without_huge_pages_turns_the_hint_off_during_the_call_only():
    from bnkit.torch import kernels

    seen = []

    def case():
        seen.append(kernels.HUGE_PAGE_BYTES)
        raise RuntimeError("inside")

    before = kernels.HUGE_PAGE_BYTES
    with pytest.raises(RuntimeError, match="inside"):
        benchmarking.without_huge_pages(case)()
    assert seen == [None] and kernels.HUGE_PAGE_BYTES == before is not None


def test_torch_inputs_are_seeded_standard_normal_with_identity_parameters():
    x, g, weight, bias, running_mean, running_var = benchmarking.torch_inputs(
        (3, 4, 2, 2), "channels_last", seed=7)
    again = benchmarking.torch_inputs((3, 4, 2, 2), "channels_last", seed=7)
    torch.testing.assert_close(x, again[0])
    assert x.is_contiguous(memory_format=torch.channels_last) and x.shape == (3, 4, 2, 2)
    assert not torch.equal(x, g)
    assert torch.equal(weight, torch.ones(4)) and weight.requires_grad
    assert torch.equal(bias, torch.zeros(4)) and bias.requires_grad
    assert torch.equal(running_mean, torch.zeros(4)) and torch.equal(running_var, torch.ones(4))


class TickClock:
    """A clock that advances by ``tick`` seconds every time it is read."""

    def __init__(self, tick):
        self.tick, self.now = tick, 0.0

    def __call__(self):
        self.now += self.tick
        return self.now


def _record(impl, mode, shape, seconds, layout="channels_first", floor_s=None):
    nbytes = roofline.forward_bytes(shape) if mode == "forward" else roofline.training_bytes(shape)
    return dict(implementation=impl, mode=mode, shape=shape, layout=layout, dtype="float32",
                threads=1, seconds=seconds, bytes=nbytes, floor_s=floor_s)


def test_add_copy_times_is_the_bytes_at_the_copy_bandwidth_of_the_size_of_x():
    records = [_record("torch", "forward", (8, 4), 1.0), _record("torch", "forward+backward",
                                                                 (8, 4), 1.0),
               _record("torch", "forward", (2, 3, 4, 4), 1.0)]
    # every timed copy lasts 0.25 s: the copy bandwidth is 2 * nbytes(x) / 0.25
    benchmarking.add_copy_times(records, budget=0.0, clock=TickClock(0.25))
    for r in records:
        x_bytes = 4 * math.prod(r["shape"])
        assert r["copy_s"] == pytest.approx(r["bytes"] / (2 * x_bytes / 0.25), rel=1e-15)


def test_select_keeps_the_matching_records_smallest_shape_first():
    records = [_record("torch", "forward", (64, 4), 1.0),
               _record("bnkit.torch", "forward", (8, 4), 2.0),
               _record("torch", "forward", (8, 4), 3.0),
               _record("torch", "forward+backward", (8, 4), 4.0)]
    assert [r["seconds"] for r in benchmarking.select(records, implementation="torch",
                                                      mode="forward")] == [3.0, 1.0]
    assert benchmarking.select(records, layout="channels_last") == []


def test_floor_ratios_are_time_over_floor_per_implementation():
    records = [_record("torch", "forward", (8, 4), 3.0, floor_s=1.5),
               _record("bnkit.torch", "forward", (8, 4), 6.0, floor_s=1.5),
               _record("torch", "forward", (64, 4), 2.0, floor_s=0.5),
               _record("torch.cuda", "forward", (64, 4), 0.1, floor_s=None)]   # no CPU floor
    assert benchmarking.floor_ratios(records) == {"torch": [2.0, 4.0], "bnkit.torch": [4.0]}


def _grid():
    records = []
    for shape in ((64, 4, 2, 2), (8, 4, 2, 2)):
        for layout in benchmarking.LAYOUTS:
            for mode in benchmarking.MODES:
                native = 2.0 if layout == "channels_first" else 4.0
                records += [_record("torch", mode, shape, native, layout, floor_s=0.5),
                            _record("bnkit.torch", mode, shape, 1.0, layout, floor_s=0.5)]
    return benchmarking.add_ratios(records)


def test_sweep_table_has_one_row_per_case_with_the_ratios_by_mode_layout_and_size():
    lines = benchmarking.sweep_table(_grid()).splitlines()
    assert lines[0].split() == ["mode", "layout", "x", "(MB)", "|", "time", "/", "native:",
                                "bnkit.torch", "|", "native", "/", "floor"]
    rows = [line.split() for line in lines[1:]]
    # forward, NCHW, small then large; ...; bnkit's ratio 1/2 in NCHW, 1/4 in NHWC
    assert rows == [[mode, name, size, "|", ratio, "|", floor]
                    for mode in benchmarking.MODES
                    for name, ratio, floor in (("NCHW", "0.50", "4.0"), ("NHWC", "0.25", "8.0"))
                    for size in ("0.00", "0.00")]
    assert [line.split()[2] for line in benchmarking.sweep_table(
        [_record("torch", "forward", (250_000, 4), 1.0, floor_s=1.0)]).splitlines()[1:]] == ["4.00"]


def test_scoreboard_table_gives_milliseconds_and_ratios_in_record_order():
    records = _grid()
    for r in records:
        r["copy_s"] = 0.25
    lines = benchmarking.scoreboard_table(records).splitlines()
    assert "bnkit.torch (x native)" in lines[0] and len(lines) == 1 + len(records) // 2
    first = lines[1].split()
    assert first[:3] == ["(64,", "4,", "2,"] and first[4:7] == ["NCHW", "forward", "|"]
    assert first[7:] == ["500.000ms", "250.000ms", "2000.000ms", "|", "1000.000ms", "(", "0.50x)",
                         "|", "4.0"]
    assert lines[3].split()[4:6] == ["NHWC", "forward"]
    one_case = dict(_record("torch", "forward", (8, 4), 1.0, floor_s=1.0), copy_s=1.0, ratio=1.0)
    two_d = benchmarking.scoreboard_table([one_case])
    assert two_d.splitlines()[1].split()[2] == "-"        # (N, D): no layout to name


def test_hint_comparison_times_three_cases_and_counts_the_faults_of_the_timed_calls():
    reads = iter(range(10**6))
    shape = (4, 8, 4, 4)
    got = benchmarking.hint_comparison(shape, "forward", budget=0.0, counter=lambda: next(reads))
    assert list(got) == ["native", "hinted", "no hint"]
    pages = 4 * math.prod(shape) / 4096
    for result in got.values():
        assert result["seconds"] > 0
        # the counter moves by one between the two readings around every call
        assert result["faults_per_page"] == pytest.approx(1 / pages)


def test_matmul_flops_is_two_n_cubed_over_the_best_time():
    assert benchmarking.matmul_flops(64, budget=0.0, clock=TickClock(0.25)) == 2 * 64**3 / 0.25
    with pytest.raises(ValueError, match="n must be"):
        benchmarking.matmul_flops(0)
