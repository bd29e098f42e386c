"""bnkit.step_profile: the residual network's structure by count, the training step by its
loss, the operator categories by name, and the profile's split by what each network contains.
No assertion depends on how long anything takes."""

import pytest
import torch
from torch import nn

import bnkit.torch as bnt
from bnkit import step_profile


def _count(model, kind):
    return sum(isinstance(m, kind) for m in model.modules())


@pytest.mark.parametrize(("widths", "blocks"), [((16, 32, 64), 2), ((8, 16), 1), ((4,), 3)])
def test_resnet_has_one_norm_per_convolution(widths, blocks):
    model = step_profile.small_resnet(widths=widths, blocks_per_stage=blocks)
    convs = 1 + 2 * len(widths) * blocks + (len(widths) - 1)   # stem, blocks, shortcuts
    assert _count(model, nn.Conv2d) == convs
    assert _count(model, nn.BatchNorm2d) == convs
    y = model(torch.randn(2, 3, 16, 16))
    assert y.shape == (2, 10)


def test_norm_none_puts_identities_and_keeps_the_same_convolutions():
    with_bn = step_profile.small_resnet(seed=4)
    without = step_profile.small_resnet(norm=None, seed=4)
    ours = step_profile.small_resnet(norm=bnt.BatchNorm2d, seed=4)
    assert _count(without, nn.BatchNorm2d) == 0 and _count(without, nn.Identity) > 0
    assert _count(ours, bnt.BatchNorm2d) == _count(with_bn, nn.BatchNorm2d)
    convs = lambda m: [c.weight for c in m.modules() if isinstance(c, nn.Conv2d)]
    for a, b, c in zip(convs(with_bn), convs(without), convs(ours)):
        assert torch.equal(a, b) and torch.equal(a, c)


def test_bnkit_and_torch_networks_take_the_same_step():
    torch.manual_seed(0)
    x, target = torch.randn(8, 3, 8, 8, dtype=torch.float64), torch.randint(0, 10, (8,))
    losses = []
    for norm in (nn.BatchNorm2d, bnt.BatchNorm2d):
        model = step_profile.small_resnet(norm=norm, widths=(4, 8), blocks_per_stage=1).double()
        step = step_profile.training_step(model, x, target, lr=0.1)
        losses.append([step() for _ in range(3)])
    torch.testing.assert_close(torch.tensor(losses[0]), torch.tensor(losses[1]),
                               rtol=1e-10, atol=1e-12)
    assert losses[0][2] < losses[0][0]                  # it trains: the loss on the batch falls


def test_bad_arguments_are_refused():
    with pytest.raises(ValueError, match="stage"):
        step_profile.small_resnet(widths=())
    with pytest.raises(ValueError, match="steps"):
        step_profile.time_by_operator(lambda: None, steps=0)


@pytest.mark.parametrize(("name", "category"), [
    ("aten::mkldnn_convolution", "convolution"),
    ("aten::convolution_backward", "convolution"),
    ("autograd::engine::evaluate_function: ConvolutionBackward0", "convolution"),
    ("aten::native_batch_norm", "batch norm"),
    ("aten::native_batch_norm_backward", "batch norm"),
    ("NativeBatchNormBackward0", "batch norm"),
    ("aten::relu", "other"),
    ("aten::addmm", "other"),
])
def test_operator_category_by_name(name, category):
    assert step_profile.operator_category(name) == category


def test_profile_finds_batch_norm_only_in_the_network_that_has_it():
    x, target = torch.randn(4, 3, 8, 8), torch.randint(0, 10, (4,))
    split = {}
    for name, norm in (("bn", nn.BatchNorm2d), ("none", None)):
        model = step_profile.small_resnet(norm=norm, widths=(4, 8), blocks_per_stage=1)
        split[name] = step_profile.time_by_operator(
            step_profile.training_step(model, x, target), steps=1)
    assert split["none"]["batch norm"] == 0.0
    assert split["bn"]["batch norm"] > 0.0 and split["bn"]["convolution"] > 0.0
    for s in split.values():
        assert s["total"] == pytest.approx(sum(s[c] for c in step_profile.CATEGORIES))
