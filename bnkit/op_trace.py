r"""What a torch function does, op by op: the operations it dispatches and the bytes they move.

Chapter 9 counts passes over memory in a model (:mod:`bnkit.roofline`); this
module counts them in code. :func:`record` runs a function under a
:class:`~torch.utils._python_dispatch.TorchDispatchMode` and keeps one
:class:`Op` per ATen operation it dispatches -- forward and, when the function
calls :func:`torch.autograd.grad` or ``backward()``, the backward too -- with the
byte ranges of memory each one reads and writes. From that list:

* :func:`compute_ops`: the operations that compute (views, allocations and
  other metadata operations left out) -- what a call pays per operation;
* :func:`passes_over`: how many times the operations go over data the size of
  an array, in cache or not (an operation on a block of rows counts the
  block's fraction of the array);
* :func:`memory_traffic`: the bytes that come from and go to memory under a
  simple cache model -- a least-recently-used cache of ``cache_bytes``, in lines
  of ``line_bytes``, that a read fills and a write marks dirty (no read for
  ownership); a dirty line costs its write when it leaves the cache, or at the
  end. Divided by the size of ``x``, these are the passes of the byte model:
  an access that finds its data still in cache costs nothing.

The model is the one of :mod:`bnkit.roofline`, applied to the operations a
function really runs; what it cannot see is inside one operation (a native
kernel that reads its input twice is one operation reading it once here).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import torch
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

__all__ = ["Op", "OpRecorder", "record", "compute_ops", "passes_over", "memory_traffic",
           "replayer", "replay"]

#: A half-open range of byte addresses ``[start, stop)``.
Range = Tuple[int, int]

# allocations: they return memory nothing has written yet
_ALLOCATIONS = frozenset({"empty", "empty_like", "empty_strided", "new_empty",
                          "new_empty_strided"})
# in-place ops whose first argument is written but not read
_WRITE_ONLY_SELF = frozenset({"copy_", "fill_", "zero_"})


@dataclass(frozen=True)
class Op:
    """One dispatched ATen operation.

    Attributes
    ----------
    name : str
        ``"packet.overload"``, e.g. ``"sub.out"``, ``"mul_.Tensor"``.
    reads : tuple of (int, int)
        Byte ranges ``[start, stop)`` of the tensors it reads (a strided
        tensor: from its first to its last element).
    writes : tuple of (int, int)
        Byte ranges of the tensors it writes.
    computes : bool
        False for views, allocations and other operations that touch no data.
    call : tuple or None
        ``(func, args, kwargs, result)``, what :func:`replay` needs to run the
        operation again; kept only when :func:`record` is asked to (it keeps
        the tensors alive).
    """

    name: str
    reads: Tuple[Range, ...]
    writes: Tuple[Range, ...]
    computes: bool
    call: Optional[Tuple[Any, tuple, dict, Any]] = None


def _range(t: torch.Tensor) -> Optional[Range]:
    if t.numel() == 0 or t.device.type == "meta":
        return None
    item = t.element_size()
    low = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if stride < 0)
    high = sum((size - 1) * stride for size, stride in zip(t.shape, t.stride()) if stride > 0)
    start = t.data_ptr() + low * item
    return start, t.data_ptr() + (high + 1) * item


def _tensors(tree) -> List[torch.Tensor]:
    return [t for t in tree_flatten(tree)[0] if isinstance(t, torch.Tensor)]


def _unique(ranges) -> Tuple[Range, ...]:
    return tuple(dict.fromkeys(r for r in ranges if r is not None))


class OpRecorder(TorchDispatchMode):
    """A dispatch mode that appends an :class:`Op` to its list ``ops`` for every operation run under it.

    Parameters
    ----------
    keep_calls : bool, default False
        Keep, in each :class:`Op`, its function, arguments and result, for
        :func:`replay` (which keeps those tensors alive).
    """

    def __init__(self, keep_calls: bool = False):
        super().__init__()
        self.ops: List[Op] = []
        self.keep_calls = keep_calls

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        base = func.overloadpacket.__name__
        name = f"{base}.{func._overloadname}"
        call = (func, args, kwargs, out) if self.keep_calls else None
        if func.is_view or base in _ALLOCATIONS:
            self.ops.append(Op(name, (), (), False, call))
            return out
        schema = func._schema.arguments
        values = list(args) + [kwargs.get(a.name) for a in schema[len(args):]]
        reads, writes = [], []
        for i, (arg, value) in enumerate(zip(schema, values)):
            written = arg.alias_info is not None and arg.alias_info.is_write
            for t in _tensors(value):
                r = _range(t)
                if written:
                    writes.append(r)
                if not written or not arg.kwarg_only and not (i == 0 and base in _WRITE_ONLY_SELF):
                    reads.append(r)             # read: an input, or the self of an in-place op
        if not any(a.alias_info is not None and a.alias_info.is_write for a in schema):
            writes.extend(_range(t) for t in _tensors(out))     # fresh outputs
        touched = reads or writes
        self.ops.append(Op(name, _unique(reads), _unique(writes), bool(touched), call))
        return out


def record(fn: Callable, *args, keep_calls: bool = False, **kwargs):
    """Run ``fn(*args, **kwargs)`` and return ``(result, ops)``, its dispatched operations in order.

    ``keep_calls``: keep what :func:`replay` needs (see :class:`OpRecorder`).
    """
    with OpRecorder(keep_calls) as recorder:
        result = fn(*args, **kwargs)
    return result, recorder.ops


def compute_ops(ops: Sequence[Op]) -> List[Op]:
    """The operations that read or write data (no views, allocations or metadata)."""
    return [op for op in ops if op.computes]


def passes_over(ops: Sequence[Op], nbytes: int) -> float:
    """How many times the operations go over ``nbytes`` of data, in cache or not.

    Each computing operation counts its largest range read or written, divided
    by ``nbytes``: an operation over a whole array of ``nbytes`` counts 1, one
    over a block of a tenth of it 0.1, one over a per-channel vector about 0.
    """
    if nbytes <= 0:
        raise ValueError(f"nbytes must be positive (got {nbytes})")
    return sum(max(stop - start for start, stop in op.reads + op.writes)
               for op in compute_ops(ops)) / nbytes


def memory_traffic(ops: Sequence[Op], cache_bytes: int,
                   line_bytes: int = 4096) -> Tuple[int, int]:
    """Bytes read from memory and written to memory by the operations, under an LRU cache.

    Parameters
    ----------
    ops : sequence of Op
        In the order they ran (from :func:`record`).
    cache_bytes : int
        Capacity of the cache, a multiple of ``line_bytes``. It starts empty.
    line_bytes : int, default 4096
        Granularity of the model: a range touches every line it overlaps.

    Returns
    -------
    read, written : int
        ``read``: lines read while not in the cache; ``written``: dirty lines
        leaving the cache, or still in it at the end (flushed), times ``line_bytes``.
    """
    if line_bytes <= 0 or cache_bytes < line_bytes:
        raise ValueError(f"need 0 < line_bytes <= cache_bytes (got {line_bytes}, {cache_bytes})")
    capacity = cache_bytes // line_bytes
    cache: "OrderedDict[int, bool]" = OrderedDict()       # line -> dirty
    read = written = 0

    def touch(line: int, write: bool) -> None:
        nonlocal read, written
        dirty = cache.pop(line, None)
        if dirty is None:
            read += not write
            dirty = False
        cache[line] = dirty or write
        if len(cache) > capacity:
            written += cache.popitem(last=False)[1]

    for op in compute_ops(ops):
        for ranges, write in ((op.reads, False), (op.writes, True)):
            for start, stop in ranges:
                for line in range(start // line_bytes, math.ceil(stop / line_bytes)):
                    touch(line, write)
    written += sum(cache.values())
    return read * line_bytes, written * line_bytes


def _flat(value) -> tuple:
    return tuple(value) if isinstance(value, (tuple, list)) else (value,)


def replayer(ops: Sequence[Op], result: Optional[torch.Tensor] = None) -> Callable[[], object]:
    """A function that runs the recorded operations again, each on the results of the ones before.

    Every operation runs -- views and allocations too, as they were dispatched
    -- with each tensor that an earlier recorded operation produced replaced by
    what that operation produced in this replay, so that a replay computes what
    the recorded run computed (from the same inputs) and an in-place operation
    works on the replay's own tensors. Which argument comes from which earlier
    result is worked out once, here, so that a replay is one call per operation
    and little else. The operations need their calls (:func:`record` with
    ``keep_calls=True``).

    Parameters
    ----------
    ops : sequence of Op
    result : Tensor, optional
        A tensor of the recorded run (e.g. the function's output): the replay
        returns its counterpart. Default: the last operation's result.
    """
    produced = {}                   # id of a recorded tensor -> (operation, output position)
    steps = []
    for i, op in enumerate(ops):
        if op.call is None:
            raise ValueError(f"{op.name} was recorded without its call (keep_calls=False)")
        func, args, kwargs, out = op.call
        arg_links = [(p, produced[id(a)]) for p, a in enumerate(args)
                     if isinstance(a, torch.Tensor) and id(a) in produced]
        kwarg_links = [(k, produced[id(v)]) for k, v in kwargs.items()
                       if isinstance(v, torch.Tensor) and id(v) in produced]
        if any(isinstance(a, (tuple, list)) and _tensors(a) for a in args):
            raise ValueError(f"{op.name}: replaying a list of tensors is not supported")
        steps.append((func, args, kwargs, arg_links, kwarg_links))
        for k, t in enumerate(_flat(out)):
            if isinstance(t, torch.Tensor):
                produced[id(t)] = (i, k)
    target = produced.get(id(result)) if result is not None else None
    if result is not None and target is None:
        raise ValueError("result is not a tensor produced by the recorded operations")

    def run():
        outputs = []
        for func, args, kwargs, arg_links, kwarg_links in steps:
            if arg_links:
                args = list(args)
                for p, (i, k) in arg_links:
                    args[p] = outputs[i][k]
            if kwarg_links:
                kwargs = dict(kwargs)
                for key, (i, k) in kwarg_links:
                    kwargs[key] = outputs[i][k]
            outputs.append(_flat(func(*args, **kwargs)))
        if target is None:
            last = outputs[-1]
            return last[0] if len(last) == 1 else last
        return outputs[target[0]][target[1]]

    return run


def replay(ops: Sequence[Op], result: Optional[torch.Tensor] = None):
    """Run the recorded operations again, once: ``replayer(ops, result)()``."""
    return replayer(ops, result)()
