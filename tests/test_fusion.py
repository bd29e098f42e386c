"""bnkit.fusion: the plain formula against torch's batch norm (the oracle), in float64,
forward, running statistics and all three gradients. torch.compile is not run here (a first
compile costs tens of seconds); Chapter 9 checks the compiled results against native."""

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from bnkit import fusion


def _inputs(shape, seed=0):
    rng = np.random.default_rng(seed)
    c = shape[1]
    x = torch.from_numpy(rng.normal(2.0, 3.0, size=shape))
    g = torch.from_numpy(rng.normal(size=shape))
    w = torch.from_numpy(rng.uniform(0.5, 2.0, c))
    b = torch.from_numpy(rng.normal(size=c))
    rm = torch.from_numpy(rng.normal(size=c))
    rv = torch.from_numpy(rng.uniform(0.5, 2.0, c))
    return x, g, w, b, rm, rv


def _run(fn, x, g, w, b, rm, rv, training, **kwargs):
    x = x.clone().requires_grad_()
    w, b = w.clone().requires_grad_(), b.clone().requires_grad_()
    rm, rv = rm.clone(), rv.clone()
    y = fn(x, rm, rv, w, b, training, **kwargs)
    return (y, *torch.autograd.grad(y, (x, w, b), g), rm, rv)


@pytest.mark.parametrize("shape", [(7, 3), (4, 5, 6), (3, 4, 5, 6), (2, 3, 2, 3, 4)])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize(("ours", "theirs"), [
    (fusion.batch_norm_formula, F.batch_norm),
    (fusion.batch_norm_relu_formula, fusion.batch_norm_relu),
])
def test_formula_matches_torch(shape, training, ours, theirs):
    args = _inputs(shape)
    for a, e in zip(_run(ours, *args, training, momentum=0.3, eps=1e-3),
                    _run(theirs, *args, training, momentum=0.3, eps=1e-3)):
        torch.testing.assert_close(a, e, rtol=1e-10, atol=1e-12)


def test_batch_norm_relu_is_relu_of_torch_batch_norm():
    x, _, w, b, rm, rv = _inputs((6, 4, 3))
    y = fusion.batch_norm_relu(x, rm.clone(), rv.clone(), w, b, True)
    expected = F.batch_norm(x, rm.clone(), rv.clone(), w, b, True).clamp_min(0)
    torch.testing.assert_close(y, expected, rtol=0, atol=0)
    assert (y == 0).any() and (y > 0).any()


def test_formula_without_affine_or_running_statistics():
    x = _inputs((8, 3, 4))[0]
    torch.testing.assert_close(fusion.batch_norm_formula(x, None, None, training=True),
                               F.batch_norm(x, None, None, training=True), rtol=1e-12, atol=1e-12)


def test_formula_keeps_a_channels_last_float32_input_float32():
    x = torch.randn(4, 3, 5, 5).contiguous(memory_format=torch.channels_last)
    y = fusion.batch_norm_formula(x, None, None, training=True)
    assert y.dtype == torch.float32
    torch.testing.assert_close(y, F.batch_norm(x, None, None, training=True),
                               rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize(("x", "with_var", "training", "match"), [
    (torch.randn(5), True, True, "shape"),
    (torch.randn(1, 3), True, True, "more than 1 value"),
    (torch.randn(4, 3), False, False, "running_mean and running_var"),
])
def test_formula_refuses_bad_input_and_changes_no_state(x, with_var, training, match):
    rm, rv = torch.zeros(3), torch.ones(3)
    with pytest.raises(ValueError, match=match):
        fusion.batch_norm_formula(x, rm, rv if with_var else None, training=training)
    assert torch.equal(rm, torch.zeros(3)) and torch.equal(rv, torch.ones(3))


GENERATED = """
cpp_fused_add_copy__lerp_mul_relu_rsqrt_sub_threshold_backward_var_mean_view_0 = async_compile.cpp_pybinding(['float*', 'const float*', 'const float*', 'float*', 'bool*'], r'''
#include <torch/csrc/inductor/cpp_prefix.h>
extern "C" void kernel(float* in_out_ptr0, const float* in_ptr0)
''')
async_compile.wait(globals())
cpp_fused_sum_1 = async_compile.cpp_pybinding(['const bool*', 'const float*'], r'''
''')
"""


def test_generated_kernels_reads_names_and_argument_types_in_order():
    kernels = fusion.generated_kernels(GENERATED)
    assert kernels == [
        fusion.Kernel("cpp_fused_add_copy__lerp_mul_relu_rsqrt_sub_threshold_backward_var_mean_view_0",
                      ("float*", "const float*", "const float*", "float*", "bool*")),
        fusion.Kernel("cpp_fused_sum_1", ("const bool*", "const float*")),
    ]
    assert fusion.generated_kernels("def call(args):\n    return ()") == []


def test_chapter_9_shows_the_signature_and_body_of_the_formula():
    # notebooks/09_speed.ipynb includes batch_norm_formula with `:lines: 1-4,40-`
    import inspect
    lines = inspect.getsource(fusion.batch_norm_formula).splitlines()
    assert lines[3].rstrip().endswith("-> torch.Tensor:")
    assert lines[38].strip() == '"""' and lines[39].strip() == "if input.dim() < 2:"
