"""BN's gains and Santurkar et al.'s Theorem 4.1 (bnkit.experiments.gains).

Oracles: autograd through the model's own BN for the left-hand side, the
batch statistics for the right-hand side, a trace of the model for sigma, and
the exact scale invariance of a BN layer's output in the weights feeding it.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnkit.experiments import History, mlp, train
from bnkit.experiments.gains import (bn_blocks, bn_input_std, gain_ratios, gains_callback, input_weight_norms,
                                     theorem41)
from bnkit.experiments.noise import noise_hook


def net(batch_norm=True, noisy=False, eps=1e-5, init_std=0.3, seed=0):
    hook = noise_hook(seed=seed) if noisy else None
    return mlp((8, 7, 6, 5, 3), batch_norm=batch_norm, init_std=init_std, bn_eps=eps, post_norm=hook,
               seed=seed).double()


def batch(rng, n=16):
    return torch.from_numpy(rng.standard_normal((n, 8))), torch.from_numpy(rng.integers(0, 3, n))


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


@pytest.mark.parametrize("noisy", [False, True])
@pytest.mark.parametrize("layer", [0, 1, 2])
def test_theorem_41_identity_holds_exactly_and_the_bound_above_it(rng, layer, noisy):
    model = net(noisy=noisy)
    with torch.no_grad():
        for b in model.blocks:  # gamma away from 1, so the factor matters
            b.norm.weight.copy_(torch.linspace(0.3, 2.5, b.norm.num_features))
    x, y = batch(rng)
    before = snapshot(model)
    r = theorem41(model, x, y, layer)
    np.testing.assert_allclose(r.grad_in_sq, r.exact, rtol=1e-10, atol=1e-20)
    assert (r.bound >= r.grad_in_sq * (1 - 1e-12)).all()
    # the projection removes something: the input gradient is below gain_ratio * |g|^2
    assert (r.grad_in_sq < r.gain_ratio * r.grad_out_sq).all()
    for k, v in model.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_theorem_41_bound_is_an_equality_as_eps_vanishes(rng):
    x, y = batch(rng)
    r = theorem41(net(eps=1e-14), x, y, 1)
    np.testing.assert_allclose(r.bound, r.grad_in_sq, rtol=1e-8)
    r = theorem41(net(eps=1e-2, init_std=0.05), x, y, 1)  # eps near sigma^2: the bound is not tight
    assert (r.bound - r.grad_in_sq > 1e-5 * r.grad_in_sq).all()


def test_theorem_41_rejects_a_block_without_bn(rng):
    with pytest.raises(ValueError, match="no batch norm"):
        theorem41(net(batch_norm=[True, False, True]), *batch(rng), 1)


def test_gain_ratios_from_a_trace(rng):
    model = net()
    x, _ = batch(rng)
    t = model.train().trace(x)
    ratios, stds = gain_ratios(model, x), bn_input_std(model, x)
    assert bn_blocks(model) == [0, 1, 2] and len(ratios) == 3
    for i, (r, s) in enumerate(zip(ratios, stds)):
        u = t.linear[i].detach()
        np.testing.assert_allclose(s, u.std(0, unbiased=False).numpy(), rtol=1e-12)
        gamma = model.blocks[i].norm.weight.detach()
        np.testing.assert_allclose(r, (gamma ** 2 / (u.var(0, unbiased=False) + 1e-5)).numpy(), rtol=1e-12)
    assert bn_blocks(net(batch_norm=False)) == [] and gain_ratios(net(batch_norm=False), x) == []


def test_scaling_the_weights_into_bn_keeps_the_loss_and_divides_gradient_and_gain_ratio(rng):
    """BN's output does not depend on the scale c of the weights feeding it; their gradient goes as 1/c."""
    x, y = batch(rng)
    a, b = net(eps=1e-14), net(eps=1e-14)
    c = 10.0
    with torch.no_grad():
        b.blocks[1].linear.weight.mul_(c)
    la, lb = F.cross_entropy(a.train()(x), y), F.cross_entropy(b.train()(x), y)
    np.testing.assert_allclose(float(lb.detach()), float(la.detach()), rtol=1e-10)
    ga = torch.autograd.grad(la, a.blocks[1].linear.weight)[0]
    gb = torch.autograd.grad(lb, b.blocks[1].linear.weight)[0]
    torch.testing.assert_close(gb, ga / c, rtol=1e-8, atol=1e-14)
    np.testing.assert_allclose(gain_ratios(b, x)[1], gain_ratios(a, x)[1] / c ** 2, rtol=1e-8)
    np.testing.assert_allclose(input_weight_norms(b)[1], c * input_weight_norms(a)[1], rtol=1e-12)


def test_gains_callback_logs_medians_per_bn_layer(rng):
    data = {"x_train": rng.random((60, 8)).astype(np.float32), "y_train": rng.integers(0, 3, 60),
            "x_test": rng.random((20, 8)).astype(np.float32), "y_test": rng.integers(0, 3, 20)}
    x_fixed = torch.from_numpy(data["x_train"][:10])
    model = mlp((8, 7, 6, 3), batch_norm=True, init_std=0.3, seed=0)
    h = train(model, data, steps=4, batch_size=10, eval_every=2, record_every=0,
              callback=gains_callback((x_fixed, None)), callback_every=2)
    steps, ratio = h.logged("bn/gain_ratio")
    np.testing.assert_array_equal(steps, [0, 2, 4])
    assert ratio.shape == (3, 2)
    np.testing.assert_allclose(ratio[-1], [np.median(r) for r in gain_ratios(model, x_fixed)], rtol=1e-6)
    np.testing.assert_allclose(h.logged("bn/weight_norm")[1][-1], input_weight_norms(model), rtol=1e-6)
    plain = train(mlp((8, 7, 6, 3), seed=0), data, steps=2, batch_size=10, eval_every=2, record_every=0,
                  callback=gains_callback((x_fixed, None)), callback_every=2)
    assert isinstance(plain, History) and "bn/gain_ratio" not in plain.logs
