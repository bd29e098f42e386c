"""Old checkpoints: state dicts saved before ``num_batches_tracked`` existed (version < 2).

The oracle is torch loading the very same state dict: torch's batch norm is
versioned (``_version = 2``) and fills the missing counter in on load.
"""

import collections

import pytest
import torch
from torch import nn

import bnkit.torch as bnt


def _model(bn_cls, conv_bn_cls):
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 3, 1), conv_bn_cls(3), nn.Flatten(), nn.Linear(12, 4),
                         bn_cls(4, momentum=None))


def _old(state_dict, version):
    """The state dict as torch < 0.4.1 saved it: no counters; batch norms at ``version``.

    ``version=None``: no metadata at all (a plain dict of tensors).
    """
    old = collections.OrderedDict((k, v.clone()) for k, v in state_dict.items()
                                  if not k.endswith("num_batches_tracked"))
    if version is not None:
        old._metadata = {prefix: dict(meta) for prefix, meta in state_dict._metadata.items()}
        for prefix, meta in old._metadata.items():
            if (f"{prefix}.running_mean" if prefix else "running_mean") in state_dict:
                meta["version"] = version
    return old


def test_batchnorm_classes_are_versioned_like_torch():
    for ours, theirs in ((bnt.BatchNorm1d, nn.BatchNorm1d), (bnt.BatchNorm2d, nn.BatchNorm2d),
                         (bnt.BatchNorm3d, nn.BatchNorm3d), (bnt.SyncBatchNorm, nn.SyncBatchNorm)):
        assert ours._version == theirs._version == 2
        sd = ours(3).state_dict()
        assert sd._metadata[""]["version"] == 2


@pytest.mark.parametrize("version", [None, 1], ids=["no-version", "version1"])
def test_old_state_dict_loads_strictly_inside_a_model_like_torch(rng, version):
    trained = _model(nn.BatchNorm1d, nn.BatchNorm2d)
    trained(torch.randn(5, 2, 2, 2))          # counters at 1, running statistics moved
    old = _old(trained.state_dict(), version)
    assert not any(k.endswith("num_batches_tracked") for k in old)

    ours, theirs = _model(bnt.BatchNorm1d, bnt.BatchNorm2d), _model(nn.BatchNorm1d,
                                                                     nn.BatchNorm2d)
    for model in (ours, theirs):
        model(torch.randn(6, 2, 2, 2))        # a counter of 1 before loading
        model(torch.randn(6, 2, 2, 2))        # ... then 2
        result = model.load_state_dict(old, strict=True)
        assert not result.missing_keys and not result.unexpected_keys
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    for key, value in theirs.state_dict().items():
        assert torch.equal(ours.state_dict()[key], value), key
    # torch keeps the layer's own counter (here 2); the loaded statistics are the old ones.
    assert int(ours[1].num_batches_tracked) == 2
    assert torch.equal(ours[4].running_mean, trained[4].running_mean)
    # The next step continues the cumulative average identically (momentum=None: 1/3).
    x = torch.randn(7, 2, 2, 2)
    torch.testing.assert_close(ours(x), theirs(x), rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(ours[4].running_var, theirs[4].running_var, rtol=1e-6, atol=1e-7)


def test_old_state_dict_gives_a_fresh_layer_a_zero_counter():
    old = _old(nn.BatchNorm2d(3).state_dict(), 1)
    for layer in (bnt.BatchNorm2d(3), nn.BatchNorm2d(3), bnt.SyncBatchNorm(3)):
        layer.load_state_dict(old, strict=True)
        assert layer.num_batches_tracked.dtype == torch.long
        assert int(layer.num_batches_tracked) == 0


def test_meta_layer_gets_a_real_zero_counter_like_torch():
    old = _old(nn.BatchNorm2d(3).state_dict(), 1)
    ours, theirs = bnt.BatchNorm2d(3, device="meta"), nn.BatchNorm2d(3, device="meta")
    for layer in (ours, theirs):
        layer.load_state_dict(old, strict=True, assign=True)
    assert ours.num_batches_tracked.device == theirs.num_batches_tracked.device
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 0


def test_current_state_dict_without_the_counter_still_fails_strictly():
    sd = nn.BatchNorm2d(3).state_dict()
    del sd["num_batches_tracked"]             # version 2 metadata kept: a broken checkpoint
    for layer in (bnt.BatchNorm2d(3), nn.BatchNorm2d(3)):
        with pytest.raises(RuntimeError, match="num_batches_tracked"):
            layer.load_state_dict(sd, strict=True)


def test_old_state_dict_without_running_stats_layer_needs_no_counter():
    old = _old(nn.BatchNorm1d(3, track_running_stats=False).state_dict(), 1)
    for layer in (bnt.BatchNorm1d(3, track_running_stats=False),
                  nn.BatchNorm1d(3, track_running_stats=False)):
        layer.load_state_dict(old, strict=True)
        assert layer.num_batches_tracked is None
