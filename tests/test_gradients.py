"""Gradients: bnkit.numpy's closed-form backward and bnkit.torch's autograd.Function.

Three independent oracles: torch autograd (float64), central finite differences
of the NumPy forward, and ``torch.autograd.gradcheck`` on bnkit.torch.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import (CHANNEL_AXES, SHAPES, TOL64, as_numpy, from_layout, random_batch,
                        to_layout, torch_forward_backward)

SMALL_SHAPES = [pytest.param((4, 3), id="NC"), pytest.param((3, 2, 4), id="NCL"),
                pytest.param((2, 3, 2, 3), id="NCHW")]


# --------------------------------------------------------------------------- NumPy vs autograd


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
@pytest.mark.parametrize("with_weight", [True, False], ids=["weight", "no_weight"])
def test_batch_norm_backward_matches_torch_autograd(rng, shape, channel_axis, with_weight):
    num_channels = shape[1]
    x, grad_y = random_batch(rng, shape), rng.standard_normal(shape)
    weight = rng.uniform(0.5, 2.0, num_channels) if with_weight else None
    # Without a weight, grad_weight is still sum(dy * x_hat): torch's gradient at gamma = 1.
    weight_t = torch.tensor(weight if with_weight else np.ones(num_channels), requires_grad=True)
    bias_t = torch.zeros(num_channels, dtype=torch.float64, requires_grad=True)
    _, grad_x_ref, (grad_weight_ref, grad_bias_ref) = torch_forward_backward(
        lambda inp: F.batch_norm(inp, None, None, weight_t, bias_t, training=True, eps=1e-4),
        torch.tensor(x), torch.tensor(grad_y), [weight_t, bias_t])

    grad_x, grad_weight, grad_bias = bnp.batch_norm_backward(
        to_layout(grad_y, channel_axis), to_layout(x, channel_axis), weight, eps=1e-4,
        channel_axis=channel_axis)

    np.testing.assert_allclose(from_layout(grad_x, channel_axis), as_numpy(grad_x_ref), **TOL64)
    np.testing.assert_allclose(grad_weight, as_numpy(grad_weight_ref), **TOL64)
    np.testing.assert_allclose(grad_bias, as_numpy(grad_bias_ref), **TOL64)


# --------------------------------------------------------------------------- finite differences


def _central_difference(f, a, h=1e-6):
    """Numerical gradient of the scalar function ``f`` with respect to the array ``a``."""
    grad = np.empty_like(a)
    for i in np.ndindex(a.shape):
        saved = a[i]
        a[i] = saved + h
        up = f()
        a[i] = saved - h
        down = f()
        a[i] = saved
        grad[i] = (up - down) / (2 * h)
    return grad


def _relative_error(got, expected):
    return np.linalg.norm(got - expected) / max(np.linalg.norm(got), np.linalg.norm(expected))


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("channel_axis", CHANNEL_AXES)
def test_backward_matches_central_finite_differences(rng, shape, channel_axis):
    num_channels = shape[1]
    x = np.ascontiguousarray(to_layout(random_batch(rng, shape), channel_axis))
    g = rng.standard_normal(x.shape)  # the loss is sum(y * G), so dL/dy = G
    weight, bias = rng.uniform(0.5, 2.0, num_channels), rng.normal(size=num_channels)

    def loss():
        y = bnp.batch_norm(x, weight=weight, bias=bias, training=True, eps=1e-3,
                           channel_axis=channel_axis)
        return float(np.sum(y * g))

    grad_x, grad_weight, grad_bias = bnp.batch_norm_backward(g, x, weight, eps=1e-3,
                                                             channel_axis=channel_axis)

    for analytic, wrt in ((grad_x, x), (grad_weight, weight), (grad_bias, bias)):
        assert _relative_error(analytic, _central_difference(loss, wrt)) < 1e-6


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_backward_matches_central_finite_differences(rng, training):
    layer = bnp.BatchNorm(3, eps=1e-3)
    layer.weight, layer.bias = rng.uniform(0.5, 2.0, 3), rng.normal(size=3)
    layer(random_batch(rng, (5, 3, 2)))  # non-trivial running statistics for eval mode
    layer.train(training)
    x, g = random_batch(rng, (4, 3, 2)), rng.standard_normal((4, 3, 2))

    def loss():
        # training updates the running statistics on every call, but y never depends on them
        return float(np.sum(layer(x) * g))

    loss()
    grad_x = layer.backward(g)
    grad_weight, grad_bias = np.copy(layer.grad_weight), np.copy(layer.grad_bias)

    for analytic, wrt in ((grad_x, x), (grad_weight, layer.weight), (grad_bias, layer.bias)):
        assert _relative_error(analytic, _central_difference(loss, wrt)) < 1e-6


# --------------------------------------------------------------------------- gradcheck


def _gradcheck_inputs(rng, shape, device, affine):
    num_channels = shape[1]
    x = torch.tensor(random_batch(rng, shape), device=device, requires_grad=True)
    weight = bias = None
    if affine:
        weight = torch.tensor(rng.uniform(0.5, 2.0, num_channels), device=device,
                              requires_grad=True)
        bias = torch.tensor(rng.normal(size=num_channels), device=device, requires_grad=True)
    running_mean = torch.tensor(rng.normal(size=num_channels), device=device)
    running_var = torch.tensor(rng.uniform(0.5, 2.0, num_channels), device=device)
    return x, weight, bias, running_mean, running_var


@pytest.mark.parametrize("shape", SMALL_SHAPES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_gradcheck(rng, device, shape, affine, training):
    x, weight, bias, running_mean, running_var = _gradcheck_inputs(rng, shape, device, affine)
    inputs = (x, weight, bias) if affine else (x,)

    def fn(x, weight=None, bias=None):
        # in training mode the running statistics change on every call but never affect y
        return bnt.batch_norm(x, running_mean, running_var, weight, bias, training=training,
                              eps=1e-3)

    assert torch.autograd.gradcheck(fn, inputs)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_weight_and_bias_gradients_without_an_input_gradient_match_torch(rng, device, training):
    x, weight, bias, running_mean, running_var = _gradcheck_inputs(rng, (4, 3, 5), device, True)
    x = x.detach()  # only the parameters need a gradient
    grad_y = torch.tensor(rng.standard_normal(x.shape), device=device)
    expected = torch.autograd.grad(
        F.batch_norm(x, running_mean.clone(), running_var.clone(), weight, bias, training),
        [weight, bias], grad_y)
    got = torch.autograd.grad(
        bnt.batch_norm(x, running_mean.clone(), running_var.clone(), weight, bias, training),
        [weight, bias], grad_y)
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL64)
