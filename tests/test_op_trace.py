"""bnkit.op_trace: the recorder sees what each operation reads and writes, and the cache model
counts memory traffic the way bnkit.roofline's byte model does, checked on functions whose
passes are known by construction (and on bnkit.torch, whose counts Chapter 9 quotes)."""

import pytest
import torch
import torch.nn.functional as F

import bnkit.torch as bnt
from bnkit import op_trace
from bnkit.torch import kernels

MiB = 1 << 20


def _range(t):
    return t.data_ptr(), t.data_ptr() + t.numel() * t.element_size()


def _single(ops):
    computing = op_trace.compute_ops(ops)
    assert len(computing) == 1
    return computing[0]


def test_a_functional_op_reads_its_inputs_and_writes_a_fresh_output():
    x, w = torch.randn(8, 4), torch.randn(4)
    y, ops = op_trace.record(torch.mul, x, w)
    op = _single(ops)
    assert op.name == "mul.Tensor"
    assert set(op.reads) == {_range(x), _range(w)}
    assert op.writes == (_range(y),)


def test_an_out_argument_is_written_not_read():
    a, b, out = torch.randn(16), torch.randn(16), torch.empty(16)
    _, ops = op_trace.record(torch.add, a, b, out=out)
    op = _single(ops)
    assert set(op.reads) == {_range(a), _range(b)}
    assert op.writes == (_range(out),)


def test_an_in_place_op_reads_and_writes_its_self():
    a = torch.randn(16)
    _, ops = op_trace.record(a.mul_, 2.0)
    op = _single(ops)
    assert op.reads == (_range(a),) and op.writes == (_range(a),)


def test_views_and_allocations_compute_nothing():
    x = torch.randn(8, 4)
    _, ops = op_trace.record(lambda: (x.view(-1), x[2:], x.t(), torch.empty(3),
                                      torch.empty_like(x)))
    assert len(ops) == 5 and op_trace.compute_ops(ops) == []


def test_a_strided_view_spans_from_its_first_to_its_last_element():
    x = torch.randn(10, 6)
    _, ops = op_trace.record(torch.neg, x[2:5, 1:3])
    start = x.data_ptr() + (2 * 6 + 1) * 4
    assert _single(ops).reads == ((start, start + (2 * 6 + 1 + 1) * 4),)


def test_passes_over_counts_whole_arrays_and_fractions_of_blocks():
    x = torch.randn(1000, 100)
    nbytes = x.numel() * 4
    _, ops = op_trace.record(lambda: (x + 1).mul_(2))
    assert op_trace.passes_over(ops, nbytes) == pytest.approx(2.0)
    _, ops = op_trace.record(lambda: [x[i:i + 250].sum(0) for i in range(0, 1000, 250)])
    assert op_trace.passes_over(ops, nbytes) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="nbytes"):
        op_trace.passes_over(ops, 0)


def test_memory_traffic_of_two_passes_depends_on_whether_the_temporary_stays_in_cache():
    x = torch.randn(MiB)                                   # 4 MiB
    nbytes = x.numel() * 4
    _, ops = op_trace.record(lambda: (x + 1) * 2)          # x -> t -> y
    read, written = op_trace.memory_traffic(ops, cache_bytes=MiB // 4)
    # the cache is far smaller than t: t is written out and read back
    assert read == pytest.approx(2 * nbytes, abs=3 * 4096)
    assert written == pytest.approx(2 * nbytes, abs=3 * 4096)
    read, written = op_trace.memory_traffic(ops, cache_bytes=64 * MiB)
    assert read == pytest.approx(nbytes, abs=3 * 4096)     # t found in cache
    assert written == pytest.approx(2 * nbytes, abs=3 * 4096)   # t and y flushed at the end


def test_a_blocked_loop_reads_its_input_once_when_a_block_fits_in_the_cache():
    x = torch.randn(256, 4096)                             # 4 MiB, blocks of 256 KiB
    out = torch.empty_like(x)
    nbytes = x.numel() * 4

    def blocked():
        for i in range(0, 256, 16):
            torch.mul(x[i:i + 16], 2.0, out=out[i:i + 16]).add_(1.0).mul_(3.0)

    _, ops = op_trace.record(blocked)
    assert op_trace.passes_over(ops, nbytes) == pytest.approx(3.0)
    read, written = op_trace.memory_traffic(ops, cache_bytes=MiB)
    assert read == pytest.approx(nbytes, abs=3 * 4096)
    assert written == pytest.approx(nbytes, abs=3 * 4096)


def test_memory_traffic_refuses_a_cache_smaller_than_a_line():
    with pytest.raises(ValueError, match="line_bytes"):
        op_trace.memory_traffic([], cache_bytes=100, line_bytes=4096)


def test_replay_runs_the_same_operations_again():
    x, w = torch.randn(5, 3), torch.randn(3)
    y, ops = op_trace.record(lambda: torch.addcmul(w, x, w).neg(), keep_calls=True)
    again, replayed_ops = op_trace.record(op_trace.replay, ops)
    torch.testing.assert_close(again, y)
    assert [o.name for o in replayed_ops] == [o.name for o in ops]


def test_replay_works_on_its_own_tensors_so_in_place_ops_do_not_drift():
    x = torch.randn(5, 3)
    y, ops = op_trace.record(lambda: (x * 2).view(-1).add_(1).mul_(3), keep_calls=True)
    for _ in range(3):
        torch.testing.assert_close(op_trace.replay(ops), (x * 2 + 1).view(-1) * 3)
    torch.testing.assert_close(y, (x * 2 + 1).view(-1) * 3)     # the recorded result untouched
    _, no_calls = op_trace.record(torch.neg, x)
    with pytest.raises(ValueError, match="keep_calls"):
        op_trace.replay(no_calls)


def _training_step_ops(fn, x, g):
    c = x.shape[1]
    weight = torch.ones(c, requires_grad=True)
    bias = torch.zeros(c, requires_grad=True)
    x_in = x.detach().requires_grad_()
    y, forward = op_trace.record(fn, x_in, torch.zeros(c), torch.ones(c), weight, bias,
                                 training=True)
    _, backward = op_trace.record(torch.autograd.grad, y, (x_in, weight, bias), g)
    return forward, backward


def test_chapter_9_counts_native_torch_is_one_operation_each_way():
    x, g = torch.randn(60, 100), torch.randn(60, 100)
    forward, backward = _training_step_ops(F.batch_norm, x, g)
    assert len(op_trace.compute_ops(forward)) == len(op_trace.compute_ops(backward)) == 1


def test_chapter_9_counts_bnkit_torch_small_path_is_12_and_6_operations():
    x, g = torch.randn(60, 100), torch.randn(60, 100)
    assert kernels.saves_xhat(x)
    forward, backward = _training_step_ops(bnt.batch_norm, x, g)
    assert len(op_trace.compute_ops(forward)) == 12
    assert len(op_trace.compute_ops(backward)) == 6


@pytest.mark.parametrize("channels_last", [False, True])
def test_chapter_9_counts_bnkit_torch_large_path_makes_the_models_passes(channels_last):
    saved = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        x, g = torch.randn(16, 64, 32, 32), torch.randn(16, 64, 32, 32)     # 4 MiB, 8 blocks
        if channels_last:
            x, g = (t.contiguous(memory_format=torch.channels_last) for t in (x, g))
        forward, backward = _training_step_ops(bnt.batch_norm, x, g)
    finally:
        torch.set_num_threads(saved)
    nbytes = x.numel() * 4
    cache = 4 * kernels.BLOCK_BYTES
    for ops, reads in ((forward, 2), (backward, 4)):
        read, written = op_trace.memory_traffic(ops, cache)
        # within the cache's size (the work buffer left dirty, the first block's shift)
        assert abs(read / nbytes - reads) < 0.1
        assert abs(written / nbytes - 1) <= cache / nbytes + 0.01
    in_cache = (op_trace.passes_over(forward, nbytes), op_trace.passes_over(backward, nbytes))
    assert [round(p) for p in in_cache] == ([5, 6] if channels_last else [6, 7])


def test_replayer_returns_the_counterpart_of_a_recorded_tensor_and_refuses_a_stranger():
    x = torch.randn(4, 3)
    _, ops = op_trace.record(lambda: (x + 1, x * 2), keep_calls=True)
    first = [op for op in ops if op.name == "add.Tensor"][0].call[3]
    torch.testing.assert_close(op_trace.replayer(ops, result=first)(), x + 1)
    with pytest.raises(ValueError, match="not a tensor produced"):
        op_trace.replayer(ops, result=torch.zeros(1))
