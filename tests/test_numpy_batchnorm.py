"""bnkit.numpy against torch: forward, running statistics, and the layer over several steps.

Everything runs in float64 and must agree with torch's BatchNorm to round-off.
Channels-last inputs (``channel_axis=-1``) are compared with torch on the
permuted (N, C, *) input.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
from bn_testing import (CHANNEL_AXES, SHAPES, TOL64, as_numpy, from_layout, random_batch,
                        to_layout, torch_forward_backward, torch_reference)


def test_importing_bnkit_numpy_does_not_import_torch():
    code = "import sys, bnkit, bnkit.numpy; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_training_forward_and_running_stats_match_torch(rng, shape, channel_axis, affine):
    num_channels = shape[1]
    x = random_batch(rng, shape)
    weight = rng.uniform(0.5, 2.0, num_channels) if affine else None
    bias = rng.normal(size=num_channels) if affine else None
    running_mean = rng.normal(size=num_channels)
    running_var = rng.uniform(0.5, 2.0, num_channels)
    torch_mean, torch_var = torch.tensor(running_mean), torch.tensor(running_var)
    expected = F.batch_norm(torch.tensor(x), torch_mean, torch_var,
                            None if weight is None else torch.tensor(weight),
                            None if bias is None else torch.tensor(bias),
                            training=True, momentum=0.3, eps=1e-4)

    mean_before, var_before = running_mean, running_var
    y = bnp.batch_norm(to_layout(x, channel_axis), running_mean, running_var, weight, bias,
                       training=True, momentum=0.3, eps=1e-4, channel_axis=channel_axis)

    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(expected), **TOL64)
    # The running statistics are updated in place, in the arrays the caller passed.
    assert running_mean is mean_before and running_var is var_before
    np.testing.assert_allclose(running_mean, as_numpy(torch_mean), **TOL64)
    np.testing.assert_allclose(running_var, as_numpy(torch_var), **TOL64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
def test_training_without_running_stats_matches_torch(rng, shape, channel_axis):
    x = random_batch(rng, shape)
    expected = F.batch_norm(torch.tensor(x), None, None, training=True)
    y = bnp.batch_norm(to_layout(x, channel_axis), training=True, channel_axis=channel_axis)
    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(expected), **TOL64)


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_eval_forward_uses_running_stats_and_leaves_them_alone(rng, shape, channel_axis, affine):
    num_channels = shape[1]
    x = random_batch(rng, shape)
    weight = rng.uniform(0.5, 2.0, num_channels) if affine else None
    bias = rng.normal(size=num_channels) if affine else None
    running_mean = rng.normal(size=num_channels)
    running_var = rng.uniform(0.5, 2.0, num_channels)
    saved_mean, saved_var = running_mean.copy(), running_var.copy()
    expected = F.batch_norm(torch.tensor(x), torch.tensor(running_mean), torch.tensor(running_var),
                            None if weight is None else torch.tensor(weight),
                            None if bias is None else torch.tensor(bias), training=False)

    y = bnp.batch_norm(to_layout(x, channel_axis), running_mean, running_var, weight, bias,
                       training=False, channel_axis=channel_axis)

    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(expected), **TOL64)
    np.testing.assert_array_equal(running_mean, saved_mean)
    np.testing.assert_array_equal(running_var, saved_var)


def test_running_var_uses_unbiased_estimate(rng):
    x = random_batch(rng, (5, 3, 4))
    running_mean, running_var = np.zeros(3), np.ones(3)
    y = bnp.batch_norm(x, running_mean, running_var, training=True, momentum=1.0, eps=1e-5)
    # momentum=1 replaces the running statistics by the batch's: unbiased variance (n - 1) ...
    np.testing.assert_allclose(running_mean, x.mean(axis=(0, 2)), **TOL64)
    np.testing.assert_allclose(running_var, x.var(axis=(0, 2), ddof=1), **TOL64)
    # ... while the output is normalized with the biased one (n).
    mean, var = x.mean(axis=(0, 2), keepdims=True), x.var(axis=(0, 2), keepdims=True)
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-5), **TOL64)


def test_momentum_zero_keeps_running_stats(rng):
    running_mean, running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    saved_mean, saved_var = running_mean.copy(), running_var.copy()
    bnp.batch_norm(random_batch(rng, (6, 3)), running_mean, running_var, training=True,
                   momentum=0.0)
    np.testing.assert_allclose(running_mean, saved_mean, rtol=0, atol=0)
    np.testing.assert_allclose(running_var, saved_var, rtol=0, atol=0)


def test_single_sample_is_fine_in_eval_mode(rng):
    x = random_batch(rng, (1, 3))
    running_mean, running_var = rng.normal(size=3), rng.uniform(0.5, 2.0, 3)
    expected = F.batch_norm(torch.tensor(x), torch.tensor(running_mean),
                            torch.tensor(running_var), training=False)
    y = bnp.batch_norm(x, running_mean, running_var, training=False)
    np.testing.assert_allclose(y, as_numpy(expected), **TOL64)


# --------------------------------------------------------------------------- the layer


def _torch_grads(reference, x, grad_y):
    """y and the gradients of x, weight and bias (the last two [] without affine)."""
    params = [reference.weight, reference.bias] if reference.affine else []
    return torch_forward_backward(reference, torch.tensor(x), torch.tensor(grad_y), params)


def _assert_layer_matches_torch(layer, reference, x, grad_y, channel_axis):
    """One forward and backward through both layers; outputs, gradients and state must agree."""
    y_ref, grad_x_ref, grad_params_ref = _torch_grads(reference, x, grad_y)

    y = layer(to_layout(x, channel_axis))
    grad_x = layer.backward(to_layout(grad_y, channel_axis))

    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(from_layout(grad_x, channel_axis), as_numpy(grad_x_ref), **TOL64)
    if reference.affine:
        np.testing.assert_allclose(layer.grad_weight, as_numpy(grad_params_ref[0]), **TOL64)
        np.testing.assert_allclose(layer.grad_bias, as_numpy(grad_params_ref[1]), **TOL64)
    if reference.track_running_stats:
        np.testing.assert_allclose(layer.running_mean, as_numpy(reference.running_mean), **TOL64)
        np.testing.assert_allclose(layer.running_var, as_numpy(reference.running_var), **TOL64)
        assert int(layer.num_batches_tracked) == int(reference.num_batches_tracked)
    else:
        assert layer.running_mean is None and layer.running_var is None


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("track_running_stats", [True, False], ids=["tracked", "untracked"])
def test_layer_matches_torch_over_training_steps_then_eval(
        rng, shape, channel_axis, momentum, affine, track_running_stats):
    num_channels = shape[1]
    options = dict(momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    reference = torch_reference(len(shape), num_channels, **options)
    layer = bnp.BatchNorm(num_channels, channel_axis=channel_axis, **options)
    if affine:  # start from a non-trivial gamma and beta so their gradients matter
        weight, bias = rng.uniform(0.5, 2.0, num_channels), rng.normal(size=num_channels)
        with torch.no_grad():
            reference.weight.copy_(torch.tensor(weight))
            reference.bias.copy_(torch.tensor(bias))
        layer.weight, layer.bias = weight.copy(), bias.copy()
    else:
        assert layer.weight is None and layer.bias is None

    assert layer.training
    for _ in range(3):
        _assert_layer_matches_torch(layer, reference, random_batch(rng, shape),
                                    rng.standard_normal(shape), channel_axis)

    layer.eval()
    reference.eval()
    assert not layer.training
    for _ in range(2):
        _assert_layer_matches_torch(layer, reference, random_batch(rng, shape),
                                    rng.standard_normal(shape), channel_axis)
    if track_running_stats:
        assert int(layer.num_batches_tracked) == 3


def test_eval_backward_is_the_running_stats_gradient(rng):
    layer = bnp.BatchNorm(3, eps=1e-3)
    layer.weight = rng.uniform(0.5, 2.0, 3)
    layer.bias = rng.normal(size=3)
    layer(random_batch(rng, (8, 3, 4)))
    layer.eval()
    x, grad_y = random_batch(rng, (8, 3, 4)), rng.standard_normal((8, 3, 4))
    y = layer(x)
    grad_x = layer.backward(grad_y)
    scale = (layer.weight / np.sqrt(layer.running_var + 1e-3))[:, None]
    np.testing.assert_allclose(grad_x, grad_y * scale, **TOL64)
    x_hat = (x - layer.running_mean[:, None]) / np.sqrt(layer.running_var + 1e-3)[:, None]
    np.testing.assert_allclose(layer.grad_weight, (grad_y * x_hat).sum(axis=(0, 2)), **TOL64)
    np.testing.assert_allclose(layer.grad_bias, grad_y.sum(axis=(0, 2)), **TOL64)
    np.testing.assert_allclose(y, x_hat * layer.weight[:, None] + layer.bias[:, None], **TOL64)


def test_cumulative_momentum_averages_every_batch_equally(rng):
    layer = bnp.BatchNorm(2, momentum=None)
    batches = [random_batch(rng, (10, 2)) for _ in range(4)]
    for x in batches:
        layer(x)
    np.testing.assert_allclose(layer.running_mean, np.mean([b.mean(0) for b in batches], 0),
                               **TOL64)
    np.testing.assert_allclose(layer.running_var,
                               np.mean([b.var(0, ddof=1) for b in batches], 0), **TOL64)
    assert int(layer.num_batches_tracked) == 4


def test_train_and_eval_switch_the_mode():
    layer = bnp.BatchNorm(3)
    assert layer.training
    layer.eval()
    assert not layer.training
    layer.train()
    assert layer.training
    layer.train(False)
    assert not layer.training


def test_eval_does_not_change_num_batches_tracked(rng):
    layer = bnp.BatchNorm(3)
    layer(random_batch(rng, (4, 3)))
    layer.eval()
    saved_mean, saved_var = layer.running_mean.copy(), layer.running_var.copy()
    layer(random_batch(rng, (4, 3)))
    assert int(layer.num_batches_tracked) == 1
    np.testing.assert_array_equal(layer.running_mean, saved_mean)
    np.testing.assert_array_equal(layer.running_var, saved_var)


def test_call_and_forward_are_the_same(rng):
    x = random_batch(rng, (4, 3, 2))
    first, second = bnp.BatchNorm(3), bnp.BatchNorm(3)
    np.testing.assert_array_equal(first(x), second.forward(x))
    np.testing.assert_array_equal(first.running_var, second.running_var)


@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
def test_large_batch_matches_torch(rng, channel_axis):
    """2 MB of float64: statistics and gradients accumulate over many cache-sized pieces."""
    shape = (16, 16, 32, 32)
    x, grad_y = random_batch(rng, shape), rng.standard_normal(shape)
    weight = rng.uniform(0.5, 2.0, shape[1])
    running_mean, running_var = np.zeros(shape[1]), np.ones(shape[1])
    torch_mean, torch_var = torch.zeros(shape[1], dtype=torch.float64), torch.ones(
        shape[1], dtype=torch.float64)
    weight_t = torch.tensor(weight, requires_grad=True)
    y_ref, grad_x_ref, (grad_weight_ref,) = torch_forward_backward(
        lambda inp: F.batch_norm(inp, torch_mean, torch_var, weight_t, training=True),
        torch.tensor(x), torch.tensor(grad_y), [weight_t])
    x_in = np.ascontiguousarray(to_layout(x, channel_axis))
    grad_y_in = np.ascontiguousarray(to_layout(grad_y, channel_axis))

    y = bnp.batch_norm(x_in, running_mean, running_var, weight, training=True,
                       channel_axis=channel_axis)
    grad_x, grad_weight, _ = bnp.batch_norm_backward(grad_y_in, x_in, weight,
                                                     channel_axis=channel_axis)

    np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(running_mean, as_numpy(torch_mean), **TOL64)
    np.testing.assert_allclose(running_var, as_numpy(torch_var), **TOL64)
    np.testing.assert_allclose(from_layout(grad_x, channel_axis), as_numpy(grad_x_ref), **TOL64)
    np.testing.assert_allclose(grad_weight, as_numpy(grad_weight_ref), rtol=1e-10, atol=1e-9)
