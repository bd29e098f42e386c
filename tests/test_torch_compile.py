"""bnkit.torch under torch.compile: no graph break caused by bnkit, the results of eager mode.

Each compilation with Inductor costs 15-40 s, so there is one Inductor case
(training steps of a small ImageNet-like stem, ``momentum=None`` included);
eval mode and autocast use the ``aot_eager`` backend, which traces the same
graphs (forward and backward) without generating code. Graph breaks are
counted with ``torch._dynamo.explain``. Oracles: the same model in eager mode,
and torch's own BatchNorm2d.
"""

import pytest
import torch
import torch._dynamo
from torch import nn

import bnkit.torch as bnt

# Compiled kernels sum in other orders than eager ones: the models run in float64, where
# that costs round-off only (float32 would leave ~1e-3 relative noise on gradients that
# batch norm makes cancel, such as a bias in front of it).
TOL = dict(rtol=1e-9, atol=1e-11)


def _stem(bn_cls):
    """conv 7x7 -> BN -> ReLU -> max-pool -> conv 3x3 -> BN (cumulative average)."""
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 8, 7, stride=2, padding=3, bias=False), bn_cls(8),
                         nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(8, 8, 3, padding=1, bias=False),
                         bn_cls(8, momentum=None)).double()


def _step(model, x):
    y = model(x)
    y.square().sum().backward()
    grads = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    return y.detach(), grads


def _assert_same(a, b, what):
    ya, ga = a
    yb, gb = b
    torch.testing.assert_close(ya, yb, **TOL, msg=lambda m: f"{what} output: {m}")
    for i, (p, q) in enumerate(zip(ga, gb, strict=True)):
        torch.testing.assert_close(p, q, **TOL, msg=lambda m: f"{what} grad {i}: {m}")


def _assert_same_buffers(a, b):
    for (name, u), v in zip(a.named_buffers(), b.buffers(), strict=True):
        torch.testing.assert_close(u, v, **TOL, msg=lambda m: f"{name}: {m}")


def _input(seed, n=4):
    return torch.randn(n, 3, 32, 32, generator=torch.Generator().manual_seed(seed),
                       dtype=torch.float64)


def test_no_graph_break_and_compiled_training_equals_eager():
    torch._dynamo.reset()
    x = _input(1)
    explanation = torch._dynamo.explain(_stem(bnt.BatchNorm2d))(x)
    assert explanation.graph_break_count == 0, explanation.break_reasons
    assert explanation.graph_count == 1

    torch._dynamo.reset()
    eager, compiled, native = _stem(bnt.BatchNorm2d), _stem(bnt.BatchNorm2d), _stem(nn.BatchNorm2d)
    run = torch.compile(compiled)                   # Inductor
    for step in range(3):
        x = _input(2 + step)
        want, got, torch_ = _step(eager, x), _step(run, x), _step(native, x)
        _assert_same(got, want, f"step {step}, eager bnkit")
        _assert_same(got, torch_, f"step {step}, torch")
    _assert_same_buffers(compiled, eager)
    _assert_same_buffers(compiled, native)
    assert int(compiled[5].num_batches_tracked) == 3


@pytest.mark.parametrize("autocast", [False, True], ids=["float64", "autocast-bf16"])
def test_eval_and_autocast_trace_without_graph_breaks(autocast):
    torch._dynamo.reset()
    eager, compiled = _stem(bnt.BatchNorm2d), _stem(bnt.BatchNorm2d)
    if autocast:                        # the float32 model autocast is made for
        eager, compiled = eager.float(), compiled.float()
    dtype = next(eager.parameters()).dtype
    with torch.no_grad():               # some running statistics first
        for model in (eager, compiled):
            model(_input(5, 8).to(dtype))
            model.eval()
    x = _input(6).to(dtype)
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
        explanation = torch._dynamo.explain(compiled)(x)
        assert explanation.graph_break_count == 0, explanation.break_reasons
        run = torch.compile(compiled, backend="aot_eager")
        got, want = _step(run, x), _step(eager, x)
    assert got[0].dtype == (torch.bfloat16 if autocast else torch.float64)
    if autocast:                        # the same bfloat16 operations, traced
        ya, yb = got[0], want[0]
        torch.testing.assert_close(ya, yb, rtol=2 ** -7, atol=2 ** -7)
    else:
        _assert_same(got, want, "eval")
    _assert_same_buffers(compiled, eager)
