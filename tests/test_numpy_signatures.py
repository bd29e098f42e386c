"""bnkit.numpy's constructors take torch 2.13's arguments, and ``bias=False`` works like torch's.

The signatures are compared with :func:`inspect.signature` of torch's own classes:
every argument torch has (but ``device``, which NumPy has no use for) exists in
bnkit.numpy with the same kind (positional or keyword-only), the same position
among the positional ones and the same default. The one deliberate difference is
``dtype``'s default: torch's ``None`` is its default dtype, float32; NumPy has no
such setting, and bnkit.numpy's layers default to float64.
"""

import inspect

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
from bn_testing import TOL64, as_numpy, from_layout, random_batch, to_layout, torch_forward_backward

PAIRS = [
    pytest.param(bnp.BatchNorm, torch.nn.BatchNorm1d, id="BatchNorm-BatchNorm1d"),
    pytest.param(bnp.BatchNorm, torch.nn.BatchNorm2d, id="BatchNorm-BatchNorm2d"),
    pytest.param(bnp.BatchNorm, torch.nn.BatchNorm3d, id="BatchNorm-BatchNorm3d"),
    pytest.param(bnp.LayerNorm, torch.nn.LayerNorm, id="LayerNorm"),
    pytest.param(bnp.GroupNorm, torch.nn.GroupNorm, id="GroupNorm"),
]
NOT_IN_NUMPY = {"device"}
DEFAULT_DIFFERS = {"dtype"}   # torch: None (float32); bnkit.numpy: float64
POSITIONAL = (inspect.Parameter.POSITIONAL_ONLY, inspect.Parameter.POSITIONAL_OR_KEYWORD)


def _parameters(cls):
    return dict(inspect.signature(cls).parameters)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_every_torch_argument_exists_with_the_same_kind_and_default(ours, theirs):
    mine, torch_params = _parameters(ours), _parameters(theirs)
    for name, p in torch_params.items():
        if name in NOT_IN_NUMPY:
            continue
        assert name in mine, f"{ours.__name__} lacks torch's argument {name!r}"
        assert mine[name].kind == p.kind, name
        if name not in DEFAULT_DIFFERS:
            assert mine[name].default == p.default, name


@pytest.mark.parametrize(("ours", "theirs"), PAIRS)
def test_shared_positional_arguments_come_in_torchs_order(ours, theirs):
    mine, torch_params = _parameters(ours), _parameters(theirs)
    shared = set(mine) & set(torch_params)
    order = lambda params: [n for n, p in params.items() if p.kind in POSITIONAL and n in shared]
    assert order(mine) == order(torch_params)


@pytest.mark.parametrize(("ours", "theirs"), PAIRS[1:2] + PAIRS[4:])
def test_bias_is_keyword_only_like_torch(ours, theirs):
    assert _parameters(theirs)["bias"].kind == inspect.Parameter.KEYWORD_ONLY
    assert _parameters(ours)["bias"].kind == inspect.Parameter.KEYWORD_ONLY


def test_group_norm_positional_dtype_is_not_taken_for_bias():
    """GroupNorm(G, C, eps, affine, dtype): the fifth positional argument is the dtype."""
    layer = bnp.GroupNorm(2, 4, 1e-5, True, np.float32)
    assert layer.weight.dtype == np.float32 and layer.bias is not None


# --------------------------------------------------------------------------- bias=False


SHAPES_2D_4D = [pytest.param((8, 3), id="NC"), pytest.param((4, 3, 4, 5), id="NCHW")]
TORCH_CLASS = {2: torch.nn.BatchNorm1d, 4: torch.nn.BatchNorm2d}


@pytest.mark.parametrize("shape", SHAPES_2D_4D)
@pytest.mark.parametrize("channel_axis", [1, -1], ids=["channels_first", "channels_last"])
def test_weight_without_bias_matches_torch_over_training_then_eval(rng, shape, channel_axis):
    c = shape[1]
    reference = TORCH_CLASS[len(shape)](c, dtype=torch.float64, bias=False)
    layer = bnp.BatchNorm(c, channel_axis=channel_axis, bias=False)
    assert reference.bias is None and layer.bias is None and layer.weight is not None
    weight = rng.uniform(0.5, 2.0, c)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(weight))
    layer.weight = weight.copy()

    for training in (True, True, False):
        layer.train(training)
        reference.train(training)
        x, grad_y = random_batch(rng, shape), rng.standard_normal(shape)
        y_ref, gx_ref, (gw_ref,) = torch_forward_backward(reference, torch.tensor(x),
                                                          torch.tensor(grad_y), [reference.weight])
        y = layer(to_layout(x, channel_axis))
        gx = layer.backward(to_layout(grad_y, channel_axis))
        np.testing.assert_allclose(from_layout(y, channel_axis), as_numpy(y_ref), **TOL64)
        np.testing.assert_allclose(from_layout(gx, channel_axis), as_numpy(gx_ref), **TOL64)
        np.testing.assert_allclose(layer.grad_weight, as_numpy(gw_ref), **TOL64)
        assert layer.grad_bias is None
        np.testing.assert_allclose(layer.running_mean, as_numpy(reference.running_mean), **TOL64)
        np.testing.assert_allclose(layer.running_var, as_numpy(reference.running_var), **TOL64)
    assert layer.num_batches_tracked == int(reference.num_batches_tracked) == 2


def test_state_dict_without_bias_round_trips_with_torch(rng):
    reference = torch.nn.BatchNorm2d(3, dtype=torch.float64, bias=False)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, 3)))
        reference(torch.tensor(random_batch(rng, (4, 3, 2, 2))))
    layer = bnp.BatchNorm(3, bias=False)
    assert set(layer.state_dict()) == set(reference.state_dict())

    layer.load_state_dict(reference.state_dict())
    for key, value in reference.state_dict().items():
        np.testing.assert_array_equal(layer.state_dict()[key], as_numpy(value), err_msg=key)

    back = torch.nn.BatchNorm2d(3, dtype=torch.float64, bias=False)
    back.load_state_dict({k: torch.as_tensor(v) for k, v in layer.state_dict().items()},
                         strict=True)
    x = random_batch(rng, (4, 3, 2, 2))
    np.testing.assert_allclose(layer.eval()(x), as_numpy(back.eval()(torch.tensor(x))), **TOL64)


def test_state_dict_with_a_bias_is_refused_by_a_layer_without_one(rng):
    """As torch's strict load: the bias is an unexpected key, and nothing changes."""
    layer = bnp.BatchNorm(3, bias=False)
    layer(random_batch(rng, (4, 3)))
    before = layer.state_dict()
    with pytest.raises(KeyError, match=r"unexpected \['bias'\]"):
        layer.load_state_dict(torch.nn.BatchNorm1d(3, dtype=torch.float64).state_dict())
    for key, value in before.items():
        np.testing.assert_array_equal(layer.state_dict()[key], value, err_msg=key)


def test_without_affine_bias_false_changes_nothing(rng):
    """affine=False has neither parameter, whatever ``bias`` says (as in torch)."""
    layer = bnp.BatchNorm(3, affine=False, bias=False)
    reference = torch.nn.BatchNorm1d(3, affine=False, bias=False)
    assert layer.weight is None and layer.bias is None
    assert set(layer.state_dict()) == set(reference.state_dict())


def test_repr_names_the_bias_like_torch():
    assert "affine=True, bias=False, track_running_stats=True" in repr(bnp.BatchNorm(3, bias=False))
    assert "affine=True, bias=False, track_running_stats=True" in repr(
        torch.nn.BatchNorm1d(3, bias=False))


@pytest.mark.parametrize("which", ["layer", "group"])
def test_norm_layers_without_bias_match_torch(rng, which):
    if which == "layer":
        layer, reference = bnp.LayerNorm((3, 4), bias=False), torch.nn.LayerNorm(
            (3, 4), bias=False, dtype=torch.float64)
        shape = (5, 3, 4)
    else:
        layer, reference = bnp.GroupNorm(2, 4, bias=False), torch.nn.GroupNorm(
            2, 4, bias=False, dtype=torch.float64)
        shape = (5, 4, 3)
    assert set(layer.state_dict()) == set(reference.state_dict()) == {"weight"}
    weight = rng.uniform(0.5, 2.0, layer.weight.shape)
    with torch.no_grad():
        reference.weight.copy_(torch.tensor(weight))
    layer.load_state_dict(reference.state_dict())
    x, grad_y = random_batch(rng, shape), rng.standard_normal(shape)
    y_ref, gx_ref, (gw_ref,) = torch_forward_backward(reference, torch.tensor(x),
                                                      torch.tensor(grad_y), [reference.weight])
    np.testing.assert_allclose(layer(x), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(layer.backward(grad_y), as_numpy(gx_ref), **TOL64)
    np.testing.assert_allclose(layer.grad_weight, as_numpy(gw_ref), **TOL64)
    assert layer.grad_bias is None
