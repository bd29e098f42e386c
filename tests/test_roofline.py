"""bnkit.roofline: byte counts and passes over memory against hand-computed closed forms.
Nothing here is timed (the bandwidth measurements are bnkit.timing's, tested there)."""

import math

import numpy as np
import pytest

from bnkit import roofline


def test_forward_minimum_is_three_passes_plus_eight_vectors():
    # (4096, 1024) float32: x read for the statistics, read again, y written: 3 n s;
    # gamma, beta read (2 C), running mean/var read and written (4 C), mean and invstd saved (2 C)
    n, c = 4096 * 1024, 1024
    assert roofline.forward_bytes((4096, 1024)) == 4 * (3 * n + 8 * c) == 50_364_416


def test_forward_of_an_image_batch_counts_every_pixel():
    n, c = 32 * 256 * 14 * 14, 256
    assert n == 1_605_632
    assert roofline.forward_bytes((32, 256, 14, 14), "float32") == 19_275_776 == 4 * (3 * n + 8 * c)
    assert roofline.forward_bytes((32, 256, 14, 14), np.float64) == 2 * 19_275_776


def test_two_pass_statistics_read_x_once_more():
    shape = (64, 64, 56, 56)
    n = math.prod(shape)
    two = roofline.forward_bytes(shape, stat_reads=2)
    one = roofline.forward_bytes(shape, stat_reads=1)
    assert two - one == 4 * n
    assert two == 4 * (4 * n + 8 * 64)


def test_forward_without_affine_or_running_stats_keeps_only_the_saved_statistics():
    shape = (8, 3, 5)
    n = 8 * 3 * 5
    assert roofline.forward_bytes(shape, "float64", affine=False,
                                  track_running_stats=False) == 8 * (3 * n + 2 * 3)
    assert roofline.forward_bytes(shape, "float64", affine=True,
                                  track_running_stats=False) == 8 * (3 * n + 4 * 3)
    assert roofline.forward_bytes(shape, "float64", affine=False,
                                  track_running_stats=True) == 8 * (3 * n + 6 * 3)


def test_channels_last_takes_the_channels_from_the_last_axis():
    # (N, H, W, C) = (2, 4, 4, 16): n = 512, C = 16
    assert roofline.forward_bytes((2, 4, 4, 16), channel_axis=-1) == 4 * (3 * 512 + 8 * 16)
    assert roofline.backward_bytes((2, 4, 4, 16), channel_axis=-1) == 4 * (5 * 512 + 5 * 16)


def test_backward_minimum_is_five_passes():
    # sums: read g, x; dx: read g, x, write dx. Per channel: read mean, invstd, gamma; write dgamma, dbeta
    n, c = 4096 * 1024, 1024
    assert roofline.backward_bytes((4096, 1024)) == 4 * (5 * n + 5 * c) == 83_906_560


def test_backward_that_recomputes_the_statistics_reads_x_again():
    n, c = 10 * 6 * 7, 6
    assert roofline.backward_bytes((10, 6, 7), recompute_statistics=1) == 4 * (6 * n + 5 * c)
    assert roofline.backward_bytes((10, 6, 7), recompute_statistics=2) == 4 * (7 * n + 5 * c)
    assert roofline.backward_bytes((10, 6, 7), affine=False) == 4 * (5 * n + 2 * c)


def test_training_step_is_forward_plus_backward_eight_passes_at_least():
    shape = (32, 256, 14, 14)
    n, c = math.prod(shape), 256
    total = roofline.training_bytes(shape)
    assert total == roofline.forward_bytes(shape) + roofline.backward_bytes(shape)
    assert total == 4 * (8 * n + 13 * c)
    # bnkit.numpy's backward recomputes the statistics: one pass more
    assert roofline.training_bytes(shape, recompute_statistics=1) - total == 4 * n


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(stat_reads=0), "stat_reads"),
    (dict(stat_reads=3), "stat_reads"),
])
def test_forward_refuses_impossible_pass_counts(kwargs, match):
    with pytest.raises(ValueError, match=match):
        roofline.forward_bytes((4, 3), **kwargs)


@pytest.mark.parametrize("shape", [(5,), (4, -3)])
def test_byte_counts_refuse_bad_shapes(shape):
    with pytest.raises(ValueError, match="shape"):
        roofline.forward_bytes(shape)
    with pytest.raises(ValueError, match="shape"):
        roofline.backward_bytes(shape)


def test_backward_refuses_bad_recompute_count():
    with pytest.raises(ValueError, match="recompute_statistics"):
        roofline.backward_bytes((4, 3), recompute_statistics=5)


def test_roofline_time_is_bytes_over_bandwidth():
    assert roofline.roofline_time(2e9, 40e9) == pytest.approx(0.05, rel=1e-15)
    assert roofline.roofline_time(0, 1.0) == 0.0
    nbytes = roofline.training_bytes((64, 64, 56, 56))
    seconds = roofline.roofline_time(nbytes, 25e9)
    assert roofline.achieved_bandwidth(nbytes, seconds) == pytest.approx(25e9, rel=1e-12)


@pytest.mark.parametrize("bandwidth", [0.0, -1.0, float("nan")])
def test_roofline_time_refuses_non_positive_bandwidth(bandwidth):
    with pytest.raises(ValueError, match="bandwidth"):
        roofline.roofline_time(1e6, bandwidth)


def test_roofline_time_and_achieved_bandwidth_refuse_bad_values():
    with pytest.raises(ValueError, match="nbytes"):
        roofline.roofline_time(-1, 1e9)
    with pytest.raises(ValueError, match="seconds"):
        roofline.achieved_bandwidth(1e6, 0.0)


def test_passes_are_the_byte_counts_without_the_per_channel_vectors():
    # forward: read x; read x, write y. backward: read g, x; read g, x, write dx
    assert roofline.forward_passes() == ((1, 0), (1, 1))
    assert roofline.backward_passes() == ((2, 0), (2, 1))
    assert roofline.training_passes() == ((1, 0), (1, 1), (2, 0), (2, 1))
    shape = (32, 256, 14, 14)
    n, c, s = math.prod(shape), 256, 4
    for stat_reads in (1, 2):
        for recompute in (0, 1, 2):
            passes = roofline.training_passes(stat_reads, recompute)
            arrays = sum(r + w for r, w in passes)
            assert arrays == 8 + stat_reads - 1 + recompute
            assert (roofline.training_bytes(shape, stat_reads=stat_reads,
                                            recompute_statistics=recompute)
                    - arrays * n * s) == 13 * c * s
    fwd_arrays = sum(r + w for r, w in roofline.forward_passes(2))
    assert roofline.forward_bytes(shape, stat_reads=2) - fwd_arrays * n * s == 8 * c * s


def test_read_write_mix_of_the_passes_is_two_to_one_forward_four_to_one_backward():
    def mix(passes):
        return sum(r for r, _ in passes) / sum(w for _, w in passes)
    assert mix(roofline.forward_passes()) == 2
    assert mix(roofline.backward_passes()) == 4


def test_passes_refuse_impossible_counts():
    with pytest.raises(ValueError, match="stat_reads"):
        roofline.forward_passes(0)
    with pytest.raises(ValueError, match="recompute_statistics"):
        roofline.backward_passes(3)


def test_copy_bandwidth_stays_importable_from_roofline():
    from bnkit import timing
    assert roofline.measure_copy_bandwidth is timing.measure_copy_bandwidth
