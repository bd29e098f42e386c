"""bnkit.torch.recompute_batch_norm_stats (PreciseBN) against statistics of the concatenated data."""

import copy

import numpy as np
import pytest
import torch
from torch import nn

import bnkit.torch as bnt

BN1D = [pytest.param(nn.BatchNorm1d, id="torch_bn"), pytest.param(bnt.BatchNorm1d, id="bnkit_bn")]
BN2D = [pytest.param(nn.BatchNorm2d, id="torch_bn"), pytest.param(bnt.BatchNorm2d, id="bnkit_bn")]


def _mlp(bn_class, seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 5), bn_class(5), nn.ReLU(), nn.Dropout(0.5),
                         nn.Linear(5, 4), bn_class(4)).double()


def _batches(num, size, features=6, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [2.0 + 3.0 * torch.randn(size, features, generator=g, dtype=torch.float64)
            for _ in range(num)]


@pytest.mark.parametrize("bn_class", BN1D)
def test_pooled_equals_statistics_of_the_concatenated_data(bn_class):
    model = _mlp(bn_class).eval()
    batches = _batches(5, 16)
    bnt.recompute_batch_norm_stats(model, batches, aggregation="pooled")
    with torch.no_grad():
        hidden = model[0](torch.cat(batches))          # the first BatchNorm's input
    torch.testing.assert_close(model[1].running_mean, hidden.mean(0), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, hidden.var(0, correction=0),
                               rtol=1e-12, atol=1e-12)
    assert int(model[1].num_batches_tracked) == 5


@pytest.mark.parametrize("bn_class", BN1D)
def test_default_is_algorithm_2_on_the_concatenated_data(bn_class):
    model = _mlp(bn_class).eval()
    batches = _batches(5, 16)
    bnt.recompute_batch_norm_stats(model, batches)
    with torch.no_grad():
        hidden = model[0](torch.cat(batches)).view(5, 16, -1)   # (K, m, C)
    # Algorithm 2: E[x] = mean of the batch means; Var[x] = m/(m-1) * mean of the batch variances
    torch.testing.assert_close(model[1].running_mean, hidden.mean(1).mean(0), rtol=1e-12,
                               atol=1e-12)
    expected = 16 / 15 * hidden.var(1, correction=0).mean(0)
    torch.testing.assert_close(model[1].running_var, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bn_class", BN1D)
def test_default_equals_torch_cumulative_average(bn_class):
    """Every BatchNorm (also the second, fed by the first in training mode) matches momentum=None."""
    model = _mlp(bn_class).eval()
    batches = _batches(4, 8)
    oracle = copy.deepcopy(model)
    for bn in (oracle[1], oracle[5]):
        bn.momentum = None
        bn.reset_running_stats()
        bn.train()
    with torch.no_grad():
        for x in batches:
            oracle(x)
    bnt.recompute_batch_norm_stats(model, batches)
    for i in (1, 5):
        torch.testing.assert_close(model[i].running_mean, oracle[i].running_mean,
                                   rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(model[i].running_var, oracle[i].running_var,
                                   rtol=1e-12, atol=1e-12)
        assert int(model[i].num_batches_tracked) == int(oracle[i].num_batches_tracked) == 4


@pytest.mark.parametrize("bn_class", BN2D)
@pytest.mark.parametrize("aggregation", ["mean_of_variances", "pooled"])
def test_conv_statistics_over_batch_and_pixels(bn_class, aggregation):
    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(3, 4, 3), bn_class(4)).double().eval()
    g = torch.Generator().manual_seed(2)
    batches = [torch.randn(4, 3, 7, 6, generator=g, dtype=torch.float64) + 1.0 for _ in range(3)]
    bnt.recompute_batch_norm_stats(model, batches, aggregation=aggregation)
    with torch.no_grad():
        z = model[0](torch.cat(batches))                   # (12, 4, 5, 4)
    per_batch = z.view(3, 4, 4, 5, 4).transpose(1, 2).reshape(3, 4, -1)   # (K, C, m)
    m = per_batch.shape[-1]
    if aggregation == "pooled":
        expected = z.var((0, 2, 3), correction=0)
    else:
        expected = m / (m - 1) * per_batch.var(-1, correction=0).mean(0)
    torch.testing.assert_close(model[1].running_mean, z.mean((0, 2, 3)), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(model[1].running_var, expected, rtol=1e-12, atol=1e-12)


def test_pooled_exceeds_mean_of_biased_variances_by_variance_of_batch_means():
    model = nn.Sequential(nn.BatchNorm1d(3)).double().eval()
    batches = _batches(6, 10, features=3)
    pooled = bnt.recompute_batch_norm_stats(copy.deepcopy(model), batches,
                                            aggregation="pooled")[0].running_var
    default = bnt.recompute_batch_norm_stats(copy.deepcopy(model), batches)[0].running_var
    x = torch.stack(batches)                                    # (K, m, C)
    mean_biased = x.var(1, correction=0).mean(0)
    var_of_means = x.mean(1).var(0, correction=0)
    torch.testing.assert_close(pooled, mean_biased + var_of_means, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(default, mean_biased * 10 / 9, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("bn_class", BN1D)
def test_modes_are_restored(bn_class):
    model = _mlp(bn_class)
    model.eval()
    model[3].train()                         # a mixed state: only the dropout in training mode
    model[5].train()
    before = [m.training for m in model.modules()]
    bnt.recompute_batch_norm_stats(model, _batches(2, 8))
    assert [m.training for m in model.modules()] == before
    model.train()
    bnt.recompute_batch_norm_stats(model, _batches(2, 8))
    assert all(m.training for m in model.modules())


@pytest.mark.parametrize("bn_class", BN1D)
def test_weights_are_frozen_and_no_gradient_is_made(bn_class):
    model = _mlp(bn_class).train()
    params = {k: v.detach().clone() for k, v in model.named_parameters()}
    bnt.recompute_batch_norm_stats(model, _batches(3, 8))
    for k, v in model.named_parameters():
        assert torch.equal(v, params[k]), k
        assert v.grad is None, k


def test_dropout_is_off_during_recomputation():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), nn.Dropout(0.9), nn.BatchNorm1d(5)).double().train()
    batches = _batches(3, 16)
    bnt.recompute_batch_norm_stats(model, batches, aggregation="pooled")
    with torch.no_grad():
        hidden = model[0](torch.cat(batches))
    torch.testing.assert_close(model[2].running_mean, hidden.mean(0), rtol=1e-12, atol=1e-12)


def test_float32_model_and_input_target_pairs():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5), bnt.BatchNorm1d(5)).eval()
    xs = [b.float() for b in _batches(4, 32)]
    pairs = [(x, torch.zeros(len(x), dtype=torch.long)) for x in xs]
    bnt.recompute_batch_norm_stats(model, pairs, aggregation="pooled")
    with torch.no_grad():
        hidden = model[0](torch.cat(xs)).double()
    assert model[1].running_var.dtype == torch.float32
    torch.testing.assert_close(model[1].running_mean.double(), hidden.mean(0), rtol=1e-5,
                               atol=1e-5)
    torch.testing.assert_close(model[1].running_var.double(), hidden.var(0, correction=0),
                               rtol=1e-5, atol=1e-5)


def test_num_batches_takes_the_first_batches_of_an_iterator():
    model = nn.Sequential(nn.BatchNorm1d(6)).double().eval()
    batches = _batches(5, 8)
    bnt.recompute_batch_norm_stats(model, iter(batches), num_batches=2, aggregation="pooled")
    torch.testing.assert_close(model[0].running_mean, torch.cat(batches[:2]).mean(0),
                               rtol=1e-12, atol=1e-12)
    assert int(model[0].num_batches_tracked) == 2


def test_layers_without_running_statistics_or_off_the_path_are_left_alone():
    model = nn.ModuleDict({"used": nn.BatchNorm1d(6), "unused": nn.BatchNorm1d(6),
                           "no_stats": nn.BatchNorm1d(6, track_running_stats=False)}).double()
    model.forward = lambda x: model["no_stats"](model["used"](x))
    bnt.recompute_batch_norm_stats(model, _batches(2, 8))
    assert int(model["used"].num_batches_tracked) == 2
    assert int(model["unused"].num_batches_tracked) == 0
    assert torch.equal(model["unused"].running_var, torch.ones(6, dtype=torch.float64))
    assert model["no_stats"].running_mean is None


# ----------------------------------------------------------------------------- refusals
def test_refuses_a_model_without_batch_norm():
    with pytest.raises(ValueError, match="no BatchNorm layer with running statistics"):
        bnt.recompute_batch_norm_stats(nn.Sequential(nn.Linear(2, 2), nn.LayerNorm(2)),
                                       [torch.randn(4, 2)])


def test_refuses_unknown_aggregation_and_bad_num_batches():
    model = nn.BatchNorm1d(2)
    with pytest.raises(ValueError, match="aggregation must be one of"):
        bnt.recompute_batch_norm_stats(model, [torch.randn(4, 2)], aggregation="median")
    with pytest.raises(ValueError, match="num_batches must be a positive int"):
        bnt.recompute_batch_norm_stats(model, [torch.randn(4, 2)], num_batches=0)
    with pytest.raises(TypeError, match="model must be an nn.Module"):
        bnt.recompute_batch_norm_stats(lambda x: x, [torch.randn(4, 2)])


@pytest.mark.parametrize("bn_class", BN1D)
def test_errors_restore_statistics_and_modes(bn_class):
    model = _mlp(bn_class).eval()
    with torch.no_grad():
        model[1].running_mean.fill_(0.5)
    state = {k: v.clone() for k, v in model.state_dict().items()}
    cases = [([], "no batch"),
             (_batches(2, 8), "fewer than num_batches=3"),
             (_batches(1, 8) + [torch.randn(1, 6, dtype=torch.float64)],
              "Expected more than 1 value per channel")]
    for batches, message in cases:
        with pytest.raises(ValueError, match=message):
            bnt.recompute_batch_norm_stats(model, batches, num_batches=3 if "fewer" in message
                                           else None)
        for k, v in model.state_dict().items():
            assert torch.equal(v, state[k]), (message, k)
        assert not any(m.training for m in model.modules())
        assert all(not m._forward_pre_hooks for m in model.modules())


def test_aggregations_differ_for_correlated_values():
    """Values of one batch that share an offset (pixels of one image): pooled sees it, Alg. 2 does not."""
    rng = np.random.default_rng(0)
    batches = [torch.from_numpy(rng.normal(size=(1, 1, 1, 1)) * 3.0 + rng.normal(size=(2, 1, 8, 8)))
               for _ in range(50)]
    model = nn.Sequential(nn.BatchNorm2d(1)).double()
    pooled = bnt.recompute_batch_norm_stats(copy.deepcopy(model), batches,
                                            aggregation="pooled")[0].running_var
    default = bnt.recompute_batch_norm_stats(copy.deepcopy(model), batches)[0].running_var
    x = torch.stack(batches)
    assert float(pooled) > 2 * float(default)           # true variance 1 + 9 vs about 1
    torch.testing.assert_close(pooled, x.var(correction=0).view(1), rtol=1e-12, atol=1e-12)
