"""Batch norm over a batch of two (bnkit.experiments.batch_of_two): the Jacobian against autograd, the gradient probe
against a manual backward pass."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from bnkit.experiments import BatchStream
from bnkit.experiments.batch_of_two import batch_norm_jacobian, gradient_norms, two_example_jacobian_norm
from bnkit.experiments.small_batch import WATCHED_LAYERS, mnist_images, variant_net


@pytest.fixture(scope="module")
def tiny_data():
    """96 training and 40 test images of the embedded MNIST subset, as (n, 1, 28, 28)."""
    data = mnist_images()
    return {"x_train": data["x_train"][:96], "y_train": data["y_train"][:96],
            "x_test": data["x_test"][::25], "y_test": data["y_test"][::25]}


def _autograd_jacobian(x, eps):
    """(D, m, m) per-feature blocks of torch's own batch norm Jacobian, float64 (the oracle)."""
    x = torch.as_tensor(x, dtype=torch.float64)
    f = lambda z: F.batch_norm(z, None, None, training=True, eps=eps)   # noqa: E731
    full = torch.autograd.functional.jacobian(f, x)                     # (m, D, m, D)
    m, d = x.shape
    blocks = torch.stack([full[:, j, :, j] for j in range(d)]).numpy()
    off = full.clone()
    for j in range(d):
        off[:, j, :, j] = 0
    assert float(off.abs().max()) == 0.0                                  # features do not mix
    return blocks


@pytest.mark.parametrize("m", [2, 3, 5, 16])
@pytest.mark.parametrize("eps", [1e-5, 1e-2, 1.0])
def test_batch_norm_jacobian_matches_autograd(m, eps):
    x = np.random.default_rng(m).normal(0.3, 0.7, size=(m, 6))
    np.testing.assert_allclose(batch_norm_jacobian(x, eps), _autograd_jacobian(x, eps), rtol=1e-10, atol=1e-13)


def test_two_example_jacobian_closed_form():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(2, 50)) * np.logspace(-4, 1, 50)               # d from ~1e-4 to ~10
    eps = 1e-5
    d = (x[0] - x[1]) / 2
    blocks = _autograd_jacobian(x, eps)
    prefactor = eps / (2 * (d ** 2 + eps) ** 1.5)
    np.testing.assert_allclose(blocks, prefactor[:, None, None] * np.array([[1, -1], [-1, 1]]),
                               rtol=1e-8, atol=1e-15)
    np.testing.assert_allclose(two_example_jacobian_norm(d, eps), np.linalg.norm(blocks, 2, axis=(1, 2)),
                               rtol=1e-8)
    assert two_example_jacobian_norm(0.0, eps) == pytest.approx(eps ** -0.5)


def test_batch_norm_jacobian_keeps_m_minus_2_directions():
    """With eps -> 0 the Jacobian is a projection removing 1 and x-hat: rank m - 2."""
    rng = np.random.default_rng(1)
    for m in (2, 3, 4, 8):
        J = batch_norm_jacobian(rng.normal(size=(m, 1)), eps=1e-12)[0]
        singular = np.linalg.svd(J, compute_uv=False)
        assert int(np.sum(singular > 1e-4 * singular.max(initial=0) + 1e-9)) == m - 2


def test_batch_norm_jacobian_refuses_bad_input():
    with pytest.raises(ValueError, match="shape"):
        batch_norm_jacobian(np.zeros(4))
    with pytest.raises(ValueError, match="eps"):
        batch_norm_jacobian(np.zeros((2, 3)), eps=0.0)


@pytest.mark.parametrize(("variant", "batch_size"), [("batch", 2), ("batch", 4), ("batch_conv", 2), ("layer", 2)])
def test_gradient_norms_match_a_manual_backward_pass(tiny_data, variant, batch_size):
    got = gradient_norms(variant, batch_size, tiny_data, steps=1, seed=5)
    net = variant_net(variant, seed=5)
    idx = torch.from_numpy(BatchStream(len(tiny_data["x_train"]), batch_size, 5).indices(0))
    x = torch.as_tensor(tiny_data["x_train"])[idx]
    y = torch.as_tensor(tiny_data["y_train"])[idx]
    h = x
    for name, module in net.named_children():
        if name == "norm_fc":
            u = h.requires_grad_() if not h.requires_grad else h
            u.retain_grad()
            h = module(u)
            out = h
            out.retain_grad()
        else:
            h = module(h)
    F.cross_entropy(h, y).backward()
    for name in WATCHED_LAYERS:
        np.testing.assert_allclose(got[name], [float(getattr(net, name).weight.grad.norm())], rtol=1e-5)
    np.testing.assert_allclose(got["fc_input"], [float(u.grad.norm())], rtol=1e-5)
    np.testing.assert_allclose(got["fc_output"], [float(out.grad.norm())], rtol=1e-5)
    if variant == "batch_conv":
        assert got["fc_input"][0] == got["fc_output"][0]       # no normalization: the gradient passes unchanged


def test_gradient_norms_at_batch_two_follow_the_closed_form(tiny_data):
    """At m = 2 the gradient at the fc norm's input is J^T (gamma * g) per feature, J the closed form."""
    got = gradient_norms("batch", 2, tiny_data, steps=1, seed=2)
    net = variant_net("batch", seed=2)
    idx = torch.from_numpy(BatchStream(len(tiny_data["x_train"]), 2, 2).indices(0))
    x = torch.as_tensor(tiny_data["x_train"])[idx]
    y = torch.as_tensor(tiny_data["y_train"])[idx]
    below = nn.Sequential(*list(net.children())[:list(dict(net.named_children())).index("norm_fc")])
    u = below(x).detach().requires_grad_()
    out = net.norm_fc(u)
    out.retain_grad()
    F.cross_entropy(net.head(net.relu_fc(out)), y).backward()
    g = (out.grad * net.norm_fc.weight.detach()).double().numpy()          # dL/dx-hat, shape (2, 32)
    J = batch_norm_jacobian(u.detach().double().numpy(), eps=net.norm_fc.eps)  # (32, 2, 2)
    expected = np.einsum("jik,ij->kj", J, g)                                  # J^T g per feature, (2, 32)
    # float32 network against the float64 formula: features with a near tie (J ~ 1/sqrt(eps)) lose digits
    np.testing.assert_allclose(u.grad.double().numpy(), expected, rtol=1e-3, atol=1e-3 * np.abs(expected).max())
    np.testing.assert_allclose(got["fc_input"][0], np.linalg.norm(expected), rtol=1e-3)


def test_gradient_norms_refuses_bad_arguments(tiny_data):
    with pytest.raises(ValueError, match="steps"):
        gradient_norms("batch", 2, tiny_data, steps=0)
    with pytest.raises(ValueError, match="hidden fc layer"):
        gradient_norms("batch", 2, tiny_data, steps=1, hidden=0)
