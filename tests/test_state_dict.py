"""State dicts: torch's keys exactly, and round trips torch <-> bnkit.torch <-> bnkit.numpy.

Each source layer is trained for a few steps first, so every entry (including
``num_batches_tracked``) holds a value that a broken copy would not reproduce.
"""

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import TOL64, as_numpy, random_batch

SHAPE = (6, 3, 4, 4)
OPTIONS = [
    pytest.param(dict(affine=affine, track_running_stats=track),
                 id=f"{'affine' if affine else 'no_affine'}-{'tracked' if track else 'untracked'}")
    for affine in (True, False) for track in (True, False)
]


def _trained_torch_layer(rng, options, num_steps=3):
    layer = torch.nn.BatchNorm2d(SHAPE[1], dtype=torch.float64, **options)
    if layer.affine:
        with torch.no_grad():
            layer.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, SHAPE[1])))
            layer.bias.copy_(torch.tensor(rng.normal(size=SHAPE[1])))
    with torch.no_grad():
        for _ in range(num_steps):
            layer(torch.tensor(random_batch(rng, SHAPE)))
    return layer


def _assert_same_state(got, expected):
    """Two state dicts (tensors or arrays) with the same keys and values."""
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_allclose(np.asarray(got[key]), np.asarray(value), rtol=0, atol=0,
                                   err_msg=key)


def _torch_state_as_numpy(layer):
    return {key: as_numpy(value) for key, value in layer.state_dict().items()}


@pytest.mark.parametrize("options", OPTIONS)
def test_state_dict_keys_match_torch(options):
    expected = torch.nn.BatchNorm2d(SHAPE[1], **options).state_dict().keys()
    assert set(bnt.BatchNorm2d(SHAPE[1], **options).state_dict()) == set(expected)
    assert set(bnp.BatchNorm(SHAPE[1], **options).state_dict()) == set(expected)


@pytest.mark.parametrize("options", OPTIONS)
def test_torch_state_dict_round_trips_through_bnkit_torch(rng, options):
    source = _trained_torch_layer(rng, options)
    module = bnt.BatchNorm2d(SHAPE[1], dtype=torch.float64, **options)
    module.load_state_dict(source.state_dict(), strict=True)
    _assert_same_state(_torch_state_as_numpy(module), _torch_state_as_numpy(source))

    back = torch.nn.BatchNorm2d(SHAPE[1], dtype=torch.float64, **options)
    back.load_state_dict(module.state_dict(), strict=True)
    _assert_same_state(_torch_state_as_numpy(back), _torch_state_as_numpy(source))

    # The loaded module computes what the source computes, in eval mode.
    x = torch.tensor(random_batch(rng, SHAPE))
    torch.testing.assert_close(module.eval()(x), source.eval()(x), **TOL64)


@pytest.mark.parametrize("options", OPTIONS)
@pytest.mark.parametrize("as_arrays", [True, False], ids=["numpy_arrays", "torch_tensors"])
def test_torch_state_dict_loads_into_numpy_layer(rng, options, as_arrays):
    source = _trained_torch_layer(rng, options)
    state = _torch_state_as_numpy(source) if as_arrays else source.state_dict()
    layer = bnp.BatchNorm(SHAPE[1], **options)
    layer.load_state_dict(state)

    _assert_same_state(layer.state_dict(), _torch_state_as_numpy(source))
    if options["track_running_stats"]:
        assert int(layer.num_batches_tracked) == 3
    x = random_batch(rng, SHAPE)
    layer.eval()
    np.testing.assert_allclose(layer(x), as_numpy(source.eval()(torch.tensor(x))), **TOL64)


@pytest.mark.parametrize("options", OPTIONS)
def test_numpy_state_dict_loads_into_torch_strict(rng, options):
    layer = bnp.BatchNorm(SHAPE[1], **options)
    if layer.affine:
        layer.weight, layer.bias = rng.uniform(0.5, 2.0, SHAPE[1]), rng.normal(size=SHAPE[1])
    for _ in range(2):
        layer(random_batch(rng, SHAPE))
    state = layer.state_dict()

    for target in (torch.nn.BatchNorm2d(SHAPE[1], dtype=torch.float64, **options),
                   bnt.BatchNorm2d(SHAPE[1], dtype=torch.float64, **options)):
        target.load_state_dict({k: torch.as_tensor(v) for k, v in state.items()}, strict=True)
        _assert_same_state(_torch_state_as_numpy(target), state)
        if options["track_running_stats"]:
            assert int(target.num_batches_tracked) == 2
        x = random_batch(rng, SHAPE)
        layer.eval()
        np.testing.assert_allclose(layer(x), as_numpy(target.eval()(torch.tensor(x))), **TOL64)


def test_numpy_layer_loaded_from_torch_continues_the_cumulative_average(rng):
    """Training a layer loaded from a state dict continues exactly like the torch source."""
    source = _trained_torch_layer(rng, dict(momentum=None))
    layer = bnp.BatchNorm(SHAPE[1], momentum=None)
    layer.load_state_dict(_torch_state_as_numpy(source))
    x = random_batch(rng, SHAPE)
    with torch.no_grad():
        expected = source.train()(torch.tensor(x))
    np.testing.assert_allclose(layer(x), as_numpy(expected), **TOL64)
    # the cumulative average continues from num_batches_tracked = 3
    np.testing.assert_allclose(layer.running_var, as_numpy(source.running_var), **TOL64)
    assert int(layer.num_batches_tracked) == 4


def _mismatched_states(rng):
    """State dicts that do not fit a 3-channel affine, tracking layer."""
    good = _torch_state_as_numpy(_trained_torch_layer(rng, {}))
    wrong_width = _torch_state_as_numpy(torch.nn.BatchNorm2d(SHAPE[1] + 1, dtype=torch.float64))
    return {
        "missing-running_var": {k: v for k, v in good.items() if k != "running_var"},
        "unexpected-key": {**good, "extra": np.zeros(SHAPE[1])},
        "no-affine-state": _torch_state_as_numpy(
            _trained_torch_layer(rng, dict(affine=False))),
        "wrong-num_features": wrong_width,
    }


MISMATCHES = ["missing-running_var", "unexpected-key", "no-affine-state", "wrong-num_features"]


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_numpy_layer_refuses_a_mismatched_state_dict_and_changes_nothing(rng, mismatch):
    layer = bnp.BatchNorm(SHAPE[1])
    layer(random_batch(rng, SHAPE))
    before = layer.state_dict()
    with pytest.raises((KeyError, ValueError)):
        layer.load_state_dict(_mismatched_states(rng)[mismatch])
    _assert_same_state(layer.state_dict(), before)


@pytest.mark.parametrize("mismatch", MISMATCHES)
def test_torch_module_refuses_a_mismatched_state_dict_strictly(rng, mismatch):
    module = bnt.BatchNorm2d(SHAPE[1], dtype=torch.float64)
    state = {k: torch.as_tensor(v) for k, v in _mismatched_states(rng)[mismatch].items()}
    with pytest.raises(RuntimeError):
        module.load_state_dict(state, strict=True)
