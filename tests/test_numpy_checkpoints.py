"""Old checkpoints and dtypes: bnkit.numpy's ``load_state_dict`` against torch's.

torch's batch norm is versioned (``_NormBase._version = 2``; version 2 added
``num_batches_tracked``). Loading a state dict whose metadata says version < 2, or
that has no metadata at all, fills a missing ``num_batches_tracked`` with the
target layer's own counter; a version-2 state dict without it is refused. The
NumPy layer follows the same rule, and copies the values into its own dtypes.
"""

import io
from collections import OrderedDict

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
from bn_testing import TOL64, as_numpy, random_batch

SHAPE = (6, 3, 4, 4)
C = SHAPE[1]


def _trained_torch(rng, steps, **options):
    layer = torch.nn.BatchNorm2d(C, dtype=torch.float64, **options)
    with torch.no_grad():
        if layer.affine:
            layer.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, C)))
            layer.bias.copy_(torch.tensor(rng.normal(size=C)))
        for _ in range(steps):
            layer(torch.tensor(random_batch(rng, SHAPE)))
    return layer


def _old_checkpoint(state, how):
    """``state`` as a checkpoint saved before ``num_batches_tracked`` existed."""
    metadata = {k: dict(v) for k, v in state._metadata.items()}
    state = OrderedDict(state)
    state._metadata = metadata
    del state["num_batches_tracked"]
    if how == "version1":                    # what torch < 0.4.1 wrote, through torch.save
        state._metadata[""]["version"] = 1
        buffer = io.BytesIO()
        torch.save(state, buffer)
        buffer.seek(0)
        return torch.load(buffer)
    return dict(state)                       # "no_metadata": a plain dict has no version


def _targets(rng, steps, **options):
    """A torch layer and a NumPy layer in the same state after ``steps`` training batches."""
    reference = _trained_torch(rng, steps, momentum=None, **options)
    layer = bnp.BatchNorm(C, momentum=None, **options)
    layer.load_state_dict(reference.state_dict())
    assert layer.num_batches_tracked == steps
    return reference, layer


def _assert_same_state(layer, reference):
    expected = reference.state_dict()
    got = layer.state_dict()
    assert set(got) == set(expected)
    for key, value in expected.items():
        np.testing.assert_array_equal(got[key], as_numpy(value), err_msg=key)


@pytest.mark.parametrize("how", ["version1", "no_metadata"])
@pytest.mark.parametrize("target_steps", [0, 4], ids=["fresh_target", "trained_target"])
def test_old_checkpoint_loads_into_torch_and_numpy_alike(rng, how, target_steps):
    checkpoint = _old_checkpoint(_trained_torch(rng, 3).state_dict(), how)
    assert "num_batches_tracked" not in checkpoint
    reference, layer = _targets(rng, target_steps)

    reference.load_state_dict(checkpoint, strict=True)
    layer.load_state_dict(checkpoint)

    _assert_same_state(layer, reference)
    assert layer.num_batches_tracked == int(reference.num_batches_tracked) == target_steps
    # The counter is what momentum=None averages with: the next step agrees too.
    x = random_batch(rng, SHAPE)
    with torch.no_grad():
        expected = reference(torch.tensor(x))
    np.testing.assert_allclose(layer(x), as_numpy(expected), **TOL64)
    np.testing.assert_allclose(layer.running_var, as_numpy(reference.running_var), **TOL64)
    assert layer.num_batches_tracked == int(reference.num_batches_tracked) == target_steps + 1


def test_old_checkpoint_of_a_model_loads_the_numpy_layer_from_its_entries(rng):
    """A whole torch model's old checkpoint: torch loads it; its batch norm entries,
    taken out under their own names, load into the NumPy layer with the same result."""
    model = torch.nn.Sequential(torch.nn.Conv2d(C, C, 1, dtype=torch.float64),
                                _trained_torch(rng, 3))
    state = model.state_dict()
    del state["1.num_batches_tracked"]
    state._metadata["1"]["version"] = 1
    fresh = torch.nn.Sequential(torch.nn.Conv2d(C, C, 1, dtype=torch.float64),
                                torch.nn.BatchNorm2d(C, dtype=torch.float64))
    fresh.load_state_dict(state, strict=True)
    layer = bnp.BatchNorm(C)
    layer.load_state_dict({k[len("1."):]: v for k, v in state.items() if k.startswith("1.")})
    _assert_same_state(layer, fresh[1])


def test_old_checkpoint_of_an_untracked_layer_has_nothing_to_fill(rng):
    source = _trained_torch(rng, 2, track_running_stats=False)
    state = source.state_dict()
    state._metadata[""]["version"] = 1
    reference = torch.nn.BatchNorm2d(C, dtype=torch.float64, track_running_stats=False)
    layer = bnp.BatchNorm(C, track_running_stats=False)
    reference.load_state_dict(state, strict=True)
    layer.load_state_dict(state)
    _assert_same_state(layer, reference)
    assert layer.num_batches_tracked is None


@pytest.mark.parametrize("source", ["torch", "numpy"])
def test_version_2_state_dict_without_the_counter_is_refused_like_torch(rng, source):
    if source == "torch":
        state = _trained_torch(rng, 2).state_dict()
    else:
        numpy_layer = bnp.BatchNorm(C)
        numpy_layer(random_batch(rng, SHAPE))
        state = numpy_layer.state_dict()
    del state["num_batches_tracked"]
    assert state._metadata[""]["version"] == 2
    reference, layer = _targets(rng, 2)
    before = layer.state_dict()
    with pytest.raises(RuntimeError, match="Missing key.*num_batches_tracked"):
        reference.load_state_dict(state if source == "torch" else _as_tensors(state),
                                  strict=True)
    with pytest.raises(KeyError, match=r"missing \['num_batches_tracked'\]"):
        layer.load_state_dict(state)
    for key, value in before.items():
        np.testing.assert_array_equal(layer.state_dict()[key], value, err_msg=key)


def _as_tensors(state):
    """A NumPy state dict as tensors, keeping its metadata (as torch's own dicts do)."""
    out = OrderedDict((k, torch.as_tensor(v)) for k, v in state.items())
    out._metadata = state._metadata
    return out


def test_numpy_state_dict_carries_torchs_version_metadata():
    assert bnp.BatchNorm(C).state_dict()._metadata == torch.nn.BatchNorm2d(C).state_dict()._metadata


# --------------------------------------------------------------------------- dtypes


@pytest.mark.parametrize("layer_dtype", [np.float64, np.float32, np.float16])
def test_loading_keeps_the_layers_dtype(rng, layer_dtype):
    source = torch.nn.BatchNorm2d(C, dtype=torch.float32)
    with torch.no_grad():
        source.weight.copy_(torch.tensor(rng.uniform(0.5, 2.0, C)))
        source(torch.tensor(random_batch(rng, SHAPE, np.float32)))
    layer = bnp.BatchNorm(C, dtype=layer_dtype)
    layer.load_state_dict(source.state_dict())
    for key in ("weight", "bias", "running_mean", "running_var"):
        value = getattr(layer, key)
        assert value.dtype == layer_dtype, key
        np.testing.assert_array_equal(value, as_numpy(getattr(source, key)).astype(layer_dtype),
                                      err_msg=key)
    assert layer.num_batches_tracked == 1


def test_loaded_arrays_are_copies(rng):
    state = {"weight": np.ones(C), "bias": np.zeros(C), "running_mean": np.zeros(C),
             "running_var": np.ones(C), "num_batches_tracked": np.array(5)}
    layer = bnp.BatchNorm(C)
    layer.load_state_dict(state)
    for key in ("weight", "bias", "running_mean", "running_var"):
        state[key] += 7.0
    layer(random_batch(rng, SHAPE))
    np.testing.assert_array_equal(layer.weight, np.ones(C))
    assert layer.num_batches_tracked == 6
