"""Layer norm and group norm (bnkit.numpy.norms, bnkit.torch.norms) against torch's own.

Oracles: ``torch.nn.functional.layer_norm`` / ``group_norm`` / ``instance_norm`` and
``torch.nn.LayerNorm`` / ``torch.nn.GroupNorm``, in float64; gradients via torch's
autograd, ``torch.autograd.gradcheck`` for bnkit's autograd functions, and central
finite differences for the NumPy backward.
"""

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import bnkit.numpy as bnp
import bnkit.torch as bnt
from bn_testing import TOL64, as_numpy, random_batch, torch_forward_backward

# (input shape, normalized_shape) for layer norm: MLP rows, sequences, images, volumes.
LN_CASES = [
    pytest.param((6, 5), (5,), id="ND-last"),
    pytest.param((3, 4, 5), (5,), id="NLD-last"),
    pytest.param((3, 4, 5), (4, 5), id="NLD-last2"),
    pytest.param((2, 3, 4, 5), (3, 4, 5), id="NCHW-CHW"),
    pytest.param((2, 3, 4, 5), (5,), id="NCHW-W"),
    pytest.param((2, 2, 3, 2, 3), (2, 3, 2, 3), id="NCDHW-CDHW"),
]

# (input shape, num_groups): every rank, and G = 1, C / 2 and C.
GN_CASES = [
    pytest.param((6, 4), 2, id="NC-G2"),
    pytest.param((3, 6, 5), 3, id="NCL-G3"),
    pytest.param((2, 6, 4, 5), 1, id="NCHW-G1"),
    pytest.param((2, 6, 4, 5), 2, id="NCHW-G2"),
    pytest.param((2, 6, 4, 5), 6, id="NCHW-G6"),
    pytest.param((2, 4, 2, 3, 2), 2, id="NCDHW-G2"),
]


def _params(rng, shape, affine):
    """weight and bias of ``shape`` as float64 tensors requiring a gradient, or None, None."""
    if not affine:
        return None, None
    weight = torch.tensor(rng.uniform(0.5, 2.0, shape), requires_grad=True)
    bias = torch.tensor(rng.normal(size=shape), requires_grad=True)
    return weight, bias


def _arr(t):
    return None if t is None else as_numpy(t)


def _grads(fn, x, grad_y, weight, bias):
    params = [p for p in (weight, bias) if p is not None]
    return torch_forward_backward(lambda inp: fn(inp, weight, bias), x, grad_y, params)


# ============================================================================ NumPy
@pytest.mark.parametrize(("shape", "normalized_shape"), LN_CASES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_numpy_layer_norm_matches_torch(rng, shape, normalized_shape, affine):
    x = random_batch(rng, shape)
    grad_y = rng.standard_normal(shape)
    weight, bias = _params(rng, normalized_shape, affine)
    y_ref, gx_ref, gp_ref = _grads(lambda inp, w, b: F.layer_norm(inp, normalized_shape, w, b, 1e-4),
                                   torch.tensor(x), torch.tensor(grad_y), weight, bias)

    y = bnp.layer_norm(x, normalized_shape, _arr(weight), _arr(bias), eps=1e-4)
    gx, gw, gb = bnp.layer_norm_backward(grad_y, x, normalized_shape, _arr(weight), eps=1e-4)

    np.testing.assert_allclose(y, as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(gx, as_numpy(gx_ref), **TOL64)
    assert gw.shape == gb.shape == tuple(normalized_shape)
    if affine:
        np.testing.assert_allclose(gw, as_numpy(gp_ref[0]), **TOL64)
        np.testing.assert_allclose(gb, as_numpy(gp_ref[1]), **TOL64)


@pytest.mark.parametrize(("shape", "num_groups"), GN_CASES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_numpy_group_norm_matches_torch(rng, shape, num_groups, affine):
    x = random_batch(rng, shape)
    grad_y = rng.standard_normal(shape)
    weight, bias = _params(rng, (shape[1],), affine)
    y_ref, gx_ref, gp_ref = _grads(lambda inp, w, b: F.group_norm(inp, num_groups, w, b, 1e-4),
                                   torch.tensor(x), torch.tensor(grad_y), weight, bias)

    y = bnp.group_norm(x, num_groups, _arr(weight), _arr(bias), eps=1e-4)
    gx, gw, gb = bnp.group_norm_backward(grad_y, x, num_groups, _arr(weight), eps=1e-4)

    np.testing.assert_allclose(y, as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(gx, as_numpy(gx_ref), **TOL64)
    assert gw.shape == gb.shape == (shape[1],)
    if affine:
        np.testing.assert_allclose(gw, as_numpy(gp_ref[0]), **TOL64)
        np.testing.assert_allclose(gb, as_numpy(gp_ref[1]), **TOL64)


def test_numpy_layer_norm_accepts_an_int_normalized_shape(rng):
    x = random_batch(rng, (4, 7))
    np.testing.assert_array_equal(bnp.layer_norm(x, 7), bnp.layer_norm(x, (7,)))


def _central_differences(f, x, h=1e-6):
    """d f / d x for a scalar function of an array, by central differences."""
    grad = np.zeros_like(x)
    for i in np.ndindex(x.shape):
        old = x[i]
        x[i] = old + h
        up = f(x)
        x[i] = old - h
        down = f(x)
        x[i] = old
        grad[i] = (up - down) / (2 * h)
    return grad


@pytest.mark.parametrize("which", ["layer", "group"])
def test_numpy_backward_matches_central_finite_differences(rng, which):
    shape = (2, 4, 3, 2)
    x = random_batch(rng, shape)
    grad_y = rng.standard_normal(shape)
    weight, bias = rng.uniform(0.5, 2.0, 4), rng.normal(size=4)
    if which == "layer":
        weight = np.broadcast_to(weight[:, None, None], (4, 3, 2)).copy()
        bias = np.broadcast_to(bias[:, None, None], (4, 3, 2)).copy()

        def forward(x_, w_, b_):
            return bnp.layer_norm(x_, (4, 3, 2), w_, b_, eps=1e-3)

        gx, gw, gb = bnp.layer_norm_backward(grad_y, x, (4, 3, 2), weight, eps=1e-3)
    else:
        def forward(x_, w_, b_):
            return bnp.group_norm(x_, 2, w_, b_, eps=1e-3)

        gx, gw, gb = bnp.group_norm_backward(grad_y, x, 2, weight, eps=1e-3)

    np.testing.assert_allclose(gx, _central_differences(lambda v: np.sum(grad_y * forward(v, weight, bias)), x),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gw, _central_differences(lambda v: np.sum(grad_y * forward(x, v, bias)), weight),
                               rtol=1e-6, atol=1e-8)
    np.testing.assert_allclose(gb, _central_differences(lambda v: np.sum(grad_y * forward(x, weight, v)), bias),
                               rtol=1e-6, atol=1e-8)


@pytest.mark.parametrize("which", ["layer", "group"])
def test_numpy_float32_stays_float32_and_is_accurate(rng, which):
    # a large mean and a small spread: the statistics must not lose the spread in float32
    x64 = 1000.0 + random_batch(rng, (4, 6, 5, 5))
    x32 = x64.astype(np.float32)
    grad_y = rng.standard_normal(x64.shape).astype(np.float32)
    if which == "layer":
        y32 = bnp.layer_norm(x32, (6, 5, 5))
        y_ref = F.layer_norm(torch.tensor(x32, dtype=torch.float64), (6, 5, 5)).numpy()
        grads = bnp.layer_norm_backward(grad_y, x32, (6, 5, 5))
    else:
        y32 = bnp.group_norm(x32, 3)
        y_ref = F.group_norm(torch.tensor(x32, dtype=torch.float64), 3).numpy()
        grads = bnp.group_norm_backward(grad_y, x32, 3)
    assert y32.dtype == np.float32
    assert all(g.dtype == np.float32 for g in grads)
    np.testing.assert_allclose(y32, y_ref, rtol=0, atol=1e-5)


def test_numpy_rows_are_independent_of_the_rest_of_the_batch(rng):
    """An example's output does not depend on the other examples (unlike batch norm)."""
    x = random_batch(rng, (5, 4, 3, 3))
    for f in (lambda v: bnp.layer_norm(v, (4, 3, 3)), lambda v: bnp.group_norm(v, 2)):
        np.testing.assert_allclose(f(x)[:1], f(x[:1]), rtol=0, atol=1e-14)


# ============================================================================ identities
@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (2, 6, 7), (2, 3, 2, 3, 4)], ids=["NCHW", "NCL", "NCDHW"])
def test_group_norm_with_one_group_per_channel_is_instance_norm(rng, device, shape):
    c = shape[1]
    x = torch.tensor(random_batch(rng, shape), device=device)
    weight = torch.tensor(rng.uniform(0.5, 2.0, c), device=device)
    bias = torch.tensor(rng.normal(size=c), device=device)
    expected = F.instance_norm(x, weight=weight, bias=bias, eps=1e-4)
    torch.testing.assert_close(bnt.group_norm(x, c, weight, bias, eps=1e-4), expected, **TOL64)
    np.testing.assert_allclose(bnp.group_norm(as_numpy(x), c, as_numpy(weight), as_numpy(bias), eps=1e-4),
                               as_numpy(expected), **TOL64)


@pytest.mark.parametrize("shape", [(3, 4, 5, 5), (2, 6, 7), (2, 3, 2, 3, 4)], ids=["NCHW", "NCL", "NCDHW"])
def test_group_norm_with_one_group_is_layer_norm_over_all_but_the_batch(rng, device, shape):
    c = shape[1]
    x = torch.tensor(random_batch(rng, shape), device=device)
    weight = torch.tensor(rng.uniform(0.5, 2.0, c), device=device)
    bias = torch.tensor(rng.normal(size=c), device=device)
    # layer norm's element-wise gamma and beta, constant over the spatial positions of a channel
    expand = (c,) + (1,) * (len(shape) - 2)
    ln_weight = weight.reshape(expand).expand(shape[1:]).contiguous()
    ln_bias = bias.reshape(expand).expand(shape[1:]).contiguous()
    expected = F.layer_norm(x, shape[1:], ln_weight, ln_bias, eps=1e-4)
    torch.testing.assert_close(bnt.group_norm(x, 1, weight, bias, eps=1e-4), expected, **TOL64)
    torch.testing.assert_close(bnt.layer_norm(x, shape[1:], ln_weight, ln_bias, eps=1e-4), expected, **TOL64)
    np.testing.assert_allclose(bnp.group_norm(as_numpy(x), 1, as_numpy(weight), as_numpy(bias), eps=1e-4),
                               as_numpy(expected), **TOL64)
    # without affine parameters the two are the same function
    torch.testing.assert_close(bnt.group_norm(x, 1), F.layer_norm(x, shape[1:]), **TOL64)


def test_batch_of_one_group_norm_with_one_group_per_channel_equals_batch_norm(rng):
    """With N = 1, batch norm's per-channel statistics are instance norm's: all three agree."""
    x = random_batch(rng, (1, 4, 5, 5))
    np.testing.assert_allclose(bnp.group_norm(x, 4), bnp.batch_norm(x, training=True), **TOL64)


# ============================================================================ torch functional
@pytest.mark.parametrize(("shape", "normalized_shape"), LN_CASES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_torch_layer_norm_matches_torch(rng, device, shape, normalized_shape, affine):
    x = torch.tensor(random_batch(rng, shape), device=device)
    grad_y = torch.tensor(rng.standard_normal(shape), device=device)
    weight, bias = (p if p is None else p.detach().to(device).requires_grad_()
                    for p in _params(rng, normalized_shape, affine))
    y_ref, gx_ref, gp_ref = _grads(lambda inp, w, b: F.layer_norm(inp, normalized_shape, w, b, 1e-4),
                                   x, grad_y, weight, bias)
    y, gx, gp = _grads(lambda inp, w, b: bnt.layer_norm(inp, normalized_shape, w, b, 1e-4),
                       x, grad_y, weight, bias)
    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(gx, gx_ref, **TOL64)
    for got, expected in zip(gp, gp_ref, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)


@pytest.mark.parametrize(("shape", "num_groups"), GN_CASES)
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_torch_group_norm_matches_torch(rng, device, shape, num_groups, affine):
    x = torch.tensor(random_batch(rng, shape), device=device)
    grad_y = torch.tensor(rng.standard_normal(shape), device=device)
    weight, bias = (p if p is None else p.detach().to(device).requires_grad_()
                    for p in _params(rng, (shape[1],), affine))
    y_ref, gx_ref, gp_ref = _grads(lambda inp, w, b: F.group_norm(inp, num_groups, w, b, 1e-4),
                                   x, grad_y, weight, bias)
    y, gx, gp = _grads(lambda inp, w, b: bnt.group_norm(inp, num_groups, w, b, 1e-4),
                       x, grad_y, weight, bias)
    torch.testing.assert_close(y, y_ref, **TOL64)
    torch.testing.assert_close(gx, gx_ref, **TOL64)
    for got, expected in zip(gp, gp_ref, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)


def test_torch_group_norm_on_channels_last_input(rng, device):
    x = torch.tensor(random_batch(rng, (2, 6, 4, 5)), device=device).to(memory_format=torch.channels_last)
    torch.testing.assert_close(bnt.group_norm(x, 3), F.group_norm(x, 3), **TOL64)


@pytest.mark.parametrize("which", ["layer", "group"])
@pytest.mark.parametrize("affine", [True, False], ids=["affine", "no_affine"])
def test_gradcheck(rng, device, which, affine):
    shape = (2, 4, 3, 2)
    x = torch.tensor(random_batch(rng, shape), device=device, requires_grad=True)
    if which == "layer":
        weight, bias = _params(rng, shape[1:], affine)
        fn = lambda inp, w, b: bnt.layer_norm(inp, shape[1:], w, b, eps=1e-3)  # noqa: E731
    else:
        weight, bias = _params(rng, (shape[1],), affine)
        fn = lambda inp, w, b: bnt.group_norm(inp, 2, w, b, eps=1e-3)  # noqa: E731
    if affine:
        weight, bias = (p.detach().to(device).requires_grad_() for p in (weight, bias))
    assert torch.autograd.gradcheck(fn, (x, weight, bias))


@pytest.mark.parametrize("which", ["layer", "group"])
def test_torch_weight_and_bias_gradients_without_an_input_gradient(rng, device, which):
    x = torch.tensor(random_batch(rng, (3, 4, 2, 2)), device=device)
    shape = (4, 2, 2) if which == "layer" else (4,)
    weight = torch.tensor(rng.uniform(0.5, 2.0, shape), device=device, requires_grad=True)
    bias = torch.tensor(rng.normal(size=shape), device=device, requires_grad=True)
    ours = bnt.layer_norm if which == "layer" else bnt.group_norm
    theirs = F.layer_norm if which == "layer" else F.group_norm
    arg = shape if which == "layer" else 2
    got = torch.autograd.grad(ours(x, arg, weight, bias).square().sum(), [weight, bias])
    expected = torch.autograd.grad(theirs(x, arg, weight, bias).square().sum(), [weight, bias])
    for g, e in zip(got, expected, strict=True):
        torch.testing.assert_close(g, e, **TOL64)


@pytest.mark.parametrize("which", ["layer", "group"])
def test_torch_float32_stays_float32(rng, device, which):
    x = torch.tensor(random_batch(rng, (3, 4, 5, 5), dtype=np.float32), device=device, requires_grad=True)
    if which == "layer":
        y, y_ref = bnt.layer_norm(x, (4, 5, 5)), F.layer_norm(x, (4, 5, 5))
    else:
        y, y_ref = bnt.group_norm(x, 2), F.group_norm(x, 2)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, y_ref, rtol=1e-5, atol=1e-5)
    (gx,) = torch.autograd.grad(y.square().sum(), [x])
    assert gx.dtype == torch.float32


class _RecordOps(TorchDispatchMode):
    """Record the name of every aten op that runs."""

    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def test_never_calls_torchs_own_normalization_ops(rng, device):
    x = torch.tensor(random_batch(rng, (2, 4, 3, 3)), device=device, requires_grad=True)
    ln = bnt.LayerNorm((4, 3, 3), device=device, dtype=torch.float64)
    gn = bnt.GroupNorm(2, 4, device=device, dtype=torch.float64)
    with _RecordOps() as recorder:
        (ln(x).square().sum() + gn(x).square().sum()).backward()
    assert recorder.ops, "the recorder saw no ops at all"
    assert not [op for op in recorder.ops if "norm" in op], recorder.ops


# ============================================================================ modules and state dicts
LN_OPTIONS = [
    pytest.param({}, id="affine"),
    pytest.param({"bias": False}, id="no_bias"),
    pytest.param({"elementwise_affine": False}, id="no_affine"),
]
GN_OPTIONS = [
    pytest.param({}, id="affine"),
    pytest.param({"bias": False}, id="no_bias"),
    pytest.param({"affine": False}, id="no_affine"),
]


def _randomize(module, rng):
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.tensor(rng.normal(size=tuple(p.shape))))
    return module


@pytest.mark.parametrize("options", LN_OPTIONS)
def test_layer_norm_modules_match_torch_and_share_state_dicts(rng, options):
    ref = _randomize(torch.nn.LayerNorm((3, 4), eps=1e-4, dtype=torch.float64, **options), rng)
    ours = bnt.LayerNorm((3, 4), eps=1e-4, dtype=torch.float64, **options)
    assert list(ours.state_dict()) == list(ref.state_dict())
    assert [n for n, _ in ours.named_parameters()] == [n for n, _ in ref.named_parameters()]
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.tensor(random_batch(rng, (5, 2, 3, 4)))
    torch.testing.assert_close(ours(x), ref(x), **TOL64)
    # the same in eval mode: there are no batch statistics
    torch.testing.assert_close(ours.eval()(x), ours.train()(x), rtol=0, atol=0)
    # round trip through the NumPy layer
    layer = bnp.LayerNorm((3, 4), eps=1e-4, **options)
    layer.load_state_dict(ours.state_dict())
    np.testing.assert_allclose(layer(as_numpy(x)), as_numpy(ref(x)), **TOL64)
    back = torch.nn.LayerNorm((3, 4), eps=1e-4, dtype=torch.float64, **options)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()}, strict=True)
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, ref.state_dict()[k], rtol=0, atol=0)


@pytest.mark.parametrize("options", GN_OPTIONS)
def test_group_norm_modules_match_torch_and_share_state_dicts(rng, options):
    ref = _randomize(torch.nn.GroupNorm(2, 6, eps=1e-4, dtype=torch.float64, **options), rng)
    ours = bnt.GroupNorm(2, 6, eps=1e-4, dtype=torch.float64, **options)
    assert list(ours.state_dict()) == list(ref.state_dict())
    ours.load_state_dict(ref.state_dict(), strict=True)
    x = torch.tensor(random_batch(rng, (3, 6, 4, 4)))
    torch.testing.assert_close(ours(x), ref(x), **TOL64)
    torch.testing.assert_close(ours.eval()(x), ours.train()(x), rtol=0, atol=0)
    layer = bnp.GroupNorm(2, 6, eps=1e-4, **options)
    layer.load_state_dict(ours.state_dict())
    np.testing.assert_allclose(layer(as_numpy(x)), as_numpy(ref(x)), **TOL64)
    back = torch.nn.GroupNorm(2, 6, eps=1e-4, dtype=torch.float64, **options)
    back.load_state_dict({k: torch.from_numpy(v) for k, v in layer.state_dict().items()}, strict=True)
    for k, v in back.state_dict().items():
        torch.testing.assert_close(v, ref.state_dict()[k], rtol=0, atol=0)


def test_module_reprs_follow_torch():
    assert repr(bnt.GroupNorm(2, 6)) == repr(torch.nn.GroupNorm(2, 6))
    assert repr(bnt.LayerNorm([3, 4])) == repr(torch.nn.LayerNorm([3, 4]))
    assert repr(bnp.GroupNorm(2, 6)) == "GroupNorm(2, 6, eps=1e-05, affine=True, bias=True)"


@pytest.mark.parametrize("which", ["layer", "group"])
def test_numpy_layers_backward_matches_torch_modules(rng, which):
    if which == "layer":
        layer, ref = bnp.LayerNorm((4, 3, 3)), torch.nn.LayerNorm((4, 3, 3), dtype=torch.float64)
    else:
        layer, ref = bnp.GroupNorm(2, 4), torch.nn.GroupNorm(2, 4, dtype=torch.float64)
    _randomize(ref, rng)
    layer.load_state_dict(ref.state_dict())
    x = random_batch(rng, (3, 4, 3, 3))
    grad_y = rng.standard_normal(x.shape)
    y_ref, gx_ref, (gw_ref, gb_ref) = torch_forward_backward(ref, torch.tensor(x), torch.tensor(grad_y),
                                                             [ref.weight, ref.bias])
    np.testing.assert_allclose(layer(x), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(layer.backward(grad_y), as_numpy(gx_ref), **TOL64)
    np.testing.assert_allclose(layer.grad_weight, as_numpy(gw_ref), **TOL64)
    np.testing.assert_allclose(layer.grad_bias, as_numpy(gb_ref), **TOL64)


def test_numpy_layer_without_bias_has_no_bias_gradient(rng):
    layer = bnp.GroupNorm(2, 4, bias=False)
    x = random_batch(rng, (2, 4, 3))
    layer(x)
    layer.backward(np.ones_like(x))
    assert layer.grad_bias is None and layer.grad_weight.shape == (4,)
    assert list(layer.state_dict()) == ["weight"]


# ============================================================================ bad input
NUMPY_BAD_CALLS = [
    (lambda x: bnp.layer_norm(x, (4,)), ValueError, r"normalized_shape=\(4,\) must be the last 1 axes"),
    (lambda x: bnp.layer_norm(x, (2, 3, 3)), ValueError, "must be the last 3 axes"),
    (lambda x: bnp.layer_norm(x, ()), ValueError, "non-empty shape"),
    (lambda x: bnp.layer_norm(x, (3, 0)), ValueError, "positive sizes"),
    (lambda x: bnp.layer_norm(x, 3.0), TypeError, "normalized_shape must be an int or a sequence"),
    (lambda x: bnp.layer_norm(x, (3,), weight=np.ones(4)), ValueError, r"weight has shape \(4,\)"),
    (lambda x: bnp.layer_norm(x, (3,), eps=0.0), ValueError, "eps must be"),
    (lambda x: bnp.layer_norm(x.astype(int), (3,)), TypeError, "floating-point"),
    (lambda x: bnp.layer_norm_backward(x[:1], x, (3,)), ValueError, "grad_y has shape"),
    (lambda x: bnp.group_norm(x, 3), ValueError, r"num_channels \(4\) must be divisible by num_groups \(3\)"),
    (lambda x: bnp.group_norm(x, 0), ValueError, "num_groups must be positive"),
    (lambda x: bnp.group_norm(x, 2.0), TypeError, "num_groups must be an int"),
    (lambda x: bnp.group_norm(x[0, 0, 0], 1), ValueError, "expected an input of rank >= 2"),
    (lambda x: bnp.group_norm(x, 2, bias=np.zeros(3)), ValueError, r"bias has shape \(3,\)"),
    (lambda x: bnp.group_norm(x, 2, eps=-1.0), ValueError, "eps must be"),
    (lambda x: bnp.group_norm_backward(x, x.astype(np.int64), 2), TypeError, "floating-point"),
    (lambda x: bnp.GroupNorm(3, 4), ValueError, "must be divisible"),
    (lambda x: bnp.GroupNorm(2, 0), ValueError, "num_channels must be a positive int"),
    (lambda x: bnp.GroupNorm(2, 6)(x), ValueError, "input has 4 channels"),
    (lambda x: bnp.LayerNorm((3,), eps=0)(x), ValueError, "eps must be"),
    (lambda x: bnp.LayerNorm((4, 3))(x), ValueError, "must be the last 2 axes"),
    (lambda x: bnp.LayerNorm(3).backward(x), RuntimeError, "before forward"),
]


@pytest.mark.parametrize(("call", "error", "match"), NUMPY_BAD_CALLS)
def test_numpy_bad_input_raises_a_clear_error(rng, call, error, match):
    x = random_batch(rng, (2, 4, 3, 3))
    with pytest.raises(error, match=match):
        call(x)


TORCH_BAD_CALLS = [
    (lambda x: bnt.layer_norm(x, (4,)), ValueError, "must be the last 1 axes"),
    (lambda x: bnt.layer_norm(x, (3,), weight=torch.ones(4, dtype=x.dtype)), ValueError, "weight has shape"),
    (lambda x: bnt.layer_norm(x.long(), (3,)), TypeError, "floating-point"),
    (lambda x: bnt.layer_norm(as_numpy(x), (3,)), TypeError, "must be a torch.Tensor"),
    (lambda x: bnt.group_norm(x, 3), ValueError, "must be divisible"),
    (lambda x: bnt.group_norm(x, 2, eps=0.0), ValueError, "eps must be"),
    (lambda x: bnt.group_norm(x[0, 0, 0], 1), ValueError, "rank >= 2"),
    (lambda x: bnt.GroupNorm(3, 4), ValueError, "must be divisible"),
    (lambda x: bnt.GroupNorm(2, 6)(x), ValueError, "input has 4 channels"),
    (lambda x: bnt.LayerNorm((4, 3))(x), ValueError, "must be the last 2 axes"),
    (lambda x: bnt.LayerNorm((3,), eps=-1.0), ValueError, "eps must be"),
]


@pytest.mark.parametrize(("call", "error", "match"), TORCH_BAD_CALLS)
def test_torch_bad_input_raises_a_clear_error(rng, call, error, match):
    x = torch.tensor(random_batch(rng, (2, 4, 3, 3)))
    with pytest.raises(error, match=match):
        call(x)


def test_numpy_layer_refuses_a_mismatched_state_dict_and_changes_nothing():
    layer = bnp.GroupNorm(2, 4)
    before = layer.state_dict()
    with pytest.raises(KeyError, match="missing"):
        layer.load_state_dict({"weight": np.zeros(4)})
    with pytest.raises(ValueError, match=r"bias has shape \(3,\)"):
        layer.load_state_dict({"weight": np.zeros(4), "bias": np.zeros(3)})
    for k, v in layer.state_dict().items():
        np.testing.assert_array_equal(v, before[k])
