"""Memory layouts in bnkit.numpy: a permuted input is read in place, any other is copied once.

A channels-last view of NCHW memory (``np.moveaxis(x, 1, -1)``) is not contiguous,
but its axes permuted to memory order are: bnkit reads it as it lies, without a
copy, and writes the output in the same layout (as torch preserves a tensor's
memory format). The copies are counted with :mod:`tracemalloc`, which sees NumPy's
array allocations: the forward's peak is the output plus cache-sized blocks; one
copy of the input would add 1.0 to the ratios below, and the layer used to make
two in its forward and three in its backward.
"""

import tracemalloc

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import bnkit.numpy as bnp
from bn_testing import TOL64, as_numpy, random_batch, torch_forward_backward

SHAPE = (32, 16, 32, 64)          # 8 MB of float64: many 512 kB blocks
C = SHAPE[1]


def _peak_over_input(fn, x):
    """Peak memory allocated while ``fn()`` runs, in units of ``x.nbytes``."""
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / x.nbytes
    finally:
        tracemalloc.stop()


def test_channels_last_view_is_not_copied(rng):
    x_nchw = random_batch(rng, SHAPE)
    x = np.moveaxis(x_nchw, 1, -1)                    # NHWC, NCHW in memory
    grad_y = np.moveaxis(rng.standard_normal(SHAPE), 1, -1)
    assert not x.flags.c_contiguous
    layer = bnp.BatchNorm(C, channel_axis=-1)
    layer(x)                                          # warm up
    forward_peak = _peak_over_input(lambda: layer(x), x)
    backward_peak = _peak_over_input(lambda: layer.backward(grad_y), x)
    assert forward_peak < 1.2, forward_peak           # the output, and blocks
    assert backward_peak < 1.5, backward_peak         # the gradient, and blocks


def test_output_keeps_the_inputs_memory_layout(rng):
    x = np.moveaxis(random_batch(rng, (4, C, 3, 5)), 1, -1)
    y = bnp.batch_norm(x, training=True, channel_axis=-1)
    grad_x, _, _ = bnp.batch_norm_backward(np.ones_like(x), x, channel_axis=-1)
    for out in (y, grad_x):
        assert out.shape == x.shape
        assert np.moveaxis(out, -1, 1).flags.c_contiguous       # NCHW memory, like x


@pytest.mark.parametrize("layout", ["moveaxis", "strided", "reversed", "fortran",
                                    "grad_in_another_layout"])
def test_any_layout_matches_torch(rng, layout):
    """Permuted, sliced, reversed and Fortran-ordered inputs: the same numbers as torch."""
    full = random_batch(rng, (6, C, 4, 10))
    grad_full = rng.standard_normal(full.shape)
    x_nchw = {"strided": full[:, :, :, ::2], "reversed": full[::-1]}.get(layout, full)
    grad_nchw = grad_full[:, :, :, ::2] if layout == "strided" else grad_full[:x_nchw.shape[0]]
    axis = -1 if layout in ("moveaxis", "grad_in_another_layout") else 1
    x = np.moveaxis(x_nchw, 1, -1) if axis == -1 else x_nchw
    grad_y = np.moveaxis(grad_nchw, 1, -1) if axis == -1 else grad_nchw
    if layout == "fortran":
        x, grad_y = np.asfortranarray(x), np.asfortranarray(grad_y)
    if layout == "grad_in_another_layout":
        grad_y = np.ascontiguousarray(grad_y)
    weight = torch.tensor(rng.uniform(0.5, 2.0, C), requires_grad=True)
    bias = torch.tensor(rng.normal(size=C), requires_grad=True)
    running_mean, running_var = np.zeros(C), np.ones(C)
    torch_mean, torch_var = torch.zeros(C, dtype=torch.float64), torch.ones(C,
                                                                           dtype=torch.float64)
    y_ref, gx_ref, (gw_ref, gb_ref) = torch_forward_backward(
        lambda t: F.batch_norm(t, torch_mean, torch_var, weight, bias, training=True),
        torch.tensor(np.ascontiguousarray(x_nchw)), torch.tensor(np.ascontiguousarray(grad_nchw)),
        [weight, bias])

    w, b = as_numpy(weight), as_numpy(bias)
    y = bnp.batch_norm(x, running_mean, running_var, w, b, training=True, channel_axis=axis)
    gx, gw, gb = bnp.batch_norm_backward(grad_y, x, w, channel_axis=axis)
    back = (lambda a: np.moveaxis(a, -1, 1)) if axis == -1 else (lambda a: a)
    np.testing.assert_allclose(back(y), as_numpy(y_ref), **TOL64)
    np.testing.assert_allclose(back(gx), as_numpy(gx_ref), **TOL64)
    np.testing.assert_allclose(gw, as_numpy(gw_ref), **TOL64)
    np.testing.assert_allclose(gb, as_numpy(gb_ref), **TOL64)
    np.testing.assert_allclose(running_mean, as_numpy(torch_mean), **TOL64)
    np.testing.assert_allclose(running_var, as_numpy(torch_var), **TOL64)

    # eval mode and its backward, with the running statistics just computed
    y_eval = bnp.batch_norm(x, running_mean, running_var, w, b, channel_axis=axis)
    gx_eval, _, _ = bnp.batch_norm_eval_backward(grad_y, x, running_mean, running_var, w,
                                                 channel_axis=axis)
    expected = F.batch_norm(torch.tensor(np.ascontiguousarray(x_nchw)), torch_mean, torch_var,
                            weight.detach(), bias.detach())
    np.testing.assert_allclose(back(y_eval), as_numpy(expected), **TOL64)
    scale = (w / np.sqrt(running_var + 1e-5)).reshape(1, C, 1, 1)
    np.testing.assert_allclose(back(gx_eval), grad_nchw * scale, **TOL64)
