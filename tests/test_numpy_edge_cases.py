"""Empty batches in bnkit.numpy, against torch 2.13.

A zero-size axis (N = 0 at the end of a sharded dataset, or an empty spatial axis)
is valid input for torch: training returns an empty output of the input's shape,
leaves ``running_mean`` and ``running_var`` as they were, still increments
``num_batches_tracked``, and the weight and bias gradients are zeros. bnkit.numpy
does the same, in every layout, momentum setting and convention, without a single
NumPy warning (the module turns warnings into errors). Exactly one value per
channel is still refused (see ``test_bad_input.py``).
"""

import warnings

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
from bn_testing import (TOL64, TORCH_BATCHNORM, as_numpy, from_layout, random_batch, to_layout,
                        torch_forward_backward)

pytestmark = pytest.mark.filterwarnings("error")

C = 3
EMPTY_SHAPES = [pytest.param((0, C), id="N0-NC"), pytest.param((0, C, 5), id="N0-NCL"),
                pytest.param((0, C, 4, 4), id="N0-NCHW"), pytest.param((2, C, 0, 4), id="H0-NCHW")]
CHANNEL_AXES = [pytest.param(1, id="channels_first"), pytest.param(-1, id="channels_last")]


def _pair(rng, ndim, channel_axis, **options):
    """A torch layer and a bnkit.numpy layer with the same random weight and bias (float64)."""
    reference = TORCH_BATCHNORM[ndim](C, dtype=torch.float64, **options)
    layer = bnp.BatchNorm(C, channel_axis=channel_axis, **options)
    if reference.affine:
        weight, bias = rng.uniform(0.5, 2.0, C), rng.normal(size=C)
        with torch.no_grad():
            reference.weight.copy_(torch.tensor(weight))
            reference.bias.copy_(torch.tensor(bias))
        layer.weight, layer.bias = weight, bias.copy()
    return reference, layer


def _step(reference, layer, x, grad_y, channel_axis):
    """One forward and backward through both; returns torch's (y, grad_x, grad_params)."""
    params = [reference.weight, reference.bias] if reference.affine else []
    y_ref, gx_ref, gp_ref = torch_forward_backward(reference, torch.tensor(x),
                                                   torch.tensor(grad_y), params)
    y = layer(to_layout(x, channel_axis))
    gx = layer.backward(to_layout(grad_y, channel_axis))
    assert y.shape == to_layout(x, channel_axis).shape and y.dtype == x.dtype
    assert gx.shape == y.shape
    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(from_layout(gx, channel_axis), as_numpy(gx_ref), **TOL64)
    if reference.affine:
        np.testing.assert_allclose(layer.grad_weight, as_numpy(gp_ref[0]), **TOL64)
        np.testing.assert_allclose(layer.grad_bias, as_numpy(gp_ref[1]), **TOL64)
    if reference.track_running_stats:
        np.testing.assert_allclose(layer.running_mean, as_numpy(reference.running_mean), **TOL64)
        np.testing.assert_allclose(layer.running_var, as_numpy(reference.running_var), **TOL64)
        assert layer.num_batches_tracked == int(reference.num_batches_tracked)


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("track_running_stats", [True, False], ids=["tracked", "untracked"])
def test_empty_training_batch_matches_torch(rng, shape, channel_axis, momentum,
                                            track_running_stats):
    """Two steps, an empty one, two more, then eval on an empty batch: as torch, every step.

    With ``momentum=None`` the empty batch counts: the next batch's weight is 1/4, not 1/3.
    """
    full = (4,) + shape[1:2] + tuple(d or 3 for d in shape[2:])
    reference, layer = _pair(rng, len(shape), channel_axis, momentum=momentum,
                             track_running_stats=track_running_stats)
    for x_shape in (full, full, shape, full, full):
        before = (None if not track_running_stats
                  else (layer.running_mean.copy(), layer.running_var.copy()))
        _step(reference, layer, random_batch(rng, x_shape), rng.standard_normal(x_shape),
              channel_axis)
        if x_shape == shape:
            np.testing.assert_array_equal(layer.grad_weight, np.zeros(C))
            np.testing.assert_array_equal(layer.grad_bias, np.zeros(C))
            if track_running_stats:         # unchanged to the bit
                np.testing.assert_array_equal(layer.running_mean, before[0])
                np.testing.assert_array_equal(layer.running_var, before[1])
    if track_running_stats:
        assert layer.num_batches_tracked == 5
    reference.eval()
    layer.eval()
    _step(reference, layer, np.zeros(shape), np.zeros(shape), channel_axis)


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
def test_keras_convention_leaves_running_stats_on_an_empty_batch(rng, shape):
    """No torch oracle for Keras' convention: the same rule, statistics kept, the batch counted."""
    layer = bnp.BatchNorm(C, momentum=0.99, eps=1e-3, momentum_convention="keras",
                          channel_axis=-1)
    layer(to_layout(random_batch(rng, (4, C, 2, 2)[:len(shape)]), -1))
    mean, var = layer.running_mean.copy(), layer.running_var.copy()
    y = layer(to_layout(np.zeros(shape), -1))
    assert y.shape == to_layout(np.zeros(shape), -1).shape
    np.testing.assert_array_equal(layer.running_mean, mean)
    np.testing.assert_array_equal(layer.running_var, var)
    assert layer.num_batches_tracked == 2


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_functional_batch_norm_on_an_empty_batch_matches_torch(rng, shape, channel_axis,
                                                               training):
    running_mean, running_var = rng.normal(size=C), rng.uniform(0.5, 2.0, C)
    weight, bias = rng.uniform(0.5, 2.0, C), rng.normal(size=C)
    torch_mean, torch_var = torch.tensor(running_mean), torch.tensor(running_var)
    expected = F.batch_norm(torch.zeros(shape, dtype=torch.float64), torch_mean, torch_var,
                            torch.tensor(weight), torch.tensor(bias), training=training)
    saved_mean, saved_var = running_mean.copy(), running_var.copy()
    x = to_layout(np.zeros(shape), channel_axis)
    y = bnp.batch_norm(x, running_mean, running_var, weight, bias, training=training,
                       channel_axis=channel_axis)
    assert y.shape == x.shape
    assert from_layout(y, channel_axis).shape == tuple(expected.shape)
    np.testing.assert_array_equal(running_mean, saved_mean)
    np.testing.assert_array_equal(running_var, saved_var)
    np.testing.assert_array_equal(running_mean, as_numpy(torch_mean))
    np.testing.assert_array_equal(running_var, as_numpy(torch_var))


@pytest.mark.parametrize("shape", EMPTY_SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_backward_functions_on_an_empty_batch_match_torch(rng, shape, channel_axis, training):
    running_mean, running_var = rng.normal(size=C), rng.uniform(0.5, 2.0, C)
    weight = torch.tensor(rng.uniform(0.5, 2.0, C), requires_grad=True)
    bias = torch.tensor(rng.normal(size=C), requires_grad=True)
    x = torch.zeros(shape, dtype=torch.float64)
    _, gx_ref, (gw_ref, gb_ref) = torch_forward_backward(
        lambda inp: F.batch_norm(inp, torch.tensor(running_mean), torch.tensor(running_var),
                                 weight, bias, training=training), x, torch.zeros_like(x),
        [weight, bias])
    x_np, g_np = to_layout(as_numpy(x), channel_axis), to_layout(np.zeros(shape), channel_axis)
    w_np = as_numpy(weight)
    if training:
        gx, gw, gb = bnp.batch_norm_backward(g_np, x_np, w_np, channel_axis=channel_axis)
    else:
        gx, gw, gb = bnp.batch_norm_eval_backward(g_np, x_np, running_mean, running_var, w_np,
                                                  channel_axis=channel_axis)
    assert gx.shape == x_np.shape and from_layout(gx, channel_axis).shape == tuple(gx_ref.shape)
    np.testing.assert_array_equal(gw, as_numpy(gw_ref))
    np.testing.assert_array_equal(gb, as_numpy(gb_ref))
    np.testing.assert_array_equal(gw, np.zeros(C))


def test_batch_statistics_of_an_empty_batch_are_nan_like_torch():
    x = torch.zeros(0, C, 2, dtype=torch.float64)
    with warnings.catch_warnings():     # torch warns about 0 degrees of freedom; bnkit does not
        warnings.simplefilter("ignore")
        var_ref, mean_ref = torch.var_mean(x, dim=(0, 2), correction=0)
    mean, var = bnp.batch_statistics(as_numpy(x))
    np.testing.assert_array_equal(mean, as_numpy(mean_ref))      # NaN == NaN here
    np.testing.assert_array_equal(var, as_numpy(var_ref))
    assert np.isnan(mean).all() and np.isnan(var).all()


def test_one_value_per_channel_is_still_refused():
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bnp.batch_norm(np.ones((1, C)), training=True)
    with pytest.raises(ValueError, match="Expected more than 1 value per channel when training"):
        bnp.batch_norm_backward(np.ones((1, 1, 1, C)), np.ones((1, 1, 1, C)), channel_axis=-1)


# --------------------------------------------------------------------------- layer and group norm


@pytest.mark.parametrize(("which", "shape"), [
    ("layer", (0, 3, 4)), ("layer", (2, 0, 3, 4)), ("group", (0, 4, 2, 2)), ("group", (0, 4)),
])
def test_layer_and_group_norm_on_an_empty_batch_match_torch(rng, which, shape):
    if which == "layer":
        reference = torch.nn.LayerNorm((3, 4), dtype=torch.float64)
        layer = bnp.LayerNorm((3, 4))
    else:
        reference = torch.nn.GroupNorm(2, 4, dtype=torch.float64)
        layer = bnp.GroupNorm(2, 4)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, reference.weight.shape)))
        reference.bias.copy_(torch.tensor(rng.normal(size=reference.bias.shape)))
    layer.load_state_dict(reference.state_dict())
    y_ref, gx_ref, (gw_ref, gb_ref) = torch_forward_backward(
        reference, torch.zeros(shape, dtype=torch.float64), torch.zeros(shape, dtype=torch.float64),
        [reference.weight, reference.bias])
    y = layer(np.zeros(shape))
    gx = layer.backward(np.zeros(shape))
    assert y.shape == tuple(y_ref.shape) == shape and gx.shape == tuple(gx_ref.shape)
    np.testing.assert_array_equal(layer.grad_weight, as_numpy(gw_ref))
    np.testing.assert_array_equal(layer.grad_bias, as_numpy(gb_ref))
    np.testing.assert_array_equal(layer.grad_bias, np.zeros(reference.bias.shape))


def test_group_norm_with_an_empty_spatial_axis_has_zero_gradients(rng):
    """A deliberate difference: torch 2.13 returns NaN for the weight gradient here (0/0 in
    its kernel); the gradient of a sum over no values is 0, and bnkit says so."""
    x, grad_y = np.zeros((2, 4, 0)), np.zeros((2, 4, 0))
    weight = rng.uniform(0.5, 2.0, 4)
    y = bnp.group_norm(x, 2, weight, np.ones(4))
    gx, gw, gb = bnp.group_norm_backward(grad_y, x, 2, weight)
    assert y.shape == gx.shape == (2, 4, 0)
    np.testing.assert_array_equal(gw, np.zeros(4))
    np.testing.assert_array_equal(gb, np.zeros(4))


def test_no_channels_give_an_empty_output_like_torch():
    """torch's functional accepts C = 0 too (there is no layer with 0 features)."""
    expected = F.batch_norm(torch.zeros(4, 0, dtype=torch.float64), None, None, training=True)
    y = bnp.batch_norm(np.zeros((4, 0)), training=True)
    gx, gw, gb = bnp.batch_norm_backward(np.zeros((4, 0)), np.zeros((4, 0)))
    assert y.shape == gx.shape == tuple(expected.shape) == (4, 0)
    assert gw.shape == gb.shape == (0,)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_empty_batch_with_the_wrong_channel_count_is_refused_and_changes_nothing(rng, training):
    layer = bnp.BatchNorm(C)
    layer(random_batch(rng, (4, C)))
    layer.train(training)
    before = {k: np.array(v) for k, v in layer.state_dict().items()}
    with pytest.raises(ValueError, match="channels"):
        layer(np.zeros((0, C + 1)))
    for key, value in before.items():
        np.testing.assert_array_equal(layer.state_dict()[key], value, err_msg=key)
