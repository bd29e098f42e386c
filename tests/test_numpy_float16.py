"""float16 through bnkit.numpy, against torch 2.13 on the CPU.

The data make float16 overflow if it is summed in float16: 3200 values per channel
around 200 with a spread of 30, so the sum of a channel (6.4e5) and its sum of squared
deviations (2.9e6) are far beyond float16's largest value, 65504. bnkit.numpy forms
every sum in float32 or wider; the module turns every warning into an error, so an
overflow anywhere fails the test.

Two oracles. torch itself, with the same float16 input through a float32 layer
(what AMP produces) and through a float16 layer: the dtypes of every result must be
torch's. And torch in float64 on the same float16 values and parameters, which gives
the exact result the low-precision ones approximate. Errors are measured relative to
the largest magnitude of each result, ``max|q - q64| / max|q64|``, so that results
near zero do not turn one rounding step into a large relative error.

Tolerances (stated once, used below):

* float16 results (``y``, ``grad_x``; the weight and bias gradients and running
  statistics of a float16 layer): bnkit is within **2^-10** of the float64 oracle, one
  float16 rounding step (float16 has 11 significant bits); it is computed in float32
  and rounded once.
* float32 results (the gradients and running statistics of a float32 layer): within
  **1e-5** of the float64 oracle (float32 sums of a few hundred values per row).
* against torch in the same precision: within **2^-9** (two float16 steps) for float16
  results and **1e-5** for float32 ones; torch's own float16 layer is up to about one
  step off the float64 result (its weight gradient here: 1.3e-3; bnkit's: 2e-5).
"""

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
from bn_testing import from_layout, to_layout

pytestmark = pytest.mark.filterwarnings("error")

SHAPE = (8, 3, 20, 20)
C = SHAPE[1]
TORCH_DTYPE = {np.float16: torch.float16, np.float32: torch.float32, np.float64: torch.float64}
NAMES = ("y", "grad_x", "grad_weight", "grad_bias", "running_mean", "running_var")
TO_ORACLE = {np.dtype(np.float16): 2.0 ** -10, np.dtype(np.float32): 1e-5}
TO_TORCH = {np.dtype(np.float16): 2.0 ** -9, np.dtype(np.float32): 1e-5}


@pytest.fixture
def data(rng):
    x = (200.0 + 30.0 * rng.standard_normal(SHAPE)).astype(np.float16)
    grad_y = rng.standard_normal(SHAPE).astype(np.float16)
    return x, grad_y, rng.uniform(0.5, 2.0, C), rng.normal(size=C)


def _torch_step(layer_dtype, training, x, grad_y, weight, bias, input_dtype=torch.float16):
    """One forward and backward through torch.nn.BatchNorm2d; every result as a NumPy array."""
    layer = torch.nn.BatchNorm2d(C, dtype=layer_dtype)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
        layer.bias.copy_(torch.tensor(bias))
        layer.running_mean.fill_(190.0)
        layer.running_var.fill_(800.0)
    layer.train(training)
    x_t = torch.tensor(x).to(input_dtype).requires_grad_()
    y = layer(x_t)
    y.backward(torch.tensor(grad_y).to(input_dtype))
    return dict(zip(NAMES, (t.detach().numpy() for t in (
        y, x_t.grad, layer.weight.grad, layer.bias.grad, layer.running_mean, layer.running_var))))


def _bnkit_step(layer_dtype, training, x, grad_y, weight, bias, channel_axis):
    layer = bnp.BatchNorm(C, dtype=layer_dtype, channel_axis=channel_axis)
    layer.weight, layer.bias = weight.astype(layer_dtype), bias.astype(layer_dtype)
    layer.running_mean[:], layer.running_var[:] = 190.0, 800.0
    layer.train(training)
    y = layer(to_layout(x, channel_axis))
    grad_x = layer.backward(to_layout(grad_y, channel_axis))
    return dict(zip(NAMES, (from_layout(y, channel_axis), from_layout(grad_x, channel_axis),
                            layer.grad_weight, layer.grad_bias, layer.running_mean,
                            layer.running_var)))


def _error(got, exact):
    """max |got - exact| / max |exact|, in float64."""
    got, exact = np.asarray(got, np.float64), np.asarray(exact, np.float64)
    return np.max(np.abs(got - exact)) / np.max(np.abs(exact))


@pytest.mark.parametrize("layer_dtype", [np.float32, np.float16], ids=["float32_layer",
                                                                        "float16_layer"])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("channel_axis", [1, -1], ids=["channels_first", "channels_last"])
def test_float16_input_matches_torch(data, layer_dtype, training, channel_axis):
    x, grad_y, weight, bias = data
    # the parameters as the low-precision layer holds them, exactly, for every oracle
    weight, bias = weight.astype(layer_dtype), bias.astype(layer_dtype)
    ours = _bnkit_step(layer_dtype, training, x, grad_y, weight, bias, channel_axis)
    theirs = _torch_step(TORCH_DTYPE[layer_dtype], training, x, grad_y, weight, bias)
    exact = _torch_step(torch.float64, training, x, grad_y, weight, bias,
                        input_dtype=torch.float64)

    for name in NAMES:
        assert ours[name].dtype == theirs[name].dtype, name          # torch's dtype policy
        dtype = ours[name].dtype
        assert np.all(np.isfinite(ours[name])), name
        assert _error(ours[name], exact[name]) <= TO_ORACLE[dtype], name
        assert _error(ours[name], theirs[name]) <= TO_TORCH[dtype], name
    assert ours["y"].dtype == ours["grad_x"].dtype == np.float16
    assert ours["running_mean"].dtype == ours["grad_weight"].dtype == layer_dtype
    if not training:                 # eval mode leaves the running statistics alone
        assert np.all(ours["running_mean"] == 190.0) and np.all(ours["running_var"] == 800.0)


def test_float16_sums_would_overflow_in_float16(data):
    """The test data do what they claim: summed in float16, a channel overflows."""
    x = data[0]
    with np.errstate(over="ignore"):
        assert np.isinf(x[:, 0].sum(dtype=np.float16))
        centered = x[:, 0] - np.float16(200)
        assert np.isinf(np.sum(centered * centered, dtype=np.float16))


def test_float16_functions_without_a_layer(data):
    """The functional forms keep float16 too: output float16, statistics in the input's dtype."""
    x, grad_y, weight, bias = data
    exact = _torch_step(torch.float64, True, x, grad_y, weight, bias, input_dtype=torch.float64)
    running_mean, running_var = np.full(C, 190.0, np.float32), np.full(C, 800.0, np.float32)
    y = bnp.batch_norm(x, running_mean, running_var, weight, bias, training=True)
    grad_x, grad_weight, grad_bias = bnp.batch_norm_backward(grad_y, x, weight)
    mean, var = bnp.batch_statistics(x)
    assert y.dtype == grad_x.dtype == mean.dtype == var.dtype == np.float16
    assert grad_weight.dtype == grad_bias.dtype == np.float64          # the weight's dtype
    assert running_mean.dtype == np.float32
    for name, got in (("y", y), ("grad_x", grad_x)):
        assert _error(got, exact[name]) <= 2.0 ** -10, name
    for name, got in (("grad_weight", grad_weight), ("grad_bias", grad_bias),
                      ("running_mean", running_mean), ("running_var", running_var)):
        assert _error(got, exact[name]) <= 1e-5, name
    np.testing.assert_allclose(mean, x.astype(np.float64).mean(axis=(0, 2, 3)), rtol=2.0 ** -11)
    np.testing.assert_allclose(var, x.astype(np.float64).var(axis=(0, 2, 3)), rtol=2.0 ** -11)


def test_any_input_dtype_goes_through_any_layer_dtype(data):
    """Wider than torch, which refuses a float32 input to a float16 layer: output in the
    input's dtype, running statistics in the layer's."""
    x = data[0].astype(np.float32)
    layer = bnp.BatchNorm(C, dtype=np.float16)
    y = layer(x)
    assert y.dtype == np.float32 and layer.running_var.dtype == np.float16
    assert layer.backward(np.ones_like(x)).dtype == np.float32
    assert layer.grad_weight.dtype == np.float16
    np.testing.assert_allclose(layer.running_mean, 0.1 * x.astype(np.float64).mean(axis=(0, 2, 3)),
                               rtol=2.0 ** -11)


@pytest.mark.parametrize("which", ["layer", "group"])
def test_layer_and_group_norm_keep_float16_without_overflow(data, which):
    x = data[0]
    exact_x = torch.tensor(x.astype(np.float64))
    if which == "layer":
        y = bnp.layer_norm(x, SHAPE[1:])
        exact = torch.nn.functional.layer_norm(exact_x, SHAPE[1:])
    else:
        y = bnp.group_norm(x, 3)
        exact = torch.nn.functional.group_norm(exact_x, 3)
    assert y.dtype == np.float16
    assert _error(y, exact.numpy()) <= 2.0 ** -10
