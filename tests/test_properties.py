"""Properties of batch normalization, checked with hypothesis on both implementations.

Shapes, values and per-channel constants are drawn by hypothesis, deterministically
(``derandomize=True``), in float64. Each property is an identity of the math, so the
tolerances only allow for round-off.
"""

import numpy as np
import pytest
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import from_layout, to_layout

PROPERTY = settings(deadline=None, max_examples=30, derandomize=True)
IMPLS = ["numpy", "torch"]
EPS = 1e-5


def normalize(impl, x, channel_axis=1, running_mean=None, running_var=None, **kwargs):
    """bnkit's ``batch_norm`` on the (N, C, *) float64 array ``x``; returns (N, C, *) NumPy.

    ``channel_axis`` picks the NumPy layout (torch is always (N, C, *)).
    """
    if impl == "numpy":
        y = bnp.batch_norm(to_layout(x, channel_axis), running_mean, running_var,
                           channel_axis=channel_axis, **kwargs)
        return from_layout(y, channel_axis)
    as_tensor = lambda a: None if a is None else torch.from_numpy(a)  # noqa: E731 (shares memory)
    for key in ("weight", "bias"):
        kwargs[key] = as_tensor(kwargs.get(key))
    return bnt.batch_norm(torch.from_numpy(x), as_tensor(running_mean), as_tensor(running_var),
                          **kwargs).numpy()


def reduce_axes(x):
    return tuple(a for a in range(x.ndim) if a != 1)


def per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


VALUES = st.floats(-100, 100, allow_nan=False, allow_infinity=False, allow_subnormal=False)


@st.composite
def batches(draw, spread=False):
    """(N, C, *) float64 arrays of rank 2 to 4 with N >= 2, so training is allowed.

    With ``spread=True`` every element is drawn independently and every channel has a
    standard deviation of at least 0.1 (no near-constant channel, whose normalized values
    are pure round-off).
    """
    rank = draw(st.integers(2, 4))
    shape = (draw(st.integers(2, 5)), draw(st.integers(1, 3)),
             *draw(st.lists(st.integers(1, 3), min_size=rank - 2, max_size=rank - 2)))
    x = draw(hnp.arrays(np.float64, shape, elements=VALUES,
                        **({"fill": st.nothing()} if spread else {})))
    if spread:
        assume(np.all(x.std(axis=reduce_axes(x)) >= 0.1))
    return x


def channel_vectors(x, elements):
    return hnp.arrays(np.float64, (x.shape[1],), elements=elements)


CHANNEL_AXIS = st.sampled_from([1, -1])


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(x=batches(), channel_axis=CHANNEL_AXIS)
def test_output_has_zero_mean_and_unit_variance_per_channel(impl, x, channel_axis):
    num_channels = x.shape[1]
    y = normalize(impl, x, channel_axis, weight=np.ones(num_channels),
                  bias=np.zeros(num_channels), training=True, eps=EPS)
    var = x.var(axis=reduce_axes(x))
    np.testing.assert_allclose(y.mean(axis=reduce_axes(y)), 0.0, atol=1e-9)
    # var / (var + eps): 1 up to eps, and 0 (not NaN) for a constant channel
    np.testing.assert_allclose(y.var(axis=reduce_axes(y)), var / (var + EPS), rtol=1e-9,
                               atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(data=st.data(), x=batches(), channel_axis=CHANNEL_AXIS)
def test_output_is_invariant_to_per_channel_shift(impl, data, x, channel_axis):
    shift = data.draw(channel_vectors(x, VALUES))
    y = normalize(impl, x, channel_axis, training=True, eps=EPS)
    y_shifted = normalize(impl, x + per_channel(shift, x.ndim), channel_axis, training=True,
                          eps=EPS)
    np.testing.assert_allclose(y_shifted, y, rtol=0, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(x=batches(), scale=st.floats(0.1, 10.0), channel_axis=CHANNEL_AXIS)
def test_output_is_invariant_to_positive_scale_when_eps_scales_with_it(
        impl, x, scale, channel_axis):
    # (a x - a m) / sqrt(a^2 var + a^2 eps) = (x - m) / sqrt(var + eps), exactly
    y = normalize(impl, x, channel_axis, training=True, eps=EPS)
    y_scaled = normalize(impl, scale * x, channel_axis, training=True, eps=EPS * scale**2)
    np.testing.assert_allclose(y_scaled, y, rtol=0, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(data=st.data(), x=batches(spread=True), channel_axis=CHANNEL_AXIS)
def test_output_is_invariant_to_per_channel_positive_scale_and_shift(impl, data, x,
                                                                      channel_axis):
    scale = data.draw(channel_vectors(x, st.floats(0.1, 10.0)))
    shift = data.draw(channel_vectors(x, VALUES))
    # With eps = 1e-12 against variances >= 0.01, eps moves y by < 1e-8.
    y = normalize(impl, x, channel_axis, training=True, eps=1e-12)
    x_affine = per_channel(scale, x.ndim) * x + per_channel(shift, x.ndim)
    y_affine = normalize(impl, x_affine, channel_axis, training=True, eps=1e-12)
    np.testing.assert_allclose(y_affine, y, rtol=0, atol=1e-7)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(x=batches(), channel_axis=CHANNEL_AXIS)
def test_identity_is_recovered_with_weight_sqrt_var_eps_and_bias_mean(impl, x, channel_axis):
    mean, var = x.mean(axis=reduce_axes(x)), x.var(axis=reduce_axes(x))
    y = normalize(impl, x, channel_axis, weight=np.sqrt(var + EPS), bias=mean, training=True,
                  eps=EPS)
    np.testing.assert_allclose(y, x, rtol=1e-10, atol=1e-10)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(x=batches(), channel_axis=CHANNEL_AXIS)
def test_eval_with_the_batch_statistics_equals_training(impl, x, channel_axis):
    mean, var = x.mean(axis=reduce_axes(x)), x.var(axis=reduce_axes(x))
    y_train = normalize(impl, x, channel_axis, training=True, eps=EPS)
    y_eval = normalize(impl, x, channel_axis, mean, var, training=False, eps=EPS)
    np.testing.assert_allclose(y_eval, y_train, rtol=0, atol=1e-9)


@pytest.mark.parametrize("impl", IMPLS)
@PROPERTY
@given(data=st.data(), x=batches(), momentum=st.floats(0.0, 1.0), channel_axis=CHANNEL_AXIS)
def test_running_stats_blend_with_momentum_and_the_unbiased_variance(impl, data, x, momentum,
                                                                     channel_axis):
    running_mean = data.draw(channel_vectors(x, VALUES))
    running_var = data.draw(channel_vectors(x, st.floats(0.0, 100.0)))
    expected_mean = (1 - momentum) * running_mean + momentum * x.mean(axis=reduce_axes(x))
    expected_var = (1 - momentum) * running_var + momentum * x.var(axis=reduce_axes(x), ddof=1)
    normalize(impl, x, channel_axis, running_mean, running_var, training=True,
              momentum=momentum, eps=EPS)
    np.testing.assert_allclose(running_mean, expected_mean, rtol=1e-12, atol=1e-10)
    np.testing.assert_allclose(running_var, expected_var, rtol=1e-12, atol=1e-10)
