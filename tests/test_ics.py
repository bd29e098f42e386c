"""Chapter 6's measurements: noisy BN, ICS by Definition 2.1, the landscape along the gradient.

Oracles: plain BN (noisy BN with zero noise), a naive re-implementation of
Definition 2.1 on deep copies of the model, and a quadratic loss whose
landscape along the gradient is known in closed form.
"""

import copy
import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnkit.experiments import mlp
from bnkit.experiments.ics import ics
from bnkit.experiments.landscape import landscape
from bnkit.experiments.noise import BatchNormNoise, NoisyBatchNorm1d, frozen_noise, noise_hook
from bnkit.experiments.probes import fixed_batch, preserved_state, weight_layers
from bnkit.experiments.santurkar import run_experiment
from bnkit.torch import BatchNorm1d


def tiny_net(batch_norm=True, noisy=False, seed=0):
    """A float64 8-6-5-4-3 sigmoid MLP from the book's builder."""
    hook = noise_hook(mean_range=0.5, scale_range=(1.0, 2.0), sample_std=0.3, seed=seed) if noisy else None
    return mlp((8, 6, 5, 4, 3), batch_norm=batch_norm, init_std=0.5, post_norm=hook, seed=seed).double()


def tiny_batch(rng, n=12, d=8, classes=3):
    x = torch.from_numpy(rng.standard_normal((n, d)))
    y = torch.from_numpy(rng.integers(0, classes, n))
    return x, y


def snapshot(model):
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def assert_unchanged(model, before, training):
    after = model.state_dict()
    assert before.keys() == after.keys()
    for k in before:
        torch.testing.assert_close(after[k], before[k], rtol=0, atol=0, msg=k)
    assert model.training is training


# --------------------------------------------------------------------------- #
# noisy BN
# --------------------------------------------------------------------------- #
def test_noisy_bn_with_zero_noise_equals_plain_bn(rng):
    x = torch.from_numpy(rng.standard_normal((16, 5)))
    plain = BatchNorm1d(5).double()
    noisy = NoisyBatchNorm1d(5, mean_range=0.0, scale_range=(1.0, 1.0), sample_std=0.0, seed=1).double()
    with torch.no_grad():
        for m in (plain, noisy.bn):
            m.weight.copy_(torch.linspace(0.5, 2.0, 5))
            m.bias.copy_(torch.linspace(-1.0, 1.0, 5))
    xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
    ya, yb = plain(xa), noisy(xb)
    torch.testing.assert_close(yb, ya, rtol=0, atol=0)
    g = torch.from_numpy(rng.standard_normal((16, 5)))
    ya.backward(g)
    yb.backward(g)
    torch.testing.assert_close(xb.grad, xa.grad, rtol=0, atol=0)
    torch.testing.assert_close(noisy.bn.weight.grad, plain.weight.grad, rtol=0, atol=0)
    torch.testing.assert_close(noisy.bn.running_var, plain.running_var, rtol=0, atol=0)


def test_noise_is_an_affine_map_per_unit_with_draws_in_range(rng):
    noise = BatchNormNoise(50, mean_range=0.7, scale_range=(1.5, 3.0), seed=3).double()
    y = torch.from_numpy(rng.standard_normal((40, 50)))
    out = noise(y)  # training mode: a fresh draw, then s * y + m
    m, s = noise.noise_mean, noise.noise_scale
    torch.testing.assert_close(out, y * s + m, rtol=0, atol=0)
    assert bool((m.abs() <= 0.7).all()) and bool((s >= 1.5).all() & (s <= 3.0).all())
    assert float(m.abs().max()) > 0.3 and float(s.max() - s.min()) > 0.5  # really random, not constant


def test_noise_changes_every_training_forward_and_not_when_frozen(rng):
    noise = BatchNormNoise(4, seed=0)
    y = torch.from_numpy(rng.standard_normal((8, 4))).float()
    a = noise(y)
    b = noise(y)
    assert not torch.equal(a, b)
    with frozen_noise(noise):
        c, d = noise(y), noise(y)
    torch.testing.assert_close(c, d, rtol=0, atol=0)
    torch.testing.assert_close(c, b, rtol=0, atol=0)  # frozen = the last draw


def test_per_sample_noise_is_fixed_within_a_frozen_step(rng):
    noise = BatchNormNoise(4, mean_range=0.0, scale_range=(1.0, 1.0), sample_std=1.0, seed=0)
    y = torch.zeros(8, 4)
    a = noise(y)
    assert float(a.std()) > 0  # zero input, non-zero output: the per-sample noise
    with frozen_noise(noise):
        torch.testing.assert_close(noise(y), a, rtol=0, atol=0)


def test_same_seed_same_noise_sequence(rng):
    y = torch.from_numpy(rng.standard_normal((8, 4))).float()
    n1, n2 = BatchNormNoise(4, seed=5), BatchNormNoise(4, seed=5)
    for _ in range(3):
        torch.testing.assert_close(n1(y), n2(y), rtol=0, atol=0)


@pytest.mark.parametrize("eval_mode, factor", [("mean", 2.0), ("none", 1.0)])
def test_noise_in_eval_mode_is_its_expectation_or_nothing(rng, eval_mode, factor):
    noise = BatchNormNoise(4, mean_range=1.0, scale_range=(1.0, 3.0), eval_mode=eval_mode).eval()
    y = torch.from_numpy(rng.standard_normal((8, 4))).float()
    torch.testing.assert_close(noise(y), factor * y)


def test_noise_rejects_bad_ranges():
    with pytest.raises(ValueError, match="scale_range"):
        BatchNormNoise(3, scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match="eval_mode"):
        BatchNormNoise(3, eval_mode="sample")


def test_noise_hook_puts_one_seeded_noise_module_after_each_bn():
    net = tiny_net(noisy=True)
    mods = [b.post_norm for b in net.blocks]
    assert all(isinstance(m, BatchNormNoise) for m in mods)
    assert len({float(m.noise_mean[0]) for m in mods}) == len(mods)  # independent generators


# --------------------------------------------------------------------------- #
# ICS by Definition 2.1
# --------------------------------------------------------------------------- #
def naive_ics(model, x, y, lr, layer_index):
    """Definition 2.1 the long way: copy the net, SGD-update the parameters below W_i in place, re-differentiate."""
    model = copy.deepcopy(model).train()
    params = list(model.named_parameters())
    wname = weight_layers(model)[layer_index][0] + ".weight"
    k = [n for n, _ in params].index(wname)
    loss = F.cross_entropy(model(x), y)
    grads = torch.autograd.grad(loss, [p for _, p in params])
    g = grads[k].clone()
    with torch.no_grad():
        for (_, p), gp in list(zip(params, grads))[:k]:
            p -= lr * gp
    with frozen_noise(model):  # the same noise draw as for G
        g2 = torch.autograd.grad(F.cross_entropy(model(x), y), dict(params)[wname])[0]
    diff = float((g - g2).norm())
    cos = float((g * g2).sum() / (g.norm() * g2.norm()))
    return diff, cos


@pytest.mark.parametrize("batch_norm, noisy", [(False, False), (True, False), (True, True)])
def test_ics_matches_a_naive_implementation(rng, batch_norm, noisy):
    net = tiny_net(batch_norm, noisy)
    x, y = tiny_batch(rng)
    net.train()
    with torch.no_grad():
        net(x)  # one forward: a noise draw (and running statistics away from their start)
    r = ics(net, x, y, lr=0.3)
    assert r.names == [n for n, _ in weight_layers(net)]
    for i in range(len(r.names)):
        with frozen_noise(net):
            diff, cos = naive_ics(net, x, y, 0.3, i)
        np.testing.assert_allclose(r.diff_norm[i], diff, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(r.cosine[i], cos, rtol=1e-10)
    assert (r.diff_norm[1:] > 0).all()


@pytest.mark.parametrize("batch_norm", [False, True])
def test_ics_of_the_first_layer_is_exactly_zero(rng, batch_norm):
    net = tiny_net(batch_norm)
    x, y = tiny_batch(rng)
    r = ics(net, x, y, lr=0.5, layers=[0])
    assert r.diff_norm[0] == 0.0
    np.testing.assert_allclose(r.cosine[0], 1.0, rtol=1e-14)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_ics_is_zero_when_the_lower_layers_do_not_move(rng, batch_norm):
    net = tiny_net(batch_norm)
    x, y = tiny_batch(rng)
    r = ics(net, x, y, lr=0.0)
    np.testing.assert_array_equal(r.diff_norm, 0.0)
    np.testing.assert_allclose(r.cosine, 1.0, rtol=1e-14)  # cos of identical gradients
    assert (r.grad_norm > 0).all()
    np.testing.assert_array_equal(r.relative, 0.0)


def test_ics_selects_layers_by_index_name_or_module(rng):
    net = tiny_net()
    x, y = tiny_batch(rng)
    a = ics(net, x, y, 0.2, layers=[1, -1])
    b = ics(net, x, y, 0.2, layers=["blocks.1.linear", net.head])
    assert a.names == b.names == ["blocks.1.linear", "head"]
    np.testing.assert_array_equal(a.diff_norm, b.diff_norm)


@pytest.mark.parametrize("training", [True, False])
def test_measurements_leave_the_model_untouched(rng, training):
    net = tiny_net(batch_norm=True, noisy=True)
    x, y = tiny_batch(rng)
    net.train(training)
    before = snapshot(net)
    ics(net, x, y, 0.5)
    landscape(net, x, y, [0.0, 0.1, 1.0])
    assert_unchanged(net, before, training)


def test_preserved_state_restores_buffers_and_mode(rng):
    net = tiny_net(batch_norm=True).eval()
    x, _ = tiny_batch(rng)
    before = snapshot(net)
    with preserved_state(net):
        assert net.training
        net(x)
        assert not torch.equal(net.blocks[0].norm.running_mean, before["blocks.0.norm.running_mean"])
    assert_unchanged(net, before, False)


# --------------------------------------------------------------------------- #
# the landscape along the gradient
# --------------------------------------------------------------------------- #
class Quadratic(nn.Module):
    """L(w) = w^T A w / 2 whatever the input: the landscape along -g is known in closed form."""

    def __init__(self, a, w):
        super().__init__()
        self.register_buffer("a", torch.as_tensor(a))
        self.w = nn.Parameter(torch.as_tensor(w).clone())

    def forward(self, x):
        return 0.5 * self.w @ self.a @ self.w


def quad_loss(out, y):
    return out


def test_landscape_of_a_quadratic_matches_the_closed_form(rng):
    q = rng.standard_normal((5, 5))
    a = q @ np.diag([0.5, 1.0, 2.0, 3.0, 7.0]) @ q.T  # symmetric positive definite, varied curvature
    w = rng.standard_normal(5)
    etas = np.array([0.0, 0.01, 0.05, 0.2])
    r = landscape(Quadratic(a, w), torch.zeros(1), torch.zeros(1), etas, loss_fn=quad_loss)
    g = a @ w
    expected_loss = [0.5 * (w - e * g) @ a @ (w - e * g) for e in etas]
    np.testing.assert_allclose(r.loss, expected_loss, rtol=1e-12)
    np.testing.assert_allclose(r.loss0, 0.5 * w @ a @ w, rtol=1e-12)
    np.testing.assert_allclose(r.grad_norm, np.linalg.norm(g), rtol=1e-12)
    np.testing.assert_allclose(r.grad_diff, etas * np.linalg.norm(a @ g), rtol=1e-12, atol=1e-15)
    # beta-smoothness along g: |A g| / |g|, the curvature seen in that direction
    np.testing.assert_allclose(r.beta, np.linalg.norm(a @ g) / np.linalg.norm(g), rtol=1e-12)


@pytest.mark.parametrize("c", [0.5, 4.0])
def test_beta_of_an_isotropic_quadratic_is_its_curvature(rng, c):
    r = landscape(Quadratic(c * np.eye(3), rng.standard_normal(3)), torch.zeros(1), torch.zeros(1),
                  [0.1, 0.3, 1.0], loss_fn=quad_loss)
    np.testing.assert_allclose(r.beta, c, rtol=1e-12)


@pytest.mark.parametrize("batch_norm", [False, True])
def test_landscape_at_eta_zero_is_the_plain_loss(rng, batch_norm):
    net = tiny_net(batch_norm).train()
    x, y = tiny_batch(rng)
    r = landscape(net, x, y, [0.0, 0.5])
    with preserved_state(net):
        loss = F.cross_entropy(net(x), y)
        grads = torch.autograd.grad(loss, list(net.parameters()))
    assert r.loss[0] == float(loss.detach())
    assert r.loss0 == float(loss.detach())
    assert r.grad_diff[0] == 0.0
    np.testing.assert_allclose(r.grad_norm, float(torch.cat([g.flatten() for g in grads]).norm()), rtol=1e-12)
    assert r.loss[1] != r.loss[0]


def test_landscape_rejects_negative_steps(rng):
    with pytest.raises(ValueError, match="non-negative"):
        landscape(tiny_net(), *tiny_batch(rng), [-0.1, 0.1])


# --------------------------------------------------------------------------- #
# experiment driver and command line
# --------------------------------------------------------------------------- #
def tiny_data(rng, n=120, d=8):
    return {"x_train": rng.random((n, d)).astype(np.float32), "y_train": rng.integers(0, 10, n),
            "x_test": rng.random((50, d)).astype(np.float32), "y_test": rng.integers(0, 10, 50)}


def test_fixed_batch_is_a_seeded_sample_not_the_first_rows(rng):
    data = {"x_train": torch.arange(100.0)[:, None], "y_train": torch.arange(100)}
    x, y = fixed_batch(data, 10, seed=0)
    x2, _ = fixed_batch(data, 10, seed=0)
    torch.testing.assert_close(x, x2)
    assert y.tolist() != list(range(10)) and len(set(y.tolist())) == 10


def test_run_experiment_logs_every_measurement(rng, tmp_path):
    data = tiny_data(rng)
    res = run_experiment(data, steps=4, depth=3, width=6, every=2, batch_size=10, measure_size=10,
                         variants=("plain", "BN", "noisy BN"), noise={"mean_range": 0.5}, out=tmp_path)
    for v, h in res.items():
        steps, diff = h.logged("ics/diff_norm")
        np.testing.assert_array_equal(steps, [0, 2, 4])
        assert diff.shape == (3, 3) and (diff > 0).all()
        assert h.logged("landscape/loss")[1].shape == (3, 5)
        assert h.logged("train_percentiles")[1].shape == (3, 3)
        assert h.config["ics_layers"] == ["blocks.1.linear", "blocks.2.linear", "head"]
        slug = v.lower().replace(" ", "-")
        assert (tmp_path / f"ics+landscape+percentiles-{slug}-depth3.json").is_file()
    again = run_experiment(data, steps=4, depth=3, width=6, every=2, batch_size=10, measure_size=10,
                           variants=("BN",), out=tmp_path, resume=True)
    np.testing.assert_array_equal(again["BN"].logged("ics/diff_norm")[1], res["BN"].logged("ics/diff_norm")[1])


def test_run_experiment_rejects_unknown_names(rng):
    with pytest.raises(ValueError, match="unknown"):
        run_experiment(tiny_data(rng), steps=1, variants=("dropout",))


@pytest.mark.parametrize("command", ["ics", "landscape"])
def test_cli_subcommands_run_end_to_end(tmp_path, capsys, command):
    from bnkit.experiments import cli

    assert command in cli.COMMANDS
    code = cli.main([command, "--steps", "4", "--every", "2", "--depth", "2",
                     "--out", str(tmp_path), "--no-progress"])
    assert code == 0
    out = capsys.readouterr().out
    summary = json.loads(out[:out.rindex("}") + 1])
    assert set(summary) >= {"plain", "BN"}
    assert list(tmp_path.glob("*.png")) and list(tmp_path.glob("*.json"))


def test_measuring_on_another_batch_size_does_not_change_the_training_noise(rng):
    y_train = torch.from_numpy(rng.standard_normal((8, 4))).float()
    y_other = torch.from_numpy(rng.standard_normal((30, 4))).float()
    a, b = BatchNormNoise(4, sample_std=1.0, seed=2), BatchNormNoise(4, sample_std=1.0, seed=2)
    for _ in range(3):
        out_a = a(y_train)
        with frozen_noise(b):
            b(y_other)  # a measurement on a bigger batch before the step...
        out_b = b(y_train)
        with frozen_noise(b):
            b(y_other)  # ... and after it
        torch.testing.assert_close(out_b, out_a, rtol=0, atol=0)


def test_ics_works_on_a_hand_built_sequential_model(rng):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(8, 6), NoisyBatchNorm1d(6, seed=1), nn.Sigmoid(),
                        nn.Linear(6, 5), BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 3)).double()
    x, y = tiny_batch(rng)
    net.train()
    with torch.no_grad():
        net(x)
    r = ics(net, x, y, lr=0.4)
    assert r.names == ["0", "3", "6"]
    for i in range(3):
        with frozen_noise(net):
            diff, cos = naive_ics(net, x, y, 0.4, i)
        np.testing.assert_allclose(r.diff_norm[i], diff, rtol=1e-10, atol=1e-14)
        np.testing.assert_allclose(r.cosine[i], cos, rtol=1e-10)
