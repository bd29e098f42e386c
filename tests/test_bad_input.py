"""Bad input: a clear error that names the problem, and nothing lost.

Every refused call must leave the running statistics, ``num_batches_tracked`` and the
parameters exactly as they were. That is a deliberate difference from torch, whose
modules increment ``num_batches_tracked`` before checking the batch size.
"""

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import TOL64, as_numpy, random_batch

NUM_CHANNELS = 3
SHAPE = (4, NUM_CHANNELS, 5)

RANK = r"(?i)\b\d-?D\b|rank|dim"  # "expected 2D or 3D input (got 1D input)", "rank >= 2", ...
ONE_VALUE = "Expected more than 1 value per channel when training"
NOT_FLOAT = r"(?i)float"


def _case(name, error=ValueError, match="", **changes):
    """A valid training call on an (N, C, L) batch, with ``changes`` applied."""
    return pytest.param(changes, error, match, id=name)


FUNCTION_CASES = [
    _case("rank-1", match=RANK, x_shape=(6,)),
    _case("rank-0", match=RANK, x_shape=()),
    _case("weight-length", match="weight", weight_length=4),
    _case("bias-length", match="bias", bias_length=4),
    _case("running_mean-length", match="running_mean", mean_length=4),
    _case("running_var-length", match="running_var", var_length=4),
    _case("running_var-length-eval", match="running_var", var_length=4, training=False),
    _case("weight-length-eval", match="weight", weight_length=2, training=False),
    _case("one-value-per-channel-NC", match=ONE_VALUE, x_shape=(1, NUM_CHANNELS)),
    _case("one-value-per-channel-NCHW", match=ONE_VALUE, x_shape=(1, NUM_CHANNELS, 1, 1)),
    _case("one-value-per-channel-NHWC", match=ONE_VALUE,
          x_shape=(1, 1, 1, NUM_CHANNELS), channel_axis=-1),
    _case("channels-last-length", match=r"running_mean|running_var|weight|bias",
          x_shape=(4, NUM_CHANNELS, 5), channel_axis=-1),
    _case("eps-zero", match="eps", eps=0.0),
    _case("eps-negative", match="eps", eps=-1e-5),
    _case("eps-zero-eval", match="eps", eps=0.0, training=False),
    _case("momentum-negative", match="momentum", momentum=-0.1),
    _case("momentum-above-one", match="momentum", momentum=1.5),
    _case("int64-input", TypeError, NOT_FLOAT, x_dtype=np.int64),
    _case("int32-input", TypeError, NOT_FLOAT, x_dtype=np.int32),
    _case("bool-input", TypeError, NOT_FLOAT, x_dtype=np.bool_),
]


def _function_arguments(rng, changes):
    """NumPy arguments for ``batch_norm``: x, the four vectors, and the keyword arguments."""
    x = random_batch(rng, (4, NUM_CHANNELS, 5)).reshape(-1)
    x = np.resize(x, changes.get("x_shape", SHAPE)).astype(changes.get("x_dtype", np.float64))
    vectors = dict(
        running_mean=rng.normal(size=changes.get("mean_length", NUM_CHANNELS)),
        running_var=rng.uniform(0.5, 2.0, changes.get("var_length", NUM_CHANNELS)),
        weight=rng.uniform(0.5, 2.0, changes.get("weight_length", NUM_CHANNELS)),
        bias=rng.normal(size=changes.get("bias_length", NUM_CHANNELS)),
    )
    kwargs = dict(training=changes.get("training", True), momentum=changes.get("momentum", 0.1),
                  eps=changes.get("eps", 1e-5))
    return x, vectors, kwargs


def _snapshot(values):
    """Copies of arrays or tensors (None stays None), to compare after a refused call."""
    return {name: None if v is None else np.array(as_numpy(v)) for name, v in values.items()}


def _assert_unchanged(values, before):
    after = _snapshot(values)
    assert after.keys() == before.keys()
    for name, value in before.items():
        if value is None:
            assert after[name] is None, name
        else:
            np.testing.assert_array_equal(after[name], value, err_msg=name)


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize(("changes", "error", "match"), FUNCTION_CASES)
def test_numpy_batch_norm_refuses_bad_input_and_changes_nothing(rng, changes, error, match):
    x, vectors, kwargs = _function_arguments(rng, changes)
    before = _snapshot(vectors)
    with pytest.raises(error, match=match):
        bnp.batch_norm(x, **vectors, **kwargs, channel_axis=changes.get("channel_axis", 1))
    _assert_unchanged(vectors, before)


@pytest.mark.parametrize(("changes", "error", "match"),
                         [c for c in FUNCTION_CASES if "channel_axis" not in c.values[0]])
def test_torch_batch_norm_refuses_bad_input_and_changes_nothing(rng, device, changes, error,
                                                                 match):
    x, vectors, kwargs = _function_arguments(rng, changes)
    x = torch.tensor(x, device=device)
    vectors = {k: torch.tensor(v, device=device) for k, v in vectors.items()}
    before = _snapshot(vectors)
    with pytest.raises(error, match=match):
        bnt.batch_norm(x, vectors["running_mean"], vectors["running_var"], vectors["weight"],
                       vectors["bias"], **kwargs)
    _assert_unchanged(vectors, before)


BACKWARD_CASES = [
    _case("rank-1", match=RANK, x_shape=(6,)),
    _case("weight-length", match="weight", weight_length=4),
    _case("eps-zero", match="eps", eps=0.0),
    _case("int64-input", TypeError, NOT_FLOAT, x_dtype=np.int64),
]


@pytest.mark.parametrize(("changes", "error", "match"), BACKWARD_CASES)
def test_numpy_batch_norm_backward_refuses_bad_input(rng, changes, error, match):
    x, vectors, kwargs = _function_arguments(rng, changes)
    with pytest.raises(error, match=match):
        bnp.batch_norm_backward(np.ones(x.shape), x, vectors["weight"], eps=kwargs["eps"])


# --------------------------------------------------------------------------- layers


class _NumpyLayers:
    """Build bnkit.numpy layers and their inputs."""

    def __init__(self, device):
        if device.type != "cpu":
            pytest.skip("NumPy runs on the CPU only")

    def make(self, ndim, num_features=NUM_CHANNELS, **options):
        return bnp.BatchNorm(num_features, **options)

    def input(self, array):
        return array

    def bad_weight(self, length):
        return np.ones(length)


class _TorchLayers:
    """Build bnkit.torch modules (the class that fits the rank) and their inputs."""

    classes = {1: bnt.BatchNorm1d, 2: bnt.BatchNorm1d, 3: bnt.BatchNorm1d,
               4: bnt.BatchNorm2d, 5: bnt.BatchNorm3d}

    def __init__(self, device):
        self.device = device

    def make(self, ndim, num_features=NUM_CHANNELS, **options):
        return self.classes[ndim](num_features, device=self.device, dtype=torch.float64,
                                  **options)

    def input(self, array):
        return torch.tensor(array, device=self.device)

    def bad_weight(self, length):
        return torch.nn.Parameter(torch.ones(length, dtype=torch.float64, device=self.device))


@pytest.fixture(params=[_NumpyLayers, _TorchLayers], ids=["numpy", "torch"])
def layers(request, device):
    return request.param(device)


STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def _trained_layer(layers, rng, shape=SHAPE, **options):
    """A layer that has seen one batch, so its state is not the initial one."""
    layer = layers.make(len(shape), **options)
    layer(layers.input(random_batch(rng, shape)))
    return layer


def _call_and_check_state(layer, x, error, match, prepare=lambda layer: None):
    """``prepare`` then call the layer on ``x``: it must raise and leave the state as it was."""
    before = _snapshot({name: getattr(layer, name) for name in STATE})
    with pytest.raises(error, match=match):
        prepare(layer)
        layer(x)
    _assert_unchanged({name: getattr(layer, name) for name in STATE}, before)


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_refuses_wrong_channel_count(layers, rng, training):
    layer = _trained_layer(layers, rng).train(training)
    x = layers.input(random_batch(rng, (4, NUM_CHANNELS + 1, 5)))
    _call_and_check_state(layer, x, ValueError, r"(?i)num_features|channel")


@pytest.mark.parametrize("shape", [(1, NUM_CHANNELS), (1, NUM_CHANNELS, 1)], ids=["NC", "NCL"])
@pytest.mark.parametrize("track_running_stats", [True, False], ids=["tracked", "untracked"])
def test_layer_refuses_one_value_per_channel_in_training(layers, rng, shape,
                                                         track_running_stats):
    layer = _trained_layer(layers, rng, track_running_stats=track_running_stats)
    _call_and_check_state(layer, layers.input(random_batch(rng, shape)), ValueError, ONE_VALUE)


def test_layer_without_running_stats_refuses_one_value_per_channel_in_eval(layers, rng):
    """With no running statistics, eval mode uses the batch's: one value is not enough."""
    layer = _trained_layer(layers, rng, track_running_stats=False).eval()
    _call_and_check_state(layer, layers.input(random_batch(rng, (1, NUM_CHANNELS))), ValueError,
                          ONE_VALUE)


def test_layer_with_running_stats_accepts_one_sample_in_eval(layers, rng):
    layer = _trained_layer(layers, rng).eval()
    x = random_batch(rng, (1, NUM_CHANNELS, 5))
    y = layer(layers.input(x))
    mean, var = as_numpy(layer.running_mean), as_numpy(layer.running_var)
    weight, bias = as_numpy(layer.weight), as_numpy(layer.bias)
    expected = (x - mean[:, None]) / np.sqrt(var[:, None] + 1e-5) * weight[:, None] + bias[:, None]
    np.testing.assert_allclose(as_numpy(y), expected, **TOL64)


@pytest.mark.parametrize("dtype", [np.int64, np.int32, np.bool_])
def test_layer_refuses_non_floating_input_with_type_error(layers, rng, dtype):
    layer = _trained_layer(layers, rng)
    x = layers.input(np.ones(SHAPE, dtype))
    _call_and_check_state(layer, x, TypeError, NOT_FLOAT)


@pytest.mark.parametrize(("attribute", "value", "training"), [
    pytest.param("eps", 0.0, True, id="eps=0-train"),
    pytest.param("eps", -1.0, True, id="eps=-1-train"),
    pytest.param("eps", 0.0, False, id="eps=0-eval"),
    # eval mode does not use the momentum
    pytest.param("momentum", -0.1, True, id="momentum=-0.1-train"),
    pytest.param("momentum", 1.5, True, id="momentum=1.5-train"),
])
def test_layer_with_bad_eps_or_momentum_changes_nothing(layers, rng, attribute, value,
                                                        training):
    """A bad value set after construction is refused (by the setter or by the call)."""
    layer = _trained_layer(layers, rng).train(training)
    _call_and_check_state(layer, layers.input(random_batch(rng, SHAPE)), ValueError, attribute,
                          prepare=lambda layer: setattr(layer, attribute, value))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_layer_with_wrong_length_weight_changes_nothing(layers, rng, training):
    layer = _trained_layer(layers, rng).train(training)
    layer.weight = layers.bad_weight(4)
    _call_and_check_state(layer, layers.input(random_batch(rng, SHAPE)), ValueError,
                          r"(?i)weight|channel")


@pytest.mark.parametrize(("option", "value"),
                         [("eps", 0.0), ("eps", -1e-5), ("momentum", -0.1), ("momentum", 1.5)])
def test_layer_refuses_bad_eps_or_momentum_at_construction_or_first_call(layers, rng, option,
                                                                         value):
    x = layers.input(random_batch(rng, SHAPE))
    with pytest.raises(ValueError, match=option):
        layers.make(len(SHAPE), **{option: value})(x)


def test_numpy_layer_refuses_rank_below_two(rng):
    layer = _trained_layer(_NumpyLayers(torch.device("cpu")), rng)
    for shape in [(NUM_CHANNELS,), ()]:
        _call_and_check_state(layer, np.ones(shape), ValueError, RANK)


@pytest.mark.parametrize(("cls", "good_rank", "bad_rank"), [
    (bnt.BatchNorm1d, 3, 1), (bnt.BatchNorm1d, 2, 4),
    (bnt.BatchNorm2d, 4, 2), (bnt.BatchNorm2d, 4, 3), (bnt.BatchNorm2d, 4, 5),
    (bnt.BatchNorm3d, 5, 4), (bnt.BatchNorm3d, 5, 3),
], ids=lambda v: v.__name__ if isinstance(v, type) else str(v))
def test_torch_module_refuses_the_wrong_rank(rng, device, cls, good_rank, bad_rank):
    module = cls(NUM_CHANNELS, device=device, dtype=torch.float64)
    module(torch.tensor(random_batch(rng, (2, NUM_CHANNELS) + (2,) * (good_rank - 2)),
                        device=device))
    bad_shape = ((2, NUM_CHANNELS) + (2,) * (bad_rank - 2))[:bad_rank]
    x = torch.tensor(np.ones(bad_shape), device=device)
    _call_and_check_state(module, x, ValueError, RANK)


def test_refused_batch_does_not_count_unlike_torch(rng, device):
    """torch counts the batch before checking it; bnkit checks first and counts nothing."""
    x = torch.tensor(random_batch(rng, (1, NUM_CHANNELS)), device=device)
    reference = torch.nn.BatchNorm1d(NUM_CHANNELS, device=device, dtype=torch.float64)
    module = bnt.BatchNorm1d(NUM_CHANNELS, device=device, dtype=torch.float64)
    for layer in (reference, module):
        with pytest.raises(ValueError, match=ONE_VALUE):
            layer(x)
    assert int(reference.num_batches_tracked) == 1
    assert int(module.num_batches_tracked) == 0


# --------------------------------------------------------------------------- good input passes


@pytest.mark.parametrize("scalar", [np.float32, np.float64], ids=lambda t: t.__name__)
def test_numpy_scalar_momentum_and_eps_are_accepted_like_torch(rng, device, scalar):
    """torch takes momentum=np.float32(0.5), eps=np.float32(1e-3); so must bnkit."""
    x = random_batch(rng, SHAPE)
    momentum, eps = scalar(0.5), scalar(1e-3)
    options = dict(momentum=momentum, eps=eps)

    def fresh_stats(to=lambda a: a):
        return [to(np.zeros(NUM_CHANNELS)), to(np.ones(NUM_CHANNELS))]

    oracle_stats, numpy_stats = fresh_stats(torch.tensor), fresh_stats()
    bnt_stats = fresh_stats(lambda a: torch.tensor(a, device=device))
    expected = torch.nn.functional.batch_norm(torch.tensor(x), *oracle_stats, training=True,
                                              **options)
    x_t = torch.tensor(x, device=device)
    results = {
        "numpy": lambda: bnp.batch_norm(x, *numpy_stats, training=True, **options),
        "bnt": lambda: bnt.batch_norm(x_t, *bnt_stats, training=True, **options),
        "numpy-layer": lambda: bnp.BatchNorm(NUM_CHANNELS, **options)(x),
        "bnt-module": lambda: bnt.BatchNorm1d(NUM_CHANNELS, device=device, dtype=torch.float64,
                                              **options)(x_t),
    }
    for name, run in results.items():
        np.testing.assert_allclose(as_numpy(run()), as_numpy(expected), **TOL64,
                                   err_msg=name)
    for got in (numpy_stats, bnt_stats):
        for stat, want in zip(got, oracle_stats, strict=True):
            np.testing.assert_allclose(as_numpy(stat), as_numpy(want), rtol=1e-10)
