"""bnkit.torch.fold_batch_norm: the folded layer against layer-then-BatchNorm (torch as oracle)."""

import copy

import pytest
import torch
from torch import nn

import bnkit.torch as bnt

# (layer factory, BatchNorm classes (bnkit, torch), input shape), one per foldable layer type.
LAYERS = [
    pytest.param(lambda bias: nn.Linear(5, 4, bias=bias), (bnt.BatchNorm1d, nn.BatchNorm1d),
                 (7, 5), id="Linear"),
    pytest.param(lambda bias: nn.Conv1d(3, 4, 3, padding=1, bias=bias),
                 (bnt.BatchNorm1d, nn.BatchNorm1d), (5, 3, 9), id="Conv1d"),
    pytest.param(lambda bias: nn.Conv2d(3, 4, 3, stride=2, padding=1, bias=bias),
                 (bnt.BatchNorm2d, nn.BatchNorm2d), (5, 3, 8, 7), id="Conv2d"),
    pytest.param(lambda bias: nn.Conv2d(4, 6, 3, groups=2, padding_mode="reflect", padding=1,
                                        bias=bias),
                 (bnt.BatchNorm2d, nn.BatchNorm2d), (3, 4, 6, 6), id="Conv2d-groups-reflect"),
    pytest.param(lambda bias: nn.Conv3d(2, 4, 2, bias=bias), (bnt.BatchNorm3d, nn.BatchNorm3d),
                 (3, 2, 4, 5, 4), id="Conv3d"),
]
BIAS = [pytest.param(True, id="bias"), pytest.param(False, id="no_bias")]
FLAVOURS = [pytest.param(0, id="bnkit_bn"), pytest.param(1, id="torch_bn")]


def _trained_pair(make_layer, bn_classes, flavour, shape, bias, dtype=torch.float64,
                  affine=True, seed=0):
    """A random layer and a BatchNorm with non-trivial running statistics, both in eval mode."""
    torch.manual_seed(seed)
    layer = make_layer(bias).to(dtype)
    channels = layer.out_features if isinstance(layer, nn.Linear) else layer.out_channels
    bn = bn_classes[flavour](channels, affine=affine, dtype=dtype)
    if affine:
        with torch.no_grad():
            bn.weight.uniform_(0.5, 2.0)
            bn.bias.uniform_(-1.0, 1.0)
    bn.train()
    with torch.no_grad():
        for _ in range(3):
            bn(layer(3.0 + 2.0 * torch.randn(shape, dtype=dtype)))
    return layer.eval(), bn.eval()


def _snapshot(*modules):
    return [{k: v.clone() for k, v in m.state_dict().items()} for m in modules]


@pytest.mark.parametrize("make_layer, bn_classes, shape", LAYERS)
@pytest.mark.parametrize("bias", BIAS)
@pytest.mark.parametrize("flavour", FLAVOURS)
def test_folded_layer_equals_layer_then_batch_norm_in_float64(make_layer, bn_classes, shape,
                                                              bias, flavour):
    layer, bn = _trained_pair(make_layer, bn_classes, flavour, shape, bias)
    folded = bnt.fold_batch_norm(layer, bn)
    x = torch.randn(shape, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(layer(x)), rtol=1e-12, atol=1e-12)
    assert type(folded) is type(layer)
    assert folded.bias is not None and folded.weight.dtype == torch.float64


@pytest.mark.parametrize("make_layer, bn_classes, shape", LAYERS)
def test_folded_layer_agrees_within_float32_rounding(make_layer, bn_classes, shape):
    layer, bn = _trained_pair(make_layer, bn_classes, 1, shape, True, dtype=torch.float32)
    folded = bnt.fold_batch_norm(layer, bn)
    x = torch.randn(shape)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(layer(x)), rtol=1e-5, atol=1e-5)
    assert folded.weight.dtype == torch.float32


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_batch_norm_without_affine_folds(flavour):
    layer, bn = _trained_pair(LAYERS[2].values[0], LAYERS[2].values[1], flavour,
                              LAYERS[2].values[2], False, affine=False)
    folded = bnt.fold_batch_norm(layer, bn)
    x = torch.randn(LAYERS[2].values[2], dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), bn(layer(x)), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", BIAS)
def test_inputs_are_left_untouched(bias):
    layer, bn = _trained_pair(LAYERS[2].values[0], LAYERS[2].values[1], 0,
                              LAYERS[2].values[2], bias)
    before = _snapshot(layer, bn)
    folded = bnt.fold_batch_norm(layer, bn)
    after = _snapshot(layer, bn)
    for b, a in zip(before, after):
        assert b.keys() == a.keys()
        for k in b:
            assert torch.equal(b[k], a[k]), k
    assert (layer.bias is None) == (not bias)              # no bias was added to the original
    assert folded.weight.data_ptr() != layer.weight.data_ptr()
    assert not bn.training and not layer.training


def test_requires_grad_and_mode_are_kept():
    layer, bn = _trained_pair(LAYERS[0].values[0], LAYERS[0].values[1], 1, (7, 5), False)
    layer.train()
    layer.weight.requires_grad_(False)
    folded = bnt.fold_batch_norm(layer, bn)
    assert folded.training
    assert not folded.weight.requires_grad and not folded.bias.requires_grad


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_refuses_batch_norm_in_training_mode(flavour):
    layer, bn = _trained_pair(LAYERS[0].values[0], LAYERS[0].values[1], flavour, (7, 5), True)
    bn.train()
    with pytest.raises(ValueError, match="training mode"):
        bnt.fold_batch_norm(layer, bn)


@pytest.mark.parametrize("bn_class", [bnt.BatchNorm1d, nn.BatchNorm1d])
def test_refuses_batch_norm_without_running_statistics(bn_class):
    layer = nn.Linear(5, 4)
    bn = bn_class(4, track_running_stats=False).eval()
    with pytest.raises(ValueError, match="no running statistics"):
        bnt.fold_batch_norm(layer, bn)


@pytest.mark.parametrize("bn_class", [bnt.BatchNorm2d, nn.BatchNorm2d])
def test_refuses_mismatched_channel_counts(bn_class):
    with pytest.raises(ValueError, match=r"num_features=5 but the Conv2d has 4 output channels"):
        bnt.fold_batch_norm(nn.Conv2d(3, 4, 3), bn_class(5).eval())


@pytest.mark.parametrize("layer", [nn.ConvTranspose2d(3, 4, 3), nn.LayerNorm(4),
                                   nn.Sequential(nn.Linear(3, 4))],
                         ids=["ConvTranspose2d", "LayerNorm", "Sequential"])
def test_refuses_unsupported_layers(layer):
    with pytest.raises(TypeError, match="folds into nn.Linear"):
        bnt.fold_batch_norm(layer, nn.BatchNorm2d(4).eval())


@pytest.mark.parametrize("norm", [nn.LayerNorm(4), nn.GroupNorm(2, 4), nn.InstanceNorm2d(4)],
                         ids=["LayerNorm", "GroupNorm", "InstanceNorm2d"])
def test_refuses_other_normalizations(norm):
    with pytest.raises(TypeError, match="bn must be a BatchNorm"):
        bnt.fold_batch_norm(nn.Conv2d(3, 4, 3), norm.eval())


def test_folding_a_network_keeps_its_eval_outputs():
    torch.manual_seed(1)
    net = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.Conv2d(8, 4, 3, bias=False), bnt.BatchNorm2d(4), nn.ReLU()).double()
    with torch.no_grad():
        for _ in range(3):
            net(torch.randn(8, 3, 10, 10, dtype=torch.float64))
    net.eval()
    folded = nn.Sequential(bnt.fold_batch_norm(net[0], net[1]), nn.ReLU(),
                           bnt.fold_batch_norm(net[3], net[4]), nn.ReLU())
    reference = copy.deepcopy(net)
    x = torch.randn(2, 3, 10, 10, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(folded(x), reference(x), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bias", BIAS)
def test_agrees_with_torch_fusion_utilities(bias):
    """torch.nn.utils.fusion does the same fold for Conv2d and Linear."""
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    for index, fuse in ((2, fuse_conv_bn_eval), (0, fuse_linear_bn_eval)):
        make_layer, bn_classes, shape = LAYERS[index].values
        layer, bn = _trained_pair(make_layer, bn_classes, 1, shape, bias)
        ours, theirs = bnt.fold_batch_norm(layer, bn), fuse(layer, bn)
        torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-12, atol=1e-12)
