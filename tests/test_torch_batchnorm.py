"""bnkit.torch against torch's own batch norm: functional, modules, channels_last, no_grad.

Everything runs in float64 on every available device and must agree with
``torch.nn.functional.batch_norm`` / ``torch.nn.BatchNorm1d/2d/3d`` to round-off.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import bnkit.torch as bnt
from bn_testing import SHAPES, TOL64, random_batch, torch_forward_backward, torch_reference

BNKIT_BATCHNORM = {2: bnt.BatchNorm1d, 3: bnt.BatchNorm1d, 4: bnt.BatchNorm2d,
                   5: bnt.BatchNorm3d}

# channels_last exists for 4-D (NHWC) and 5-D (NDHWC) tensors.
CHANNELS_LAST = {4: torch.channels_last, 5: torch.channels_last_3d}
# Every shape contiguous, and the 4-D and 5-D ones in channels_last memory format too.
SHAPES_AND_FORMATS = [
    pytest.param(p.values[0], False, id=f"{p.id}-contiguous") for p in SHAPES
] + [
    pytest.param(p.values[0], True, id=f"{p.id}-channels_last") for p in SHAPES
    if len(p.values[0]) in CHANNELS_LAST
]


def _tensor(array, device, channels_last=False):
    t = torch.tensor(array, device=device)
    if channels_last:
        t = t.to(memory_format=CHANNELS_LAST[t.dim()])
    return t


def bnkit_module(ndim, num_features, device, **kwargs):
    return BNKIT_BATCHNORM[ndim](num_features, device=device, dtype=torch.float64, **kwargs)


# --------------------------------------------------------------------------- functional


@pytest.mark.parametrize(("shape", "channels_last"), SHAPES_AND_FORMATS)
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_functional_matches_torch(rng, device, shape, training, affine, channels_last):
    num_channels = shape[1]
    x = _tensor(random_batch(rng, shape), device, channels_last)
    grad_y = _tensor(rng.standard_normal(shape), device, channels_last)
    weight = torch.tensor(rng.uniform(0.5, 2.0, num_channels), device=device)
    bias = torch.tensor(rng.normal(size=num_channels), device=device)
    weight.requires_grad_(affine)
    bias.requires_grad_(affine)
    params = [weight, bias] if affine else []
    stats = [torch.tensor(rng.normal(size=num_channels), device=device),
             torch.tensor(rng.uniform(0.5, 2.0, num_channels), device=device)]
    ref_stats = [s.clone() for s in stats]

    def call(fn, running):
        return lambda inp: fn(inp, *running, *(params or [None, None]),
                              training=training, momentum=0.2, eps=1e-4)

    y_ref, grad_x_ref, grad_params_ref = torch_forward_backward(
        call(F.batch_norm, ref_stats), x, grad_y, params)
    y, grad_x, grad_params = torch_forward_backward(call(bnt.batch_norm, stats), x, grad_y, params)

    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(grad_x, grad_x_ref, **TOL64)
    for got, expected in zip(grad_params, grad_params_ref, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)
    for got, expected in zip(stats, ref_stats, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)


@pytest.mark.parametrize("shape", SHAPES)
def test_functional_training_without_running_stats_matches_torch(rng, device, shape):
    x = torch.tensor(random_batch(rng, shape), device=device)
    torch.testing.assert_close(bnt.batch_norm(x, None, None, training=True),
                               F.batch_norm(x, None, None, training=True), **TOL64)


def test_functional_output_keeps_dtype_and_device(rng, device):
    for dtype in (torch.float32, torch.float64):
        x = torch.tensor(random_batch(rng, (4, 3, 5)), dtype=dtype, device=device)
        mean = torch.zeros(3, dtype=dtype, device=device)
        var = torch.ones(3, dtype=dtype, device=device)
        y = bnt.batch_norm(x, mean, var, training=True)
        assert y.dtype == dtype and y.device == x.device
        assert mean.dtype == var.dtype == dtype


def test_running_var_uses_unbiased_estimate(rng, device):
    x = torch.tensor(random_batch(rng, (5, 3, 4)), device=device)
    mean, var = torch.zeros(3, device=device, dtype=x.dtype), torch.ones(3, device=device,
                                                                         dtype=x.dtype)
    bnt.batch_norm(x, mean, var, training=True, momentum=1.0)
    torch.testing.assert_close(mean, x.mean(dim=(0, 2)), **TOL64)
    torch.testing.assert_close(var, x.var(dim=(0, 2), unbiased=True), **TOL64)


# --------------------------------------------------------------------------- modules


def _assert_module_matches_torch(module, reference, x, grad_y):
    """One forward and backward through both modules; outputs, gradients and state must agree."""
    params = [module.weight, module.bias] if module.affine else []
    ref_params = [reference.weight, reference.bias] if reference.affine else []
    y_ref, grad_x_ref, grad_params_ref = torch_forward_backward(reference, x, grad_y, ref_params)
    y, grad_x, grad_params = torch_forward_backward(module, x, grad_y, params)

    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(grad_x, grad_x_ref, **TOL64)
    for got, expected in zip(grad_params, grad_params_ref, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)
    state, ref_state = module.state_dict(), reference.state_dict()
    assert state.keys() == ref_state.keys()
    for key, expected in ref_state.items():
        torch.testing.assert_close(state[key], expected, **TOL64)


@pytest.mark.parametrize(("shape", "channels_last"), SHAPES_AND_FORMATS)
@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
@pytest.mark.parametrize("track_running_stats", [True, False], ids=["tracked", "untracked"])
def test_module_matches_torch_over_training_steps_then_eval(
        rng, device, shape, momentum, affine, track_running_stats, channels_last):
    num_channels = shape[1]
    options = dict(momentum=momentum, affine=affine, track_running_stats=track_running_stats)
    reference = torch_reference(len(shape), num_channels, device=device, **options)
    module = bnkit_module(len(shape), num_channels, device, **options)
    assert isinstance(module, torch.nn.Module)
    if affine:  # start from a non-trivial gamma and beta so their gradients matter
        with torch.no_grad():
            weight, bias = rng.uniform(0.5, 2.0, num_channels), rng.normal(size=num_channels)
            for m in (module, reference):
                m.weight.copy_(torch.tensor(weight))
                m.bias.copy_(torch.tensor(bias))
    else:
        assert module.weight is None and module.bias is None
    if not track_running_stats:
        assert module.running_mean is None and module.running_var is None

    def step():
        x = _tensor(random_batch(rng, shape), device, channels_last)
        grad_y = _tensor(rng.standard_normal(shape), device, channels_last)
        _assert_module_matches_torch(module, reference, x, grad_y)

    for _ in range(3):
        step()
    module.eval()
    reference.eval()
    assert not module.training
    for _ in range(2):
        step()
    if track_running_stats:
        assert int(module.num_batches_tracked) == 3


def test_module_has_torchs_parameters_and_buffers(device):
    for affine in (True, False):
        for track in (True, False):
            options = dict(affine=affine, track_running_stats=track, device=device)
            module, reference = bnt.BatchNorm2d(4, **options), torch.nn.BatchNorm2d(4, **options)
            assert [n for n, _ in module.named_parameters()] == \
                [n for n, _ in reference.named_parameters()]
            assert sorted(n for n, _ in module.named_buffers()) == \
                sorted(n for n, _ in reference.named_buffers())
            for name, value in reference.state_dict().items():
                got = module.state_dict()[name]
                assert got.dtype == value.dtype and got.device == value.device
                torch.testing.assert_close(got, value, rtol=0, atol=0)


def test_module_to_moves_parameters_and_buffers(device):
    module = bnt.BatchNorm2d(3).to(device=device, dtype=torch.float64)
    for name, value in module.state_dict().items():
        assert value.device.type == device.type
        expected = torch.long if name == "num_batches_tracked" else torch.float64
        assert value.dtype == expected, name


def test_module_factory_kwargs_set_device_and_dtype(device):
    module = bnt.BatchNorm1d(3, device=device, dtype=torch.float64)
    assert module.weight.dtype == module.running_var.dtype == torch.float64
    assert module.weight.device.type == module.running_mean.device.type == device.type


# --------------------------------------------------------------------------- no_grad, eval


@pytest.mark.parametrize("momentum", [0.1, None], ids=["momentum0.1", "cumulative"])
def test_training_under_no_grad_still_updates_running_stats(rng, device, momentum):
    reference = torch_reference(3, 3, device=device, momentum=momentum)
    module = bnkit_module(3, 3, device, momentum=momentum)
    with torch.no_grad():
        for _ in range(2):
            x = torch.tensor(random_batch(rng, (4, 3, 5)), device=device)
            torch.testing.assert_close(module(x), reference(x), **TOL64)
    torch.testing.assert_close(module.running_mean, reference.running_mean, **TOL64)
    torch.testing.assert_close(module.running_var, reference.running_var, **TOL64)
    assert int(module.num_batches_tracked) == 2
    assert not torch.equal(module.running_mean, torch.zeros_like(module.running_mean))


def test_functional_training_under_no_grad_still_updates_running_stats(rng, device):
    x = torch.tensor(random_batch(rng, (6, 3)), device=device)
    stats = [torch.zeros(3, dtype=x.dtype, device=device), torch.ones(3, dtype=x.dtype,
                                                                      device=device)]
    ref_stats = [s.clone() for s in stats]
    with torch.no_grad():
        bnt.batch_norm(x, *stats, training=True)
    F.batch_norm(x, *ref_stats, training=True)
    for got, expected in zip(stats, ref_stats, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)


@pytest.mark.parametrize("grad_enabled", [True, False], ids=["grad", "no_grad"])
def test_eval_does_not_change_num_batches_tracked_or_running_stats(rng, device, grad_enabled):
    module = bnkit_module(2, 3, device)
    module(torch.tensor(random_batch(rng, (5, 3)), device=device))
    module.eval()
    before = {k: v.clone() for k, v in module.state_dict().items()}
    with torch.set_grad_enabled(grad_enabled):
        module(torch.tensor(random_batch(rng, (5, 3)), device=device))
    assert int(module.num_batches_tracked) == 1
    for key, value in before.items():
        torch.testing.assert_close(module.state_dict()[key], value, rtol=0, atol=0)


# --------------------------------------------------------------------------- an implementation


class _RecordOps(TorchDispatchMode):
    """Record the name of every aten op that runs."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_never_calls_torchs_own_batch_norm_ops(rng, device, training):
    module = bnkit_module(4, 3, device).train(training)
    x = torch.tensor(random_batch(rng, (2, 3, 4, 4)), device=device, requires_grad=True)
    with _RecordOps() as recorder:
        module(x).square().sum().backward()
        bnt.batch_norm(x, None, None, training=True).sum().backward()
    assert recorder.ops, "the recorder saw no ops at all"
    assert not [op for op in recorder.ops if "batch_norm" in op], recorder.ops


@pytest.mark.parametrize("channels_last", [False, True], ids=["contiguous", "channels_last"])
def test_large_batch_matches_torch(rng, device, channels_last):
    """2 MB of float64: statistics and gradients accumulate over many cache-sized pieces."""
    shape = (16, 16, 32, 32)
    x = _tensor(random_batch(rng, shape), device, channels_last)
    grad_y = _tensor(rng.standard_normal(shape), device, channels_last)
    weight = torch.tensor(rng.uniform(0.5, 2.0, shape[1]), device=device, requires_grad=True)
    bias = torch.tensor(rng.normal(size=shape[1]), device=device, requires_grad=True)
    stats = [torch.zeros(shape[1], dtype=x.dtype, device=device),
             torch.ones(shape[1], dtype=x.dtype, device=device)]
    ref_stats = [s.clone() for s in stats]

    y_ref, grad_x_ref, grad_params_ref = torch_forward_backward(
        lambda inp: F.batch_norm(inp, *ref_stats, weight, bias, training=True), x, grad_y,
        [weight, bias])
    y, grad_x, grad_params = torch_forward_backward(
        lambda inp: bnt.batch_norm(inp, *stats, weight, bias, training=True), x, grad_y,
        [weight, bias])

    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(grad_x, grad_x_ref, **TOL64)
    for got, expected in zip([*grad_params, *stats], [*grad_params_ref, *ref_stats], strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-9)
