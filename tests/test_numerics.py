"""Numerics: float32 stays float32 and accurate when the mean dwarfs the spread; a constant
channel gives beta, never NaN. The reference is torch in float64 on the same float32 values.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import as_numpy, from_layout, random_batch, to_layout

SHAPE = (64, 4, 32, 32)  # 65536 values per channel, 1 MB in float32


def _one_training_step(impl, x, device, weight=None, bias=None):
    """Normalize the (N, C, H, W) batch ``x`` with ``impl`` in training mode, momentum 1.

    Returns y (as (N, C, H, W)) and the running mean and variance, as NumPy arrays.
    """
    num_channels = x.shape[1]
    dtype = x.dtype
    if weight is None:
        weight, bias = np.ones(num_channels, dtype), np.zeros(num_channels, dtype)
    if impl in ("numpy-function", "numpy-function-channels-last"):
        channel_axis = -1 if impl.endswith("channels-last") else 1
        mean, var = np.zeros(num_channels, dtype), np.ones(num_channels, dtype)
        x_in = np.ascontiguousarray(to_layout(x, channel_axis))
        y = bnp.batch_norm(x_in, mean, var, weight, bias, training=True, momentum=1.0,
                           channel_axis=channel_axis)
        return from_layout(y, channel_axis), mean, var
    if impl == "numpy-layer":
        layer = bnp.BatchNorm(num_channels, momentum=1.0)
        layer.weight, layer.bias = weight, bias
        return layer(x), layer.running_mean, layer.running_var
    t = torch.tensor(x, device=device)
    if impl == "torch-function":
        mean = torch.zeros(num_channels, dtype=t.dtype, device=device)
        var = torch.ones(num_channels, dtype=t.dtype, device=device)
        y = bnt.batch_norm(t, mean, var, torch.tensor(weight, device=device),
                           torch.tensor(bias, device=device), training=True, momentum=1.0)
        return as_numpy(y), as_numpy(mean), as_numpy(var)
    if impl == "torch-module":
        module = bnt.BatchNorm2d(num_channels, momentum=1.0, device=device, dtype=t.dtype)
        with torch.no_grad():
            module.weight.copy_(torch.tensor(weight))
            module.bias.copy_(torch.tensor(bias))
        y = module(t)
        return as_numpy(y), as_numpy(module.running_mean), as_numpy(module.running_var)
    raise AssertionError(impl)


IMPLS = ["numpy-function", "numpy-function-channels-last", "numpy-layer", "torch-function",
         "torch-module"]


@pytest.fixture(params=IMPLS)
def impl(request, device):
    """An implementation and the device it runs on (NumPy runs on the CPU only)."""
    if request.param.startswith("numpy") and device.type != "cpu":
        pytest.skip("NumPy runs on the CPU only")
    return request.param


def _float64_reference(x):
    x64 = torch.tensor(x, dtype=torch.float64)
    y = F.batch_norm(x64, None, None, training=True)
    return as_numpy(y), as_numpy(x64.mean(dim=(0, 2, 3))), as_numpy(x64.var(dim=(0, 2, 3)))


def _large_mean_batch(rng):
    """1e4 + N(0, 1) in float32: the mean is 1e4 times the spread."""
    return (1e4 + rng.standard_normal(SHAPE)).astype(np.float32)


def test_naive_variance_formula_fails_on_large_mean_data(rng):
    """E[x^2] - E[x]^2 in float32 loses the variance entirely: the accuracy test below bites."""
    x = _large_mean_batch(rng)
    mean = x.mean(axis=(0, 2, 3), keepdims=True)
    naive_var = (x * x).mean(axis=(0, 2, 3), keepdims=True) - mean * mean
    with np.errstate(invalid="ignore"):
        y_naive = (x - mean) / np.sqrt(naive_var + np.float32(1e-5))
    y_ref, _, _ = _float64_reference(x)
    # NaN (a negative "variance") counts as a failure too.
    assert not np.all(np.abs(y_naive - y_ref) < 1e-2)


def test_float32_stays_accurate_when_mean_dwarfs_spread(rng, impl, device):
    x = _large_mean_batch(rng)
    y, running_mean, running_var = _one_training_step(impl, x, device)
    y_ref, mean_ref, var_ref = _float64_reference(x)

    assert y.dtype == np.float32
    assert np.max(np.abs(y - y_ref)) < 1e-2
    np.testing.assert_allclose(running_mean, mean_ref, rtol=0, atol=1e-2)
    np.testing.assert_allclose(running_var, var_ref, rtol=1e-2)  # unbiased, close to 1


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_output_keeps_the_input_dtype(rng, impl, device, dtype):
    x = random_batch(rng, (4, 3, 2, 2), dtype)
    y, _, _ = _one_training_step(impl, x, device)
    assert y.dtype == dtype
    np.testing.assert_allclose(y, _float64_reference(x)[0],
                               atol=1e-5 if dtype == np.float32 else 1e-12)


def test_float32_input_to_float64_numpy_layer_gives_float32_in_eval_and_backward(rng):
    layer = bnp.BatchNorm(3)  # float64 parameters and running statistics
    layer(random_batch(rng, (4, 3, 2)))
    layer.eval()
    x = random_batch(rng, (4, 3, 2), np.float32)
    y = layer(x)
    assert y.dtype == np.float32
    assert layer.backward(np.ones_like(x)).dtype == np.float32
    expected = (x - layer.running_mean[:, None]) / np.sqrt(layer.running_var[:, None] + 1e-5)
    np.testing.assert_allclose(y, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_numpy_backward_keeps_the_input_dtype(rng, dtype):
    x, grad_y = random_batch(rng, (4, 3, 2), dtype), rng.standard_normal((4, 3, 2)).astype(dtype)
    grads = bnp.batch_norm_backward(grad_y, x, np.ones(3, dtype))
    assert [g.dtype for g in grads] == [dtype] * 3


# A constant channel has variance 0: x_hat = 0 / sqrt(eps) = 0 and y = beta exactly, up to the
# round-off of the mean. Not NaN, not inf.
CONSTANT_CASES = [
    pytest.param(np.float64, value, 1e-8, id=f"float64-{value:g}")
    for value in (0.1, 3.0, -7.3, 1e4)
] + [
    pytest.param(np.float32, value, 1e-3, id=f"float32-{value:g}") for value in (0.1, 3.0, -7.3)
]


@pytest.mark.parametrize(("dtype", "value", "atol"), CONSTANT_CASES)
def test_constant_channel_gives_beta_not_nan(rng, impl, device, dtype, value, atol):
    x = random_batch(rng, (16, 3, 4, 4), dtype)
    x[:, 1] = value
    weight, bias = np.array([2.0, 3.0, 4.0], dtype), np.array([0.5, -1.5, 2.0], dtype)
    y, running_mean, running_var = _one_training_step(impl, x, device, weight, bias)

    assert np.all(np.isfinite(y))
    np.testing.assert_allclose(y[:, 1], bias[1], rtol=0, atol=atol)
    np.testing.assert_allclose(running_var[1], 0.0, rtol=0, atol=atol)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_constant_channel_gradients_are_finite_and_match_torch(rng, device, dtype):
    x, grad_y = random_batch(rng, (8, 3, 5), dtype), rng.standard_normal((8, 3, 5)).astype(dtype)
    x[:, 0] = 0.5
    weight = np.array([2.0, 3.0, 4.0], dtype)
    x_t = torch.tensor(x, dtype=torch.float64, requires_grad=True)
    weight_t = torch.tensor(weight, dtype=torch.float64, requires_grad=True)
    y_t = F.batch_norm(x_t, None, None, weight_t, None, training=True)
    expected = torch.autograd.grad(y_t, [x_t, weight_t], torch.tensor(grad_y, dtype=torch.float64))
    tol = dict(rtol=1e-4, atol=1e-3) if dtype == np.float32 else dict(rtol=1e-10, atol=1e-10)

    numpy_grads = bnp.batch_norm_backward(grad_y, x, weight)[:2]
    x_bnt = torch.tensor(x, device=device, requires_grad=True)
    weight_bnt = torch.tensor(weight, device=device, requires_grad=True)
    torch_grads = torch.autograd.grad(bnt.batch_norm(x_bnt, None, None, weight_bnt, None,
                                                     training=True),
                                      [x_bnt, weight_bnt], torch.tensor(grad_y, device=device))
    for got in (*numpy_grads, *map(as_numpy, torch_grads)):
        assert np.all(np.isfinite(got))
    for got, want in zip((*numpy_grads, *map(as_numpy, torch_grads)), (*expected, *expected)):
        np.testing.assert_allclose(got, as_numpy(want), **tol)
