"""bnkit.validation (the argument checks both implementations share) and bnkit.numpy.arrays.

The checks are pure Python: the NumPy and torch functions call the same check, so a bad
argument gets the same message from both, which the tests below compare directly. How each
public function reacts to bad input is tested with that function (tests/test_norms.py,
tests/test_numpy_edge_cases.py, ...); here, the checks themselves.
"""

import re
import subprocess
import sys

import numpy as np
import pytest
import torch

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bnkit import validation
from bnkit.numpy import arrays


def test_validation_is_pure_python():
    code = "import sys, bnkit.validation; print('numpy' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]


# ============================================================================ batch norm's checks
@pytest.mark.parametrize("value", [1, 7, np.int64(3)])
def test_check_positive_int_accepts_python_and_numpy_ints(value):
    validation.check_positive_int("n", value)


@pytest.mark.parametrize("value", [0, -2, 2.0, True, "3", None])
def test_check_positive_int_names_the_argument_and_the_value(value):
    with pytest.raises(ValueError, match=re.escape(f"n must be a positive int (got {value!r})")):
        validation.check_positive_int("n", value)


@pytest.mark.parametrize("eps", [0.0, -1e-5, float("inf"), float("nan"), True, "1e-5"])
def test_check_eps_wants_a_finite_positive_number(eps):
    with pytest.raises(ValueError, match=re.escape(f"eps must be a finite number > 0 (got {eps!r})")):
        validation.check_eps(eps)


@pytest.mark.parametrize("momentum", [-0.1, 1.5, True, float("nan")])
def test_check_momentum_wants_a_number_in_the_unit_interval(momentum):
    with pytest.raises(ValueError, match=re.escape(f"momentum must be in [0, 1] (got {momentum!r})")):
        validation.check_momentum(momentum)


def test_momentum_none_is_a_layer_option_only():
    validation.check_momentum(None, allow_none=True)
    validation.check_momentum(np.float32(0.0))
    with pytest.raises(ValueError, match="cumulative average momentum=None is a layer option"):
        validation.check_momentum(None)


def test_check_input_rank():
    validation.check_input_rank(2)
    with pytest.raises(ValueError, match=re.escape("expected an input of rank >= 2, (N, C, *) (got 1D input)")):
        validation.check_input_rank(1)
    with pytest.raises(ValueError, match=re.escape("expected 2D or 3D input (got 4D input)")):
        validation.check_input_rank(4, (2, 3))


@pytest.mark.parametrize(("channel_axis", "ndim", "axis"), [(1, 2, 1), (-1, 4, 3), (2, 4, 2), (-3, 4, 1)])
def test_normalize_channel_axis(channel_axis, ndim, axis):
    assert validation.normalize_channel_axis(channel_axis, ndim) == axis


def test_the_batch_axis_is_not_a_channel_axis():
    with pytest.raises(ValueError, match=re.escape("channel_axis=0 is not a valid channel axis for a "
                                                   "4D input: axis 0 is the batch, channels are on 1..3")):
        validation.normalize_channel_axis(0, 4)
    with pytest.raises(ValueError, match="channel_axis=-4 is not a valid"):
        validation.normalize_channel_axis(-4, 4)
    with pytest.raises(TypeError, match="channel_axis must be an int"):
        validation.normalize_channel_axis(1.0, 4)


def test_check_channel_vector():
    validation.check_channel_vector("weight", None, 3)
    validation.check_channel_vector("weight", [3], 3)
    with pytest.raises(ValueError, match=re.escape("weight has shape (4,) but the input has 3 channels: "
                                                   "expected shape (3,)")):
        validation.check_channel_vector("weight", (4,), 3)


def test_check_training_batch_refuses_one_value_per_channel_only():
    validation.check_training_batch((0, 3), 1)                 # empty batch: allowed, as in torch
    validation.check_training_batch((2, 3), 1)
    with pytest.raises(ValueError, match=re.escape("Expected more than 1 value per channel when "
                                                   "training, got input size (1, 3, 1)")):
        validation.check_training_batch((1, 3, 1), 1)
    validation.check_training_batch((1, 3, 1), 2)              # channels last: 3 values, 1 channel


# ============================================================================ layer norm and group norm
@pytest.mark.parametrize(("given", "shape"), [(3, (3,)), ([2, 3], (2, 3)), ((np.int64(4),), (4,))])
def test_as_normalized_shape_gives_a_tuple_of_ints(given, shape):
    got = validation.as_normalized_shape(given)
    assert got == shape and all(type(d) is int for d in got)


@pytest.mark.parametrize(("given", "error"), [(3.0, TypeError), ((3, True), TypeError),
                                              ((), ValueError), ((2, 0), ValueError), (-1, ValueError)])
def test_as_normalized_shape_refuses(given, error):
    with pytest.raises(error, match="normalized_shape must"):
        validation.as_normalized_shape(given)


def test_check_layer_norm_returns_the_shape_and_checks_weight_bias_eps():
    assert validation.check_layer_norm((2, 4, 3), 3, (3,), (3,)) == (3,)
    with pytest.raises(ValueError, match=re.escape("bias has shape (4,), expected normalized_shape (3,)")):
        validation.check_layer_norm((2, 4, 3), 3, None, (4,))
    with pytest.raises(ValueError, match="eps must be"):
        validation.check_layer_norm((2, 4, 3), 3, eps=0.0)


def test_check_group_norm():
    validation.check_group_norm((2, 6, 5), 3, (6,), (6,))
    with pytest.raises(ValueError, match=re.escape("num_channels (6) must be divisible by num_groups (4)")):
        validation.check_group_norm((2, 6, 5), 4)
    with pytest.raises(TypeError, match="num_groups must be an int"):
        validation.check_num_groups(True, 6)


def _message(call):
    with pytest.raises((TypeError, ValueError)) as info:
        call()
    return type(info.value), str(info.value)


SAME_ERROR = [
    ("layer_norm", lambda m, x, t: m.layer_norm(x, (4,))),
    ("layer_norm", lambda m, x, t: m.layer_norm(x, (3, 0))),
    ("layer_norm", lambda m, x, t: m.layer_norm(x, 3.0)),
    ("layer_norm", lambda m, x, t: m.layer_norm(x, (3,), weight=t(np.ones(4)))),
    ("layer_norm", lambda m, x, t: m.layer_norm(x, (3,), eps=0.0)),
    ("group_norm", lambda m, x, t: m.group_norm(x, 3)),
    ("group_norm", lambda m, x, t: m.group_norm(x, 2.0)),
    ("group_norm", lambda m, x, t: m.group_norm(x[0, 0, 0], 1)),
    ("group_norm", lambda m, x, t: m.group_norm(x, 2, bias=t(np.zeros(3)))),
    ("GroupNorm", lambda m, x, t: m.GroupNorm(3, 4)),
    ("GroupNorm", lambda m, x, t: m.GroupNorm(0, 4)),
    ("LayerNorm", lambda m, x, t: m.LayerNorm(())),
    ("batch_norm", lambda m, x, t: m.batch_norm(x, t(np.zeros(4)), t(np.ones(4)), eps=-1.0)),
    ("batch_norm", lambda m, x, t: m.batch_norm(x, t(np.zeros(4)), t(np.ones(4)), training=True,
                                                momentum=2.0)),
    ("BatchNorm", lambda m, x, t: (m.BatchNorm if m is bnp else m.BatchNorm2d)(0)),
]


@pytest.mark.parametrize(("name", "call"), SAME_ERROR, ids=[name for name, _ in SAME_ERROR])
def test_numpy_and_torch_raise_the_same_error(rng, name, call):
    x = rng.normal(size=(2, 4, 3, 3))
    from_numpy = _message(lambda: call(bnp, x, lambda v: v))
    from_torch = _message(lambda: call(bnt, torch.tensor(x), torch.tensor))
    assert from_numpy == from_torch


# ============================================================================ bnkit.numpy.arrays
def test_as_float_array_keeps_the_array_and_its_dtype():
    x = np.ones((2, 3), np.float16)
    assert arrays.as_float_array(x) is x
    assert arrays.as_float_array([[1.0, 2.0]]).dtype == np.float64
    with pytest.raises(TypeError, match=re.escape("grad_y must be a floating-point array (got dtype int64)")):
        arrays.as_float_array(np.arange(3, dtype=np.int64), "grad_y")


def test_check_channel_vectors_names_the_first_bad_vector():
    arrays.check_channel_vectors(3, weight=np.ones(3), bias=None, running_mean=[0.0, 0.0, 0.0])
    with pytest.raises(ValueError, match=r"^running_var has shape \(3, 1\)"):
        arrays.check_channel_vectors(3, running_mean=np.zeros(3), running_var=np.ones((3, 1)),
                                     weight=np.ones(2))


def test_to_numpy_reads_torch_tensors_and_passes_the_rest():
    t = torch.arange(3.0, requires_grad=True)
    np.testing.assert_array_equal(arrays.to_numpy(t), [0.0, 1.0, 2.0])
    assert isinstance(arrays.to_numpy(t), np.ndarray)
    x = np.ones(2)
    assert arrays.to_numpy(x) is x and arrays.to_numpy(5) == 5


def test_the_helpers_are_not_in_the_public_namespace_of_bnkit_numpy():
    assert not set(arrays.__all__) & set(dir(bnp))
