"""bnkit.timing: the timers against closed forms, driven by clocks whose readings are known.

No assertion depends on how long anything takes on this machine: every timer takes a
``clock``, and the fake clocks below advance by set amounts, so best times, repeat
counts and bandwidths have exact expected values."""

import math

import numpy as np
import pytest

from bnkit import roofline, timing


class CallClock:
    """A clock that moves only when the timed function runs, by the next of ``durations``."""

    def __init__(self, durations):
        self.now = 0.0
        self.durations = list(durations)
        self.calls = 0

    def __call__(self):
        return self.now

    def fn(self):
        self.now += self.durations[self.calls]
        self.calls += 1


class TickClock:
    """A clock that advances by ``tick`` seconds every time it is read."""

    def __init__(self, tick):
        self.tick, self.now, self.reads = tick, 0.0, 0

    def __call__(self):
        self.now += self.tick
        self.reads += 1
        return self.now


def test_best_time_is_the_least_timed_duration_warm_up_excluded():
    clock = CallClock([0.001, 5.0, 3.0, 2.0, 4.0])        # the first call (0.001 s) is the warm-up
    seconds = timing.best_time(clock.fn, budget=0.0, min_repeats=4, clock=clock)
    assert seconds == 2.0
    assert clock.calls == 5


def test_best_time_repeats_until_the_budget_is_spent():
    # every call takes 1 s; the deadline is 3.5 s after the first timed call starts:
    # calls end at 1, 2, 3 (< 3.5, go on), 4 (stop): 4 timed calls, ceil(3.5 / 1)
    clock = CallClock([1.0] * 20)
    assert timing.best_time(clock.fn, budget=3.5, min_repeats=1, clock=clock) == 1.0
    assert clock.calls == 1 + math.ceil(3.5 / 1.0)


def test_best_time_makes_min_repeats_even_past_the_budget_and_stops_at_max_repeats():
    clock = CallClock([1.0] * 20)
    timing.best_time(clock.fn, budget=0.5, min_repeats=6, clock=clock)
    assert clock.calls == 1 + 6
    clock = CallClock([1.0] * 20)
    timing.best_time(clock.fn, budget=100.0, min_repeats=1, max_repeats=7, clock=clock)
    assert clock.calls == 1 + 7


def test_compare_times_gives_each_function_its_own_least_duration():
    now = [0.0]
    clock = lambda: now[0]
    durations = {"a": iter([9.0, 3.0, 2.0, 5.0]), "b": iter([9.0, 1.0, 7.0, 0.5])}
    order = []

    def make(name):
        def fn():
            order.append(name)
            now[0] += next(durations[name])
        return fn

    times = timing.compare_times({"a": make("a"), "b": make("b")}, budget=0.0, min_rounds=3,
                                 clock=clock)
    assert times == {"a": 2.0, "b": 0.5}               # warm-up durations (9 s) excluded
    assert order == ["a", "b"] * 4                     # one warm-up round, then 3 in turn


def test_compare_times_budget_is_per_function():
    # two functions of 1 s each, budget 2 s per function: the deadline is 2 * 2 = 4 s after
    # the warm-up round; timed rounds end 2 s (go on) and 4 s (stop) after it: 2 rounds
    now = [0.0]

    def fn():
        now[0] += 1.0

    calls = []
    fns = {"a": lambda: (calls.append("a"), fn()), "b": lambda: (calls.append("b"), fn())}
    timing.compare_times(fns, budget=2.0, min_rounds=1, clock=lambda: now[0])
    assert len(calls) == 2 * (1 + 2)


def test_time_once_is_one_call_without_warm_up():
    clock = CallClock([7.5, 1.0])
    assert timing.time_once(clock.fn, clock=clock) == 7.5
    assert clock.calls == 1


@pytest.mark.parametrize("kwargs", [dict(min_repeats=0), dict(min_repeats=5, max_repeats=4),
                                    dict(min_repeats=1.5)])
def test_best_time_refuses_impossible_repeat_counts(kwargs):
    calls = []
    with pytest.raises(ValueError, match="repeats"):
        timing.best_time(lambda: calls.append(1), **kwargs)
    assert calls == []                                  # refused before running anything


def test_compare_times_refuses_impossible_round_counts():
    with pytest.raises(ValueError, match="rounds"):
        timing.compare_times({"a": lambda: None}, min_rounds=0)


@pytest.mark.parametrize("fresh_output", [False, True])
def test_copy_bandwidth_is_twice_the_bytes_over_the_time_of_one_copy(fresh_output):
    # with a clock that moves 0.25 s per reading, every timed copy lasts exactly 0.25 s
    nbytes = 1 << 16
    bandwidth = timing.measure_copy_bandwidth(nbytes, budget=0.0, fresh_output=fresh_output,
                                              clock=TickClock(0.25))
    assert bandwidth == 2 * nbytes / 0.25


def test_copy_bandwidth_refuses_empty_arrays():
    with pytest.raises(ValueError, match="nbytes"):
        timing.measure_copy_bandwidth(0)


@pytest.mark.parametrize(("reads", "writes"), [(1, 0), (2, 0), (1, 1), (2, 1)])
def test_stream_bandwidth_counts_every_array_read_and_written_once(reads, writes):
    nbytes = 4 * 1000
    bandwidth = timing.measure_stream_bandwidth(reads, writes, nbytes, budget=0.0,
                                                clock=TickClock(0.5))
    assert bandwidth == (reads + writes) * nbytes / 0.5


def _inputs(count, n, seed=0, dtype=np.float32):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(n).astype(dtype) for _ in range(count)]


def test_stream_passes_compute_what_they_claim_on_the_same_arrays():
    n = 1000
    x, = _inputs(1, n)
    assert timing.stream_pass(1, 0, 4 * n)() == x.max()
    np.testing.assert_array_equal(timing.stream_pass(1, 1, 4 * n)(), -x)
    a, b = _inputs(2, n, seed=3)
    np.testing.assert_array_equal(timing.stream_pass(2, 1, 4 * n, seed=3)(), a + b)
    assert timing.stream_pass(2, 0, 4 * n, seed=3)() == max(a.max(), b.max())
    # a training step's passes: the last one writes g + x into the one output
    np.testing.assert_array_equal(timing.stream_passes(roofline.training_passes(), 4 * n,
                                                       seed=3)(), a + b)
    # float64: nbytes holds half as many values
    x64, = _inputs(1, 500, dtype=np.float64)
    np.testing.assert_array_equal(timing.stream_pass(1, 1, 4000, dtype="float64")(), -x64)


@pytest.mark.parametrize(("passes", "error", "match"), [
    ([(1, 2)], ValueError, "writes"),
    ([(3, 1)], ValueError, "reads 1 or 2"),
    ([(0, 1)], ValueError, "reads 1 or 2"),
    ([(0, 0)], ValueError, "read or write"),
    ([(-1, 0)], ValueError, "reads"),
    ([], ValueError, "empty"),
])
def test_stream_passes_refuse_passes_they_cannot_make(passes, error, match):
    with pytest.raises(error, match=match):
        timing.stream_passes(passes, 4096)


def test_stream_passes_refuse_bad_sizes_and_dtypes():
    with pytest.raises(ValueError, match="nbytes"):
        timing.stream_passes([(1, 0)], 0)
    with pytest.raises(ValueError, match="at least one"):
        timing.stream_passes([(1, 0)], 4, dtype="float64")
    with pytest.raises(TypeError, match="float"):
        timing.stream_passes([(1, 0)], 4096, dtype="int32")


def test_measure_bandwidths_counts_the_bytes_each_kernel_moves():
    # a clock that moves 0.5 s per reading: every timed call lasts 0.5 s, so each figure is
    # the bytes the kernel counts over 0.5 s -- copies 2, read only 1, 1:1 2, 2:1 3 arrays
    sizes = [4096, 8192]
    got = timing.measure_bandwidths(sizes, budget=0.0, clock=TickClock(0.5))
    assert tuple(got) == timing.BANDWIDTH_KERNELS
    arrays = dict(zip(timing.BANDWIDTH_KERNELS, (2, 2, 1, 2, 3)))
    for label, values in got.items():
        np.testing.assert_array_equal(values, [arrays[label] * nb / 0.5 for nb in sizes])
    with pytest.raises(ValueError, match="nbytes"):
        timing.measure_bandwidths([4096, 0])


def test_cpu_model_is_the_first_model_name_of_cpuinfo(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nmodel name\t: Some CPU 9000\n\nprocessor\t: 1\n"
                       "model name\t: Another CPU\n")
    assert timing.cpu_model(str(cpuinfo)) == "Some CPU 9000"
    import platform
    assert timing.cpu_model(str(tmp_path / "missing")) == (platform.processor()
                                                           or platform.machine())


def test_cache_sizes_reads_the_data_and_unified_caches_of_one_core(tmp_path):
    entries = {"index0": ("Data", 1, "48K"), "index1": ("Instruction", 1, "32K"),
               "index2": ("Unified", 2, "2048K"), "index3": ("Unified", 3, "32M"),
               "uevent": None}
    base = tmp_path / "cpu3" / "cache"
    for name, entry in entries.items():
        if entry is None:
            (base / name).parent.mkdir(parents=True, exist_ok=True)
            (base / name).write_text("")
            continue
        (base / name).mkdir(parents=True)
        for field, value in zip(("type", "level", "size"), entry):
            (base / name / field).write_text(f"{value}\n")
    sizes = timing.cache_sizes(3, root=str(tmp_path))
    assert sizes == {"L1": 48 * 1024, "L2": 2 * 2**20, "L3": 32 * 2**20}
    assert list(sizes) == ["L1", "L2", "L3"]
    assert timing.cache_sizes(0, root=str(tmp_path)) == {}     # no such core reported


class FaultCounter:
    """A page-fault counter that moves only when ``fn`` runs, by the next of ``faults``."""

    def __init__(self, faults):
        self.count, self.faults, self.calls = 0, list(faults), 0

    def __call__(self):
        return self.count

    def fn(self):
        self.count += self.faults[self.calls]
        self.calls += 1
        return self.calls


def test_page_faults_per_call_leaves_out_the_first_call():
    counter = FaultCounter([1000, 4, 6, 8])            # the first call's 1000 are not counted
    assert timing.page_faults_per_call(counter.fn, calls=3, counter=counter) == 6
    assert counter.calls == 4
    with pytest.raises(ValueError, match="calls"):
        timing.page_faults_per_call(counter.fn, calls=0)


def test_counting_page_faults_records_each_call_and_passes_its_result_on():
    counter, counts = FaultCounter([3, 0, 7]), []
    run = timing.counting_page_faults(counter.fn, counts, counter=counter)
    assert [run() for _ in range(3)] == [1, 2, 3]
    assert counts == [3, 0, 7]


def test_writing_fresh_memory_costs_page_faults():
    before = timing.page_faults()
    fresh = np.ones(16 * 2**20, np.uint8)             # 16 MB, fresh from the operating system
    assert timing.page_faults() > before and fresh[-1] == 1
