"""bnkit.torch's speed paths compute the same thing: small (x̂ kept), blocked, huge-page outputs.

The oracle is torch's own batch norm in float64; the paths are also compared
with each other by moving the block size (``kernels.BLOCK_BYTES``), so that
the same input goes once through the small path and once through the blocked one.
"""

import pytest
import torch
import torch.nn.functional as F
from torch.utils._python_dispatch import TorchDispatchMode

import bnkit.torch as bnt
from bnkit.torch import kernels
from bn_testing import TOL64, random_batch


class _RecordOps(TorchDispatchMode):
    def __init__(self):
        super().__init__()
        self.ops = []

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.ops.append(str(func))
        return func(*args, **(kwargs or {}))


def _train_and_grads(fn, x, g, weight, bias, stats):
    x = x.detach().clone().requires_grad_(True)
    y = fn(x, *stats, weight, bias, training=True, momentum=0.3)
    return (y.detach(), *torch.autograd.grad(y, (x, weight, bias), g))


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, torch.channels_last],
                         ids=["NCHW", "NHWC"])
def test_large_input_with_huge_page_outputs_matches_torch(rng, memory_format):
    """20 MB of float64: blocked statistics and gradients, outputs above HUGE_PAGE_BYTES."""
    shape = (24, 64, 40, 40)
    x = torch.tensor(random_batch(rng, shape)).contiguous(memory_format=memory_format)
    g = torch.tensor(rng.standard_normal(shape)).contiguous(memory_format=memory_format)
    assert x.numel() * x.element_size() >= kernels.HUGE_PAGE_BYTES
    weight = torch.tensor(rng.uniform(0.5, 2.0, 64), requires_grad=True)
    bias = torch.tensor(rng.normal(size=64), requires_grad=True)
    ours_stats = [torch.zeros(64, dtype=torch.float64), torch.ones(64, dtype=torch.float64)]
    ref_stats = [s.clone() for s in ours_stats]
    with _RecordOps() as recorder:
        ours = _train_and_grads(bnt.batch_norm, x, g, weight, bias, ours_stats)
    want = _train_and_grads(F.batch_norm, x, g, weight, bias, ref_stats)
    for got, expected in zip(ours, want, strict=True):
        torch.testing.assert_close(got, expected, rtol=1e-10, atol=1e-10)
    for got, expected in zip(ours_stats, ref_stats, strict=True):
        torch.testing.assert_close(got, expected, **TOL64)
    for t in ours[:2]:                      # the output and the input gradient
        assert t.is_contiguous(memory_format=memory_format)
    assert not [op for op in recorder.ops if "batch_norm" in op]
    # eval mode, the same outputs
    y = bnt.batch_norm(x, *ours_stats, weight, bias, training=False)
    torch.testing.assert_close(y, F.batch_norm(x, *ref_stats, weight, bias, training=False),
                               **TOL64)


@pytest.mark.parametrize("shape", [(40, 6), (12, 5, 7), (8, 6, 5, 4), (6, 4, 3, 4, 3)], ids=str)
@pytest.mark.parametrize("channels_last", [False, True], ids=["first", "last"])
def test_small_path_equals_blocked_path(rng, monkeypatch, shape, channels_last):
    """The same input through the small path (x̂ kept) and through blocks of one sample."""
    x = torch.tensor(random_batch(rng, shape))
    g = torch.tensor(rng.standard_normal(shape))
    if channels_last:
        if x.dim() not in (4, 5):
            pytest.skip("channels_last exists for 4-D and 5-D tensors")
        fmt = torch.channels_last if x.dim() == 4 else torch.channels_last_3d
        x, g = x.contiguous(memory_format=fmt), g.contiguous(memory_format=fmt)
    c = shape[1]
    weight = torch.tensor(rng.uniform(0.5, 2.0, c), requires_grad=True)
    bias = torch.tensor(rng.normal(size=c), requires_grad=True)
    results = []
    for block_bytes in (kernels.BLOCK_BYTES, 1):      # 1 byte: one sample per block
        monkeypatch.setattr(kernels, "BLOCK_BYTES", block_bytes)
        assert kernels.saves_xhat(x) == (block_bytes > 1)
        stats = [torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)]
        results.append((*_train_and_grads(bnt.batch_norm, x, g, weight, bias, stats), *stats))
    for small, blocked in zip(*results, strict=True):
        torch.testing.assert_close(small, blocked, **TOL64)


def test_new_output_is_an_empty_like_tensor():
    for like in (torch.zeros(3, 4), torch.zeros(2, 3, 4, 5).to(memory_format=torch.channels_last),
                 torch.zeros(2, 1 << 21)):            # the last one gets the huge-page hint
        out = kernels.new_output(like)
        assert out.shape == like.shape and out.stride() == like.stride()
        assert out.dtype == like.dtype
        out.fill_(2.0)
        assert bool((out == 2.0).all())
    assert kernels.new_output(torch.zeros(2, 3), dtype=torch.float64).dtype == torch.float64
