"""bnkit.conventions and BatchNorm(momentum_convention=...): PyTorch's and Keras' running statistics.

Oracles: torch.nn.BatchNorm1d for PyTorch's convention, Keras 3 (torch backend)
BatchNormalization for Keras'.
"""

import os

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
from bnkit import conventions

from bn_testing import TOL64, random_batch

# Keras 3 on the torch backend converts its variables with np.array(x), which NumPy 2 flags.
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


@pytest.fixture(scope="module")
def keras():
    os.environ["KERAS_BACKEND"] = "torch"
    keras = pytest.importorskip("keras")
    if keras.backend.backend() != "torch":
        pytest.skip("keras was imported earlier with another backend")
    return keras


def _keras_numpy(keras, v):
    return keras.ops.convert_to_numpy(v)


# ----------------------------------------------------------------------------- conversions
@pytest.mark.parametrize("m", [0.0, 0.01, 0.1, 0.5, 0.9, 0.99, 1.0])
def test_momentum_conversion_is_one_minus_and_its_own_inverse(m):
    assert conventions.keras_momentum_to_torch(m) == pytest.approx(1 - m, abs=1e-15)
    assert conventions.torch_momentum_to_keras(m) == pytest.approx(1 - m, abs=1e-15)
    back = conventions.torch_momentum_to_keras(conventions.keras_momentum_to_torch(m))
    assert back == pytest.approx(m, abs=1e-15)


def test_defaults_and_stored_variance_per_framework():
    assert conventions.DEFAULTS["torch"] == {"momentum": 0.1, "eps": 1e-5, "unbiased": True}
    assert conventions.DEFAULTS["keras"] == {"momentum": 0.99, "eps": 1e-3, "unbiased": False}
    assert conventions.stores_unbiased_variance("torch")
    assert not conventions.stores_unbiased_variance("keras")
    assert conventions.new_batch_weight(0.99, "keras") == pytest.approx(0.01, abs=1e-15)
    assert conventions.new_batch_weight(0.1, "torch") == 0.1


@pytest.mark.parametrize("bad", [-0.1, 1.5, None])
def test_conversion_refuses_momentum_outside_unit_interval(bad):
    with pytest.raises(ValueError, match="momentum must be"):
        conventions.keras_momentum_to_torch(bad)
    with pytest.raises(ValueError, match="momentum must be"):
        conventions.torch_momentum_to_keras(bad)


def test_unknown_convention_is_refused():
    with pytest.raises(ValueError, match="convention must be one of"):
        conventions.update_moving_stats(np.zeros(1), np.ones(1), np.zeros(1), np.ones(1), 4,
                                        0.1, convention="tf")
    with pytest.raises(ValueError, match="momentum_convention must be one of"):
        bnp.BatchNorm(3, momentum_convention="jax")


def test_unbiased_update_refuses_a_single_value():
    rm, rv = np.zeros(2), np.ones(2)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        conventions.update_moving_stats(rm, rv, np.ones(2), np.ones(2), 1, 0.1)
    assert np.array_equal(rm, np.zeros(2)) and np.array_equal(rv, np.ones(2))


# ----------------------------------------------------------------------------- the update
def test_torch_convention_update_equals_bnkit_update_running_stats(rng):
    mean, var = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
    a_m, a_v = rng.normal(size=4), rng.uniform(0.5, 2.0, 4)
    b_m, b_v = a_m.copy(), a_v.copy()
    conventions.update_moving_stats(a_m, a_v, mean, var, 8, 0.1)
    bnp.update_running_stats(b_m, b_v, mean, var, 8, 0.1)
    np.testing.assert_allclose(a_m, b_m, **TOL64)
    np.testing.assert_allclose(a_v, b_v, **TOL64)


@pytest.mark.parametrize("keras_momentum", [0.99, 0.9, 0.5])
def test_keras_run_equals_torch_run_with_one_minus_momentum(rng, keras_momentum):
    """Same EMA with m' = 1 - m; the stored variances differ only by the Bessel factor."""
    n, c = 4, 3
    keras_layer = bnp.BatchNorm(c, momentum=keras_momentum, eps=1e-3, momentum_convention="keras")
    torch_m = conventions.keras_momentum_to_torch(keras_momentum)
    torch_biased = bnp.BatchNorm(c, momentum=torch_m, eps=1e-3, unbiased_running_var=False)
    torch_unbiased = bnp.BatchNorm(c, momentum=torch_m, eps=1e-3)    # PyTorch's storage
    for _ in range(6):
        x = random_batch(rng, (n, c))
        y = keras_layer(x)
        np.testing.assert_allclose(torch_biased(x), y, **TOL64)
        np.testing.assert_allclose(torch_unbiased(x), y, **TOL64)   # same batch statistics
    np.testing.assert_allclose(keras_layer.running_mean, torch_biased.running_mean, **TOL64)
    np.testing.assert_allclose(keras_layer.running_var, torch_biased.running_var, **TOL64)
    np.testing.assert_allclose(keras_layer.running_mean, torch_unbiased.running_mean, **TOL64)
    # r_k - (1 - w)^k * 1 is a weighted sum of batch variances: scaled by n/(n-1) when unbiased
    init = (1 - torch_m) ** 6
    np.testing.assert_allclose(torch_unbiased.running_var - init,
                               n / (n - 1) * (keras_layer.running_var - init), **TOL64)


def test_default_layer_still_matches_torch(rng):
    layer = bnp.BatchNorm(3)
    assert layer.momentum_convention == "torch" and layer.unbiased_running_var
    ref = torch.nn.BatchNorm1d(3, dtype=torch.float64)
    for _ in range(3):
        x = random_batch(rng, (5, 3))
        layer(x)
        ref(torch.from_numpy(x))
    np.testing.assert_allclose(layer.running_var, ref.running_var.numpy(), **TOL64)
    assert repr(layer) == ("BatchNorm(3, eps=1e-05, momentum=0.1, affine=True, bias=True, "
                           "track_running_stats=True, channel_axis=1)")


def test_torch_convention_with_biased_storage_against_torch(rng):
    """PyTorch's EMA storing the biased variance: torch's running_var with n/(n-1) undone."""
    n = 6
    layer = bnp.BatchNorm(2, momentum=1.0, unbiased_running_var=False)
    x = random_batch(rng, (n, 2))
    layer(x)
    np.testing.assert_allclose(layer.running_var, x.var(0), **TOL64)
    assert "unbiased_running_var=False" in repr(layer)


def test_cumulative_average_ignores_the_convention(rng):
    layers = [bnp.BatchNorm(2, momentum=None, momentum_convention="keras"),
              bnp.BatchNorm(2, momentum=None, unbiased_running_var=False)]
    xs = [random_batch(rng, (5, 2)) for _ in range(4)]
    for x in xs:
        for layer in layers:
            layer(x)
    for layer in layers:
        np.testing.assert_allclose(layer.running_mean, np.mean([x.mean(0) for x in xs], 0),
                                   **TOL64)
        np.testing.assert_allclose(layer.running_var, np.mean([x.var(0) for x in xs], 0),
                                   **TOL64)
        assert layer.num_batches_tracked == 4


def test_eval_mode_uses_the_keras_statistics(rng):
    layer = bnp.BatchNorm(3, momentum=0.99, eps=1e-3, momentum_convention="keras")
    layer(random_batch(rng, (8, 3)))
    x = random_batch(rng, (4, 3))
    expected = (x - layer.running_mean) / np.sqrt(layer.running_var + 1e-3)
    np.testing.assert_allclose(layer.eval()(x), expected, **TOL64)


# ----------------------------------------------------------------------------- start-up bias
@pytest.mark.parametrize("convention, momentum", [("torch", 0.1), ("keras", 0.99),
                                                  ("keras", 0.9)])
def test_identical_batches_follow_the_closed_form(rng, convention, momentum):
    x = random_batch(rng, (10, 3))
    layer = bnp.BatchNorm(3, momentum=momentum, momentum_convention=convention)
    stored = x.var(0, ddof=1) if layer.unbiased_running_var else x.var(0)
    for k in range(1, 31):
        layer(x)
        mean_k, var_k = conventions.running_stats_after_identical_batches(
            k, x.mean(0), stored, momentum, convention)
        np.testing.assert_allclose(layer.running_mean, mean_k, rtol=1e-12, atol=1e-13)
        np.testing.assert_allclose(layer.running_var, var_k, rtol=1e-12, atol=1e-13)


def test_closed_form_with_pytorch_defaults():
    k = np.arange(50)
    mean_k, var_k = conventions.running_stats_after_identical_batches(k, 2.0, 5.0)
    np.testing.assert_allclose(mean_k, (1 - 0.9 ** k) * 2.0, **TOL64)
    np.testing.assert_allclose(var_k, 0.9 ** k + (1 - 0.9 ** k) * 5.0, **TOL64)
    with pytest.raises(ValueError, match="k must be >= 0"):
        conventions.running_stats_after_identical_batches(-1, 2.0, 5.0)


# ----------------------------------------------------------------------------- real Keras 3
def test_keras3_default_momentum_and_epsilon(keras):
    layer = keras.layers.BatchNormalization()
    assert (layer.momentum, layer.epsilon) == (conventions.DEFAULTS["keras"]["momentum"],
                                               conventions.DEFAULTS["keras"]["eps"])


@pytest.mark.parametrize("shape", [(4, 3), (2, 5, 4, 3)], ids=["NC", "NHWC"])
def test_keras3_moving_statistics_equal_bnkit_keras_convention(keras, rng, shape):
    """Keras 3 stores the biased variance, with moving = m * moving + (1 - m) * batch."""
    k_layer = keras.layers.BatchNormalization(momentum=0.9, epsilon=1e-3)
    b_layer = bnp.BatchNorm(shape[-1], momentum=0.9, eps=1e-3, momentum_convention="keras",
                            channel_axis=-1)
    for _ in range(5):
        x = np.moveaxis(random_batch(rng, (shape[0], shape[-1]) + shape[1:-1]), 1, -1)
        x = x.astype(np.float32)
        y_keras = _keras_numpy(keras, k_layer(x, training=True))
        y_bnkit = b_layer(x)
        np.testing.assert_allclose(y_bnkit, y_keras, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(b_layer.running_mean, _keras_numpy(keras, k_layer.moving_mean),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_layer.running_var,
                               _keras_numpy(keras, k_layer.moving_variance),
                               rtol=1e-5, atol=1e-6)
    x = x.astype(np.float32)
    np.testing.assert_allclose(b_layer.eval()(x), _keras_numpy(keras, k_layer(x, training=False)),
                               rtol=1e-4, atol=1e-4)


def test_keras3_fit_updates_like_bnkit_keras_convention(keras, rng):
    """A few real training steps (model.fit) leave Keras' moving statistics where bnkit's are."""
    keras.utils.set_random_seed(0)
    n, c, steps = 8, 4, 5
    x = random_batch(rng, (n * steps, c)).astype(np.float32)
    y = rng.normal(size=(n * steps, 1)).astype(np.float32)
    model = keras.Sequential([keras.Input((c,)), keras.layers.BatchNormalization(),
                              keras.layers.Dense(1)])
    model.compile(optimizer="sgd", loss="mse")
    model.fit(x, y, batch_size=n, epochs=1, shuffle=False, verbose=0)
    bn = model.layers[0]
    b_layer = bnp.BatchNorm(c, momentum=0.99, eps=1e-3, momentum_convention="keras")
    for i in range(steps):
        b_layer(x[i * n:(i + 1) * n])
    np.testing.assert_allclose(b_layer.running_mean, _keras_numpy(keras, bn.moving_mean),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(b_layer.running_var, _keras_numpy(keras, bn.moving_variance),
                               rtol=1e-5, atol=1e-6)
    # and not the unbiased variance PyTorch would store
    unbiased = bnp.BatchNorm(c, momentum=0.01, eps=1e-3)
    for i in range(steps):
        unbiased(x[i * n:(i + 1) * n])
    assert not np.allclose(unbiased.running_var, _keras_numpy(keras, bn.moving_variance),
                           rtol=1e-5, atol=1e-6)
