"""bnkit.torch as a drop-in for torch 2.13: constructor signatures, ``bias=False``, empty batches.

The oracle is torch's own layers: ``inspect.signature`` of its classes, its
state dicts, and its outputs, gradients, running statistics and counters on the
same inputs (float64, so they agree to round-off).
"""

import inspect

import pytest
import torch
from torch import nn

import bnkit.torch as bnt
from bn_testing import TOL64, random_batch, torch_forward_backward

# bnkit class -> torch class with the same name.
PAIRS = [(getattr(bnt, name), getattr(nn, name)) for name in
         ("BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "SyncBatchNorm", "LayerNorm", "GroupNorm")]
BATCHNORMS = {2: (bnt.BatchNorm1d, nn.BatchNorm1d), 3: (bnt.BatchNorm1d, nn.BatchNorm1d),
              4: (bnt.BatchNorm2d, nn.BatchNorm2d), 5: (bnt.BatchNorm3d, nn.BatchNorm3d)}


def _parameters(cls):
    """(name, kind, default) of every constructor parameter: annotations aside, the call API."""
    return [(p.name, p.kind, p.default) for p in inspect.signature(cls).parameters.values()]


@pytest.mark.parametrize(("ours", "theirs"), PAIRS, ids=[t.__name__ for _, t in PAIRS])
def test_constructor_signature_is_torchs(ours, theirs):
    assert _parameters(ours) == _parameters(theirs)


def test_convert_sync_batchnorm_classmethod_signature_is_torchs():
    ours = inspect.signature(bnt.SyncBatchNorm.convert_sync_batchnorm)
    theirs = inspect.signature(nn.SyncBatchNorm.convert_sync_batchnorm)
    assert [(p.name, p.kind, p.default) for p in ours.parameters.values()] == \
        [(p.name, p.kind, p.default) for p in theirs.parameters.values()]


# --------------------------------------------------------------------------- bias=False


@pytest.mark.parametrize("cls_name", ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d",
                                      "SyncBatchNorm"])
def test_bias_false_has_a_weight_and_no_bias_like_torch(cls_name):
    ours, theirs = getattr(bnt, cls_name)(4, bias=False), getattr(nn, cls_name)(4, bias=False)
    assert ours.bias is None and ours.weight is not None
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in theirs.named_parameters()]
    assert list(ours.state_dict()) == list(theirs.state_dict())
    assert "bias" not in ours.state_dict()
    assert repr(ours) == repr(theirs)
    # A state dict without a bias loads strictly, both ways; one with a bias does not.
    ours.load_state_dict(theirs.state_dict(), strict=True)
    theirs.load_state_dict(ours.state_dict(), strict=True)
    with pytest.raises(RuntimeError, match="bias"):
        ours.load_state_dict(getattr(nn, cls_name)(4).state_dict(), strict=True)
    ours.reset_parameters()
    assert torch.equal(ours.weight, torch.ones(4))


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_bias_false_trains_like_torch(rng, momentum):
    shape = (6, 3, 4, 2)
    options = dict(momentum=momentum, dtype=torch.float64, bias=False)
    ours, theirs = bnt.BatchNorm2d(3, **options), nn.BatchNorm2d(3, **options)
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(torch.tensor([0.5, 2.0, -1.0]))
    for training in (True, True, False):
        ours.train(training)
        theirs.train(training)
        x = torch.tensor(random_batch(rng, shape))
        g = torch.tensor(rng.standard_normal(shape))
        y, gx, (gw,) = torch_forward_backward(ours, x, g, [ours.weight])
        y_ref, gx_ref, (gw_ref,) = torch_forward_backward(theirs, x, g, [theirs.weight])
        for got, want in ((y, y_ref), (gx, gx_ref), (gw, gw_ref)):
            torch.testing.assert_close(got, want, **TOL64)
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, **TOL64)


def test_functional_with_weight_and_no_bias_matches_torch(rng):
    x = torch.tensor(random_batch(rng, (5, 3, 4)))
    w = torch.tensor([1.5, -0.5, 2.0], dtype=torch.float64, requires_grad=True)
    g = torch.tensor(rng.standard_normal(x.shape))
    got = torch_forward_backward(lambda t: bnt.batch_norm(t, None, None, w, None, True), x, g, [w])
    want = torch_forward_backward(lambda t: nn.functional.batch_norm(t, None, None, w, None, True),
                                  x, g, [w])
    for a, b in zip((got[0], got[1], *got[2]), (want[0], want[1], *want[2]), strict=True):
        torch.testing.assert_close(a, b, **TOL64)


def test_convert_sync_batchnorm_keeps_bias_false():
    net = nn.Sequential(nn.Linear(2, 3), nn.BatchNorm1d(3, bias=False), bnt.BatchNorm1d(3))
    for convert in (bnt.convert_sync_batchnorm, bnt.SyncBatchNorm.convert_sync_batchnorm):
        converted = convert(nn.Sequential(*[m for m in net]))
        assert converted[1].bias is None and converted[1].weight is net[1].weight
        assert converted[2].bias is net[2].bias
        assert list(converted.state_dict()) == list(net.state_dict())


# --------------------------------------------------------------------------- empty batches

EMPTY_SHAPES = [(0, 3), (0, 3, 5), (0, 3, 4, 4), (2, 3, 0, 4), (0, 3, 2, 2, 2)]


def _pair(ndim, **options):
    ours, theirs = BATCHNORMS[ndim]
    return (ours(3, dtype=torch.float64, **options), theirs(3, dtype=torch.float64, **options))


def _assert_same_state(ours, theirs):
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        torch.testing.assert_close(ours.state_dict()[key], value, **TOL64)


def _step(layer, x, g):
    """Forward and backward; the output and the gradients of x, weight and bias."""
    x = x.detach().clone().requires_grad_(True)
    y = layer(x)
    y.backward(g)
    grads = [None if p is None else p.grad.clone() for p in (layer.weight, layer.bias)]
    for p in (layer.weight, layer.bias):
        if p is not None:
            p.grad = None
    return y.detach(), x.grad, grads


@pytest.mark.parametrize("shape", EMPTY_SHAPES, ids=str)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_empty_batch_in_training_matches_torch(rng, shape, momentum):
    """Empty output, running statistics kept, counter +1, zero parameter gradients.

    With ``momentum=None`` torch still counts the empty batch, so the next batch's
    factor is 1/3 rather than 1/2: the comparison on the batch after it checks that too.
    """
    ours, theirs = _pair(len(shape), momentum=momentum)
    full = (4,) + shape[1:2] + tuple(max(d, 2) for d in shape[2:])
    for s in (full, shape, full):
        x, g = torch.tensor(random_batch(rng, s)), torch.tensor(rng.standard_normal(s))
        before = {k: v.clone() for k, v in ours.state_dict().items()}
        y, gx, (gw, gb) = _step(ours, x, g)
        y_ref, gx_ref, (gw_ref, gb_ref) = _step(theirs, x, g)
        assert y.shape == y_ref.shape == x.shape and y.dtype == y_ref.dtype
        assert gx.shape == gx_ref.shape == x.shape
        for got, want in ((y, y_ref), (gx, gx_ref), (gw, gw_ref), (gb, gb_ref)):
            torch.testing.assert_close(got, want, **TOL64)
        _assert_same_state(ours, theirs)
        if s == shape:
            assert torch.equal(gw, torch.zeros(3, dtype=torch.float64))
            for key in ("running_mean", "running_var"):
                assert torch.equal(ours.state_dict()[key], before[key])
            assert int(ours.num_batches_tracked) == int(before["num_batches_tracked"]) + 1
    assert int(ours.num_batches_tracked) == 3


@pytest.mark.parametrize("track_running_stats", [True, False], ids=["tracked", "untracked"])
def test_empty_batch_in_eval_matches_torch(rng, track_running_stats):
    ours, theirs = _pair(4, track_running_stats=track_running_stats)
    x = torch.tensor(random_batch(rng, (5, 3, 2, 2)))
    ours(x), theirs(x)
    ours.eval(), theirs.eval()
    empty = torch.zeros(0, 3, 2, 2, dtype=torch.float64)
    y, gx, grads = _step(ours, empty, empty)
    y_ref, gx_ref, grads_ref = _step(theirs, empty, empty)
    assert y.shape == y_ref.shape == empty.shape
    assert gx.shape == gx_ref.shape == empty.shape
    for got, want in zip(grads, grads_ref, strict=True):
        torch.testing.assert_close(got, want, **TOL64)
    _assert_same_state(ours, theirs)


def test_functional_empty_batch_leaves_running_statistics(rng):
    stats = [torch.tensor(rng.normal(size=3)), torch.tensor(rng.uniform(0.5, 2, 3))]
    ref_stats = [s.clone() for s in stats]
    before = [s.clone() for s in stats]
    x = torch.zeros(0, 3, 4)
    x = x.double()
    y = bnt.batch_norm(x, *stats, training=True)
    y_ref = nn.functional.batch_norm(x, *ref_stats, training=True)
    assert y.shape == y_ref.shape == x.shape
    for got, want, was in zip(stats, ref_stats, before, strict=True):
        assert torch.equal(got, want) and torch.equal(got, was)


def test_empty_channels_last_batch_keeps_its_memory_format():
    x = torch.zeros(0, 3, 4, 4).to(memory_format=torch.channels_last)
    y, y_ref = bnt.BatchNorm2d(3)(x), nn.BatchNorm2d(3)(x)
    assert y.shape == y_ref.shape
    assert y.is_contiguous(memory_format=torch.channels_last)


def test_one_value_per_channel_is_still_refused_and_not_counted():
    """torch counts the batch, then raises; bnkit raises first and counts nothing."""
    ours, theirs = bnt.BatchNorm1d(3), nn.BatchNorm1d(3)
    for layer in (ours, theirs):
        with pytest.raises(ValueError, match="Expected more than 1 value per channel"):
            layer(torch.randn(1, 3))
    assert int(theirs.num_batches_tracked) == 1 and int(ours.num_batches_tracked) == 0
