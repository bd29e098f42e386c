"""bnkit.experiments.saturation against independent computations.

Oracles: a NumPy forward pass and hand-written backward pass of the plain
network; torch's own ``nn.Linear``/``nn.BatchNorm1d``/``nn.Sigmoid`` with autograd
for the network with batch norm; torch autograd for the slopes; the closed-form
saturation bound.
"""

import numpy as np
import pytest
import torch
from torch import nn

from bnkit.experiments.saturation import (SLOPE_AT_ZERO, activation_slope, deep_mlp,
                                          profiles_over_seeds, saturated_fraction,
                                          saturation_bound, saturation_profile)

SMALL = dict(depth=3, width=16, inputs=20, classes=4, init_std=0.4)


def _batch(rng, n=32, inputs=20, classes=4):
    x = rng.uniform(0.0, 1.0, size=(n, inputs))
    y = rng.integers(0, classes, size=n)
    return x, y


def _numpy_plain_network(model, x, y):
    """Forward and hand-written backward of the sigmoid MLP without BN: z per layer, dL/dW per layer."""
    weights = [b.linear.weight.detach().double().numpy() for b in model.blocks]
    biases = [b.linear.bias.detach().double().numpy() for b in model.blocks]
    head_w = model.head.weight.detach().double().numpy()
    head_b = model.head.bias.detach().double().numpy()
    h, inputs, zs = x, [], []
    for w, b in zip(weights, biases):
        inputs.append(h)
        z = h @ w.T + b
        zs.append(z)
        h = 1.0 / (1.0 + np.exp(-z))
    logits = h @ head_w.T + head_b
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    n = len(y)
    loss = -np.log(p[np.arange(n), y]).mean()
    grad_logits = p.copy()
    grad_logits[np.arange(n), y] -= 1.0
    grad_logits /= n
    grad_h = grad_logits @ head_w
    grads = [None] * len(weights)
    for layer in reversed(range(len(weights))):
        s = 1.0 / (1.0 + np.exp(-zs[layer]))
        grad_z = grad_h * s * (1.0 - s)
        grads[layer] = grad_z.T @ inputs[layer]
        grad_h = grad_z @ weights[layer]
    return zs, grads, loss


def test_slopes_are_torch_derivatives():
    z = torch.linspace(-12.0, 12.0, 241, dtype=torch.float64, requires_grad=True)
    for name, fn in (("sigmoid", torch.sigmoid), ("tanh", torch.tanh)):
        (expected,) = torch.autograd.grad(fn(z).sum(), z)
        np.testing.assert_allclose(activation_slope(z.detach().numpy(), name), expected.numpy(),
                                   rtol=1e-9, atol=1e-15)   # torch computes 1 - tanh², which cancels in the tails
        assert activation_slope(0.0, name) == SLOPE_AT_ZERO[name]


@pytest.mark.parametrize("activation", ["sigmoid", "tanh"])
@pytest.mark.parametrize("threshold", [0.05, 0.1, 0.5])
def test_saturated_fraction_is_the_share_beyond_the_closed_form_bound(rng, activation, threshold):
    bound = saturation_bound(activation, threshold)
    np.testing.assert_allclose(activation_slope(bound, activation),
                               threshold * SLOPE_AT_ZERO[activation], rtol=1e-12)
    z = rng.normal(0.0, 3.0, size=(200, 7))
    assert saturated_fraction(z, activation, threshold) == np.mean(np.abs(z) > bound)


def test_saturation_bound_values():
    np.testing.assert_allclose(saturation_bound("sigmoid"), 3.6369, atol=1e-4)
    np.testing.assert_allclose(saturation_bound("tanh"), 3.6369 / 2, atol=1e-4)


def test_profile_of_the_plain_network_matches_numpy_backprop(rng):
    x, y = _batch(rng)
    model = deep_mlp(seed=3, **SMALL).double()
    profile = saturation_profile(model, x, y)
    zs, grads, loss = _numpy_plain_network(model, x, y)
    assert len(profile.pre_activations) == SMALL["depth"]
    for got, expected in zip(profile.pre_activations, zs):
        np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(profile.grad_norms, [np.linalg.norm(g) for g in grads], rtol=1e-10)
    np.testing.assert_allclose(profile.loss, loss, rtol=1e-12)
    np.testing.assert_array_equal(profile.saturated, [saturated_fraction(z) for z in zs])
    np.testing.assert_allclose(profile.unit_std, [z.std(axis=0).mean() for z in zs], rtol=1e-12)
    np.testing.assert_allclose(profile.offset_spread, [z.mean(axis=0).std() for z in zs], rtol=1e-12)


def test_profile_of_the_bn_network_matches_torch_layers(rng):
    x, y = _batch(rng)
    model = deep_mlp(batch_norm=True, seed=3, **SMALL).double()
    profile = saturation_profile(model, x, y)

    layers, zs = [], []
    for block in model.blocks:                      # torch's own BatchNorm1d, same weights, no bias
        linear = nn.Linear(block.linear.in_features, block.linear.out_features, bias=False).double()
        with torch.no_grad():
            linear.weight.copy_(block.linear.weight)
        layers += [linear, nn.BatchNorm1d(linear.out_features).double()]
        layers.append(nn.Sigmoid())
    head = nn.Linear(model.head.in_features, model.head.out_features).double()
    head.load_state_dict(model.head.state_dict())
    h = torch.from_numpy(x)
    for i in range(0, len(layers), 3):
        z = layers[i + 1](layers[i](h))
        zs.append(z)
        h = layers[i + 2](z)
    loss = nn.functional.cross_entropy(head(h), torch.from_numpy(y))
    grads = torch.autograd.grad(loss, [layers[i].weight for i in range(0, len(layers), 3)])
    for got, expected in zip(profile.pre_activations, zs):
        np.testing.assert_allclose(got, expected.detach().numpy(), rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(profile.grad_norms, [g.norm().item() for g in grads], rtol=1e-9)
    np.testing.assert_allclose(profile.loss, loss.item(), rtol=1e-12)
    # batch statistics: every unit of z has mean 0 and (biased) std sqrt(var / (var + eps)) < 1
    np.testing.assert_allclose(profile.offset_spread, 0.0, atol=1e-12)
    assert np.all(profile.unit_std < 1.0) and np.all(profile.unit_std > 0.99)


def test_profile_leaves_the_model_untouched(rng):
    x, y = _batch(rng)
    model = deep_mlp(batch_norm=True, seed=0, **SMALL).eval()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    saturation_profile(model, x, y)
    assert not model.training
    assert all(p.grad is None for p in model.parameters())
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_with_and_without_bn_share_their_weights_and_seeds_differ(rng):
    x, y = _batch(rng)
    plain, with_bn = deep_mlp(seed=5, **SMALL), deep_mlp(batch_norm=True, seed=5, **SMALL)
    for a, b in zip(plain.blocks, with_bn.blocks):
        torch.testing.assert_close(a.linear.weight, b.linear.weight, rtol=0, atol=0)
    torch.testing.assert_close(plain.head.weight, with_bn.head.weight, rtol=0, atol=0)
    profiles = profiles_over_seeds(x, y, seeds=(0, 1), **SMALL)
    assert list(profiles) == ["without BN", "with BN"]
    assert all(len(v) == 2 for v in profiles.values())
    assert not np.array_equal(profiles["without BN"][0].grad_norms, profiles["without BN"][1].grad_norms)


def test_bad_input_is_refused(rng):
    x, y = _batch(rng)
    with pytest.raises(ValueError, match="activation must be one of"):
        activation_slope([0.0], "relu")
    with pytest.raises(ValueError, match="threshold must be in"):
        saturated_fraction([0.0], threshold=1.5)
    with pytest.raises(ValueError, match="activation must be one of"):
        saturation_profile(deep_mlp(activation="relu", **SMALL), x, y)
    with pytest.raises(ValueError, match="expected x of shape"):
        saturation_profile(deep_mlp(**SMALL), x, y[:5])
    with pytest.raises(ValueError, match="depth and width"):
        deep_mlp(depth=0)
    with pytest.raises(TypeError, match="sets batch_norm and seed"):
        profiles_over_seeds(x, y, batch_norm=True, **SMALL)
