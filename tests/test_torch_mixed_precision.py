"""Mixed precision: float16 and bfloat16 inputs, float32 and low-precision layers, autocast.

The oracle is torch's own ``nn.BatchNorm2d`` on the CPU, which computes in
float32 and rounds the output to the input's dtype, as bnkit does; the two
sum in different orders, so results agree to a few units in the last place
of the low-precision dtype, not bit for bit. Tolerances (``assert_close``:
``|a - b| <= atol + rtol * |b|``):

* tensors in float16 / bfloat16 (output, input gradient, low-precision
  parameters' gradients and running statistics): ``rtol = atol = 2 eps`` with
  ``eps`` the dtype's machine epsilon (2**-10 for float16, 2**-7 for bfloat16):
  two units in the last place;
* a float32 layer's running statistics: ``rtol = 1e-5`` (float32 sums in
  different orders);
* the parameter gradients, sums over the batch with cancellation, are held
  to the float64 sums over the same low-precision values instead: bnkit's
  error may exceed torch's by at most one unit in the last place of the
  gradient's dtype plus float32's epsilon times the sum of the terms' absolute
  values (what rounding each term to float32 once can cost, however it is summed).
"""

import pytest
import torch
from torch import nn

import bnkit.torch as bnt
from bnkit.torch import kernels

LOW = [torch.float16, torch.bfloat16]


def low_tol(dtype):
    eps = torch.finfo(dtype).eps
    return dict(rtol=2 * eps, atol=2 * eps)


def _tol(dtype):
    """The tolerance for an element-wise result or a running statistic of ``dtype``."""
    return low_tol(dtype) if dtype in LOW else dict(rtol=1e-5, atol=1e-6)


def _assert_sum_as_accurate_as_torch(name, ours, theirs, exact):
    """A gradient sum against the float64 sum ``exact = (value, sum of |terms|)``."""
    value, magnitude = exact
    slack = torch.finfo(ours.dtype).eps * value.abs() + torch.finfo(torch.float32).eps * magnitude
    err_ours, err_torch = (ours.double() - value).abs(), (theirs.double() - value).abs()
    assert (err_ours <= err_torch + slack).all(), (name, err_ours, err_torch, slack)


def _exact_sums(x, g, mean, var, eps=1e-5):
    """float64 (sum, sum of |terms|) of g * xhat and of g per channel, for ``mean``, ``var``."""
    x, g = x.double(), g.double()
    xhat = (x - mean.double().view(1, -1, 1, 1)) / (var.double().view(1, -1, 1, 1) + eps).sqrt()
    dims = (0, 2, 3)
    return ((g * xhat).sum(dims), (g * xhat).abs().sum(dims)), (g.sum(dims), g.abs().sum(dims))


def _pair(num_features, dtype, momentum=0.1):
    ours = bnt.BatchNorm2d(num_features, momentum=momentum, dtype=dtype)
    theirs = nn.BatchNorm2d(num_features, momentum=momentum, dtype=dtype)
    gen = torch.Generator().manual_seed(3)
    with torch.no_grad():
        weight = torch.rand(num_features, generator=gen) * 1.5 + 0.5
        bias = torch.randn(num_features, generator=gen)
        for m in (ours, theirs):
            m.weight.copy_(weight)
            m.bias.copy_(bias)
    return ours, theirs


def _forward_backward(layer, x, g):
    xi = x.clone().requires_grad_(True)
    y = layer(xi)
    y.backward(g)
    out = [y.detach(), xi.grad, layer.weight.grad.clone(), layer.bias.grad.clone()]
    layer.weight.grad = layer.bias.grad = None
    return out


@pytest.mark.parametrize("x_dtype", LOW, ids=str)
@pytest.mark.parametrize("layer", ["float32", "same"])
@pytest.mark.parametrize("shape", [(8, 3, 5, 5), (128, 4, 32, 32)], ids=["small", "blocked"])
def test_low_precision_input_matches_torch(x_dtype, layer, shape):
    """Training steps then eval, forward and backward, a float32 or a low-precision layer."""
    layer_dtype = torch.float32 if layer == "float32" else x_dtype
    ours, theirs = _pair(shape[1], layer_dtype)
    gen = torch.Generator().manual_seed(0)
    for training in (True, True, False):
        ours.train(training)
        theirs.train(training)
        x = (3 + 2 * torch.randn(shape, generator=gen)).to(x_dtype)
        g = torch.randn(shape, generator=gen).to(x_dtype)
        if training:
            var, mean = torch.var_mean(x.double(), (0, 2, 3), correction=0)
        else:
            mean, var = ours.running_mean, ours.running_var
        exact = _exact_sums(x, g, mean, var)
        got, want = _forward_backward(ours, x, g), _forward_backward(theirs, x, g)
        for name, a, b in zip(("output", "grad_input"), got, want):
            assert a.dtype == b.dtype == x_dtype, name
            torch.testing.assert_close(a, b, **low_tol(x_dtype), msg=lambda s: f"{name}: {s}")
        for name, a, b, e in zip(("grad_weight", "grad_bias"), got[2:], want[2:], exact):
            assert a.dtype == b.dtype == layer_dtype, name
            _assert_sum_as_accurate_as_torch(name, a, b, e)
        for key in ("running_mean", "running_var"):
            a, b = ours.state_dict()[key], theirs.state_dict()[key]
            assert a.dtype == b.dtype == layer_dtype
            torch.testing.assert_close(a, b, **_tol(layer_dtype))
        assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked)


@pytest.mark.parametrize("x_dtype", LOW, ids=str)
def test_functional_keeps_the_input_dtype(x_dtype):
    x = torch.randn(6, 3, 4).to(x_dtype)
    stats = [torch.zeros(3), torch.ones(3)]
    w, b = torch.ones(3), torch.zeros(3)
    y = bnt.batch_norm(x, *stats, w, b, training=True)
    y_ref = nn.functional.batch_norm(x, torch.zeros(3), torch.ones(3), w, b, training=True)
    assert y.dtype == y_ref.dtype == x_dtype
    torch.testing.assert_close(y, y_ref, **low_tol(x_dtype))
    assert stats[0].dtype == torch.float32


@pytest.mark.parametrize("layer_dtype", [torch.float32, torch.float16])
@pytest.mark.parametrize("shape", [(64, 2, 16, 16), (160, 2, 32, 32)], ids=["small", "blocked"])
def test_float16_sums_of_squares_beyond_65504_do_not_overflow(layer_dtype, shape):
    """Mean 100, std 50: the sum of x and of squared deviations exceed float16's largest value."""
    gen = torch.Generator().manual_seed(1)
    x = (100 + 50 * torch.randn(shape, generator=gen)).half()
    m = shape[0] * shape[2] * shape[3]
    assert float((x.double() - x.double().mean()).square().sum()) > 100 * 65504
    exact_var, exact_mean = torch.var_mean(x.double(), (0, 2, 3), correction=1)
    mean, var = kernels.batch_statistics(x)
    assert mean.dtype == var.dtype == torch.float32            # accumulated in float32
    torch.testing.assert_close(mean.double(), exact_mean, rtol=1e-6, atol=0)
    torch.testing.assert_close(var.double() * m / (m - 1), exact_var, rtol=1e-5, atol=0)

    ours, theirs = (cls(2, momentum=1.0, dtype=layer_dtype) for cls in (bnt.BatchNorm2d,
                                                                       nn.BatchNorm2d))
    y, y_ref = ours(x), theirs(x)
    assert torch.isfinite(y).all() and y.dtype == torch.float16
    torch.testing.assert_close(y, y_ref, **low_tol(torch.float16))
    for key, exact in (("running_mean", exact_mean), ("running_var", exact_var)):
        got = getattr(ours, key)
        assert got.dtype == layer_dtype and torch.isfinite(got).all()
        torch.testing.assert_close(got.double(), exact, **_tol(layer_dtype))
        torch.testing.assert_close(got, getattr(theirs, key), **_tol(layer_dtype))


def _model(bn_cls):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), bn_cls(8), nn.ReLU(),
                         nn.Conv2d(8, 8, 1), bn_cls(8))


@pytest.mark.parametrize("dtype", LOW, ids=str)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_under_autocast_after_a_convolution_like_torch(dtype, training):
    """``torch.autocast("cpu")``: the convolutions run in low precision, BN keeps their dtype."""
    ours, theirs = _model(bnt.BatchNorm2d).train(training), _model(nn.BatchNorm2d).train(training)
    gen = torch.Generator().manual_seed(2)
    x = torch.randn(4, 3, 6, 6, generator=gen)
    if not training:                      # running statistics to normalize with
        with torch.no_grad():
            for model in (ours, theirs):
                model.train()(x)
                model.eval()
    outputs = []
    for model in (ours, theirs):
        with torch.autocast("cpu", dtype=dtype):
            y = model(x)
        y.float().square().sum().backward()
        outputs.append(y)
    assert outputs[0].dtype == outputs[1].dtype == dtype
    torch.testing.assert_close(outputs[0], outputs[1], **low_tol(dtype))
    # The gradients passed through low-precision tensors on their way: a few ulps of
    # the low-precision dtype, relative to the largest gradient of the model.
    scale = max(q.grad.abs().max() for q in theirs.parameters())
    for (name, p), q in zip(ours.named_parameters(), theirs.parameters(), strict=True):
        assert p.grad.dtype == q.grad.dtype == torch.float32
        torch.testing.assert_close(p.grad, q.grad, rtol=0, atol=4 * torch.finfo(dtype).eps * scale,
                                   msg=lambda s: f"{name}: {s}")
    for a, b in zip(ours.buffers(), theirs.buffers(), strict=True):
        assert a.dtype == b.dtype
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_float32_input_through_a_float16_layer_computes_in_float32():
    """torch's CPU kernel refuses this mix; bnkit computes in float32, stores float16 statistics."""
    gen = torch.Generator().manual_seed(4)
    x = torch.randn(16, 3, 4, 4, generator=gen)
    half = bnt.BatchNorm2d(3, dtype=torch.float16)
    full = bnt.BatchNorm2d(3)
    y_half, y_full = half(x), full(x)
    assert y_half.dtype == torch.float32 and half.running_mean.dtype == torch.float16
    torch.testing.assert_close(y_half, y_full, rtol=0, atol=0)
    torch.testing.assert_close(half.running_var, full.running_var.half(), rtol=0, atol=0)
