"""bnkit.staged: the six-stage forward/backward against three oracles.

The oracles, all in float64: bnkit.numpy's closed form, torch autograd through
``torch.nn.functional.batch_norm``, and central finite differences. The seeded
``rng`` fixture comes from conftest.py.
"""

import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
from bnkit.staged import StagedCache, staged_backward, staged_forward

TOL64 = dict(rtol=1e-10, atol=1e-12)

SHAPES = [
    pytest.param((8, 3), id="ND"),
    pytest.param((6, 3, 5), id="NCL"),
    pytest.param((4, 3, 4, 5), id="NCHW"),
    pytest.param((3, 2, 3, 4, 2), id="NCDHW"),
]


def _batch(rng, shape):
    """Channels with different means and spreads, plus gamma, beta and an upstream gradient."""
    c = shape[1]
    per_channel = (1, c) + (1,) * (len(shape) - 2)
    loc = rng.uniform(-3, 3, c).reshape(per_channel)
    scale = rng.uniform(0.5, 3, c).reshape(per_channel)
    x = loc + scale * rng.standard_normal(shape)
    weight = rng.uniform(0.5, 2.0, c)
    bias = rng.standard_normal(c)
    grad_y = rng.standard_normal(shape)
    return x, weight, bias, grad_y


def test_importing_bnkit_staged_does_not_import_torch():
    code = "import sys, bnkit.staged; print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_matches_bnkit_numpy_training_mode(rng, shape):
    x, weight, bias, _ = _batch(rng, shape)
    y, _ = staged_forward(x, weight, bias, eps=1e-3)
    expected = bnp.batch_norm(x, weight=weight, bias=bias, training=True, eps=1e-3)
    np.testing.assert_allclose(y, expected, **TOL64)


@pytest.mark.parametrize("shape", SHAPES)
def test_cache_holds_every_stage_with_its_shape(rng, shape):
    x, weight, bias, _ = _batch(rng, shape)
    _, cache = staged_forward(x, weight, bias)
    assert isinstance(cache, StagedCache)
    c = shape[1]
    assert cache.mean.shape == cache.var.shape == cache.invstd.shape == (c,)
    assert cache.x_centered.shape == cache.xhat.shape == shape
    mean, var = bnp.batch_statistics(x)
    np.testing.assert_allclose(cache.mean, mean, **TOL64)
    np.testing.assert_allclose(cache.var, var, **TOL64)
    np.testing.assert_allclose(cache.invstd, 1 / np.sqrt(var + 1e-5), **TOL64)
    np.testing.assert_array_equal(cache.weight, weight)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_closed_form(rng, shape):
    x, weight, bias, grad_y = _batch(rng, shape)
    _, cache = staged_forward(x, weight, bias)
    got = staged_backward(grad_y, cache)
    expected = bnp.batch_norm_backward(grad_y, x, weight)
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e, **TOL64)


@pytest.mark.parametrize("shape", SHAPES)
def test_backward_matches_torch_autograd(rng, shape):
    x, weight, bias, grad_y = _batch(rng, shape)
    _, cache = staged_forward(x, weight, bias, eps=1e-4)
    got = staged_backward(grad_y, cache)

    xt, wt, bt = (torch.tensor(a, requires_grad=True) for a in (x, weight, bias))
    yt = F.batch_norm(xt, None, None, wt, bt, training=True, eps=1e-4)
    expected = torch.autograd.grad(yt, (xt, wt, bt), torch.tensor(grad_y))
    for g, e in zip(got, expected):
        np.testing.assert_allclose(g, e.numpy(), **TOL64)


def test_backward_matches_central_finite_differences(rng):
    x, weight, bias, grad_y = _batch(rng, (6, 3))
    h = 1e-6

    def loss(x_, w_, b_):
        # L = sum(grad_y * y), so dL/dy = grad_y
        return float(np.sum(grad_y * staged_forward(x_, w_, b_)[0]))

    def numeric(arg):
        params = [x, weight, bias]
        out = np.zeros_like(params[arg])
        for idx in np.ndindex(out.shape):
            plus = [p.copy() for p in params]
            minus = [p.copy() for p in params]
            plus[arg][idx] += h
            minus[arg][idx] -= h
            out[idx] = (loss(*plus) - loss(*minus)) / (2 * h)
        return out

    _, cache = staged_forward(x, weight, bias)
    analytic = staged_backward(grad_y, cache)
    for arg, a in enumerate(analytic):
        np.testing.assert_allclose(a, numeric(arg), rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("shape", SHAPES)
def test_input_gradient_is_orthogonal_to_shift_and_to_xhat_up_to_eps(rng, shape):
    x, weight, bias, grad_y = _batch(rng, shape)
    eps = 1e-5
    _, cache = staged_forward(x, weight, bias, eps=eps)
    grad_x, grad_weight, _ = staged_backward(grad_y, cache)
    axes = (0,) + tuple(range(2, len(shape)))
    np.testing.assert_allclose(grad_x.sum(axis=axes), 0.0, atol=1e-11)
    # sum_i dx_i xhat_i = gamma * invstd * dgamma * eps / (var + eps): zero as eps -> 0
    expected = weight * cache.invstd * grad_weight * eps / (cache.var + eps)
    np.testing.assert_allclose((grad_x * cache.xhat).sum(axis=axes), expected, atol=1e-11)


def test_without_weight_and_bias_means_ones_and_zeros(rng):
    x, _, _, grad_y = _batch(rng, (7, 4))
    ones, zeros = np.ones(4), np.zeros(4)
    y0, cache0 = staged_forward(x)
    y1, cache1 = staged_forward(x, ones, zeros)
    np.testing.assert_array_equal(y0, y1)
    for a, b in zip(staged_backward(grad_y, cache0), staged_backward(grad_y, cache1)):
        np.testing.assert_array_equal(a, b)


def test_float32_stays_float32(rng):
    x, weight, bias, grad_y = _batch(rng, (16, 3))
    y, cache = staged_forward(x.astype(np.float32), weight, bias)
    grads = staged_backward(grad_y, cache)
    assert y.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    expected = bnp.batch_norm_backward(grad_y, x, weight)
    for g, e in zip(grads, expected):
        np.testing.assert_allclose(g, e, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("x, kwargs, error, match", [
    (np.zeros(5), {}, ValueError, "expected an input of rank >= 2"),
    (np.zeros((4, 3), dtype=np.int64), {}, TypeError, "floating-point"),
    (np.zeros((4, 3)), {"weight": np.ones(2)}, ValueError, r"weight has shape \(2,\)"),
    (np.zeros((4, 3)), {"bias": np.ones(4)}, ValueError, r"bias has shape \(4,\)"),
    (np.zeros((1, 3)), {}, ValueError, "more than 1 value per channel"),
    (np.zeros((0, 3)), {}, ValueError, "needs a non-empty batch"),
    (np.zeros((2, 3, 0)), {}, ValueError, "needs a non-empty batch"),
    (np.zeros((4, 3)), {"eps": 0.0}, ValueError, "eps must be"),
])
def test_forward_rejects_bad_arguments(x, kwargs, error, match):
    with pytest.raises(error, match=match):
        staged_forward(x, **kwargs)


def test_backward_rejects_grad_of_the_wrong_shape(rng):
    x, weight, bias, _ = _batch(rng, (5, 3))
    _, cache = staged_forward(x, weight, bias)
    with pytest.raises(ValueError, match=r"grad_y has shape \(5, 2\)"):
        staged_backward(np.zeros((5, 2)), cache)
