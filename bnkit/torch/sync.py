r"""Synchronized batch norm: one set of batch statistics over every process of a group.

In data-parallel training each of :math:`W` processes (ranks) holds a shard of
the batch, :math:`m_k` values per channel on rank :math:`k`. Plain batch norm
normalizes every shard with its own statistics. :class:`SyncBatchNorm`
normalizes with the statistics of the whole batch, :math:`m = \sum_k m_k`
values per channel, at the price of one collective operation in the forward
pass and one in the backward pass.

Forward. Every rank computes its count :math:`m_k`, mean :math:`\mu_k` and
sum of squared deviations :math:`M_k = \sum_i (x_i - \mu_k)^2` per channel, the
ranks exchange them (all-gather), and each rank merges them, in the same order,
with Chan et al.'s parallel formula:

.. math::

    \mu = \frac{1}{m}\sum_k m_k \mu_k, \qquad
    M = \sum_k M_k + \sum_k m_k (\mu_k - \mu)^2, \qquad
    \sigma^2 = \frac{M}{m}.

No large sum of squares is ever subtracted from another, so the variance is as
accurate as the two-pass one; shards may have any sizes (zero included). The
running statistics use the unbiased :math:`\frac{m}{m-1}\sigma^2` of the whole
batch, identically on every rank.

Backward. With :math:`g = \partial L/\partial y` and :math:`L` the sum of the
ranks' losses, the input gradient needs the two per-channel sums over the
whole batch, which one all-reduce of :math:`2C` values provides:

.. math::

    \frac{\partial L}{\partial x} = \frac{\gamma}{\sqrt{\sigma^2 + \varepsilon}}
    \Big(g - \frac{1}{m}\sum_{\text{all ranks}} g
           - \frac{\hat x}{m}\sum_{\text{all ranks}} g\,\hat x\Big).

The gradients of :math:`\gamma` and :math:`\beta` are left as each rank's own
sums :math:`\sum g\,\hat x` and :math:`\sum g` over its shard, as in
:class:`torch.nn.SyncBatchNorm`: data-parallel training all-reduces parameter
gradients anyway (``DistributedDataParallel`` averages them), and the sum over
ranks is the whole batch's gradient.

Before the statistics are exchanged the ranks all-gather a 4-value header
(input accepted?, dtype, :math:`m_k`, :math:`C`): when one rank's input is
refused, or the ranks disagree, *every* rank raises (the others a
:class:`~bnkit.torch.distributed.PeerError`) instead of leaving some waiting
in a collective that will never complete.
"""

from __future__ import annotations

import itertools
from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from .. import _checks
from .distributed import PeerError, run_processes
from .kernels import gradient_sums as _gradient_sums
from .kernels import per_channel as _broadcast
from .kernels import reduce_dims as _reduce_dims
from .kernels import row_blocks as _row_blocks


def _accumulator(x):
    return torch.float64 if x.device.type == 'cpu' else torch.promote_types(x.dtype, torch.float32)
from .modules import _BatchNorm

__all__ = [
    "SyncBatchNorm",
    "SyncBatchNormFunction",
    "merge_moments",
    "convert_sync_batchnorm",
    "sync_payload_bytes",
    "ring_bytes_sent",
    "sync_batch_norm_on_shards",
    "run_shard_cases",
    "train_steps",
    "HEADER_VALUES",
]

#: int64 values per rank in the header exchanged before the statistics.
HEADER_VALUES = 4

_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)


# --------------------------------------------------------------------------- the math


def merge_moments(counts: torch.Tensor, means: torch.Tensor,
                  m2s: torch.Tensor) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    r"""Merge per-shard counts, means and sums of squared deviations (Chan et al.).

    .. math::

        m = \sum_k m_k, \qquad \mu = \frac{1}{m}\sum_k m_k\,\mu_k, \qquad
        M = \sum_k M_k + \sum_k m_k\,(\mu_k - \mu)^2

    For two shards this is Chan, Golub and LeVeque's pairwise update
    :math:`M = M_a + M_b + \delta^2 m_a m_b / m` with :math:`\delta = \mu_b - \mu_a`.
    The result equals the mean and :math:`M = \sum_i (x_i - \mu)^2` of the
    concatenated shards; the biased variance is :math:`M / m`.

    Parameters
    ----------
    counts : Tensor of shape (K,)
        :math:`m_k \geq 0`, values per channel in shard :math:`k`, with :math:`m > 0`.
    means : Tensor of shape (K, C)
        :math:`\mu_k` (any finite value where :math:`m_k = 0`).
    m2s : Tensor of shape (K, C)
        :math:`M_k = \sum_{i \in k} (x_i - \mu_k)^2` (0 where :math:`m_k = 0`).

    Returns
    -------
    m : Tensor of shape ()
    mean : Tensor of shape (C,)
    m2 : Tensor of shape (C,)
        In the dtype of ``means``.

    Examples
    --------
    >>> import torch
    >>> a, b = torch.tensor([1.0, 2.0, 3.0]), torch.tensor([10.0])
    >>> m, mean, m2 = merge_moments(torch.tensor([3, 1]),
    ...                             torch.stack([a.mean(), b.mean()])[:, None],
    ...                             torch.tensor([[2.0], [0.0]]))
    >>> m.item(), mean.item(), m2.item()
    (4.0, 4.0, 50.0)
    """
    if means.dim() != 2 or m2s.shape != means.shape or counts.shape != means.shape[:1]:
        raise ValueError(f"expected counts (K,), means (K, C), m2s (K, C) (got "
                         f"{tuple(counts.shape)}, {tuple(means.shape)}, {tuple(m2s.shape)})")
    w = counts.to(means.dtype)[:, None]
    n = w.sum()
    mean = (w * means).sum(0) / n
    m2 = m2s.sum(0) + (w * (means - mean).square()).sum(0)
    return n, mean, m2


def _local_moments(x: torch.Tensor, acc: torch.dtype):
    """Per-channel mean and sum of squared deviations of one shard, in ``acc``."""
    c = x.shape[1]
    m = x.numel() // c
    if m == 0:                                  # an empty shard contributes nothing
        zeros = torch.zeros(c, dtype=acc, device=x.device)
        return zeros, zeros.clone()
    dims, blocks = _reduce_dims(x), _row_blocks(x)
    mean = sum(x[s].sum(dims).to(acc) for s in blocks) / m
    mean_b = _broadcast(mean.to(x.dtype), x)
    m2 = sum((x[s] - mean_b).square_().sum(dims).to(acc) for s in blocks)
    return mean, m2


def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    """(W, ...) stack of every rank's ``t``, in group-rank order."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return torch.stack(out)


class SyncBatchNormFunction(torch.autograd.Function):
    """The autograd node of :class:`SyncBatchNorm` in training mode.

    Inputs: ``(input, weight, bias, running_mean, running_var, momentum, eps,
    group, counts)`` where ``counts`` lists :math:`m_k` for every rank of
    ``group`` (exchanged beforehand by :class:`SyncBatchNorm`). Every rank of
    the group must call it, and later call its backward, in the same order.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, momentum, eps, group,
                counts):
        acc = _accumulator(input)
        mean_k, m2_k = _local_moments(input, acc)
        gathered = _all_gather(torch.stack([mean_k, m2_k]), group)       # (W, 2, C)
        n_k = torch.tensor(counts, dtype=acc, device=input.device)
        n, mean_acc, m2 = merge_moments(n_k, gathered[:, 0], gathered[:, 1])
        ctx.group, ctx.total = group, float(n)
        if sum(counts) == 0:
            # Every shard is empty (as BatchNorm*d with N = 0): an empty output and the
            # running statistics left as they are; the backward still all-reduces.
            zeros = torch.zeros_like(mean_acc)
            ctx.save_for_backward(input, weight, zeros, zeros)
            return torch.empty_like(input)
        var_acc = m2 / n
        if running_mean is not None:
            running_mean.copy_(momentum * mean_acc + (1 - momentum) * running_mean)
        if running_var is not None:
            unbiased = var_acc * (n / (n - 1))
            running_var.copy_(momentum * unbiased + (1 - momentum) * running_var)
        mean, var = mean_acc.to(input.dtype), var_acc.to(input.dtype)
        invstd = torch.rsqrt(var + eps)
        scale = invstd if weight is None else invstd * weight
        shift = -mean * scale if bias is None else bias - mean * scale
        y = torch.addcmul(_broadcast(shift, input), input, _broadcast(scale, input))
        ctx.save_for_backward(input, weight, mean, invstd)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        input, weight, mean, invstd = ctx.saved_tensors
        sum_g, sum_g_xhat = _gradient_sums(grad_y, input, mean, invstd)   # this shard's
        # Always all-reduce (even when no input gradient is needed) so that every
        # rank runs the same collectives in the same order.
        both = torch.stack([sum_g, sum_g_xhat]).to(_accumulator(input))
        dist.all_reduce(both, group=ctx.group)
        all_g, all_g_xhat = both.to(input.dtype).unbind(0)
        grad_x = None
        if ctx.needs_input_grad[0] and ctx.total == 0:
            grad_x = torch.empty_like(grad_y)
        elif ctx.needs_input_grad[0]:
            n = ctx.total
            k = invstd if weight is None else invstd * weight          # gamma / sqrt(var + eps)
            c_g = _broadcast(k, input)
            c_x = _broadcast(-k * invstd * all_g_xhat / n, input)
            c_0 = _broadcast(-k * all_g / n + k * invstd * mean * all_g_xhat / n, input)
            grad_x = torch.addcmul(c_0, grad_y, c_g).addcmul_(input, c_x)
        grad_w = sum_g_xhat if ctx.needs_input_grad[1] else None
        grad_b = sum_g if ctx.needs_input_grad[2] else None
        return grad_x, grad_w, grad_b, None, None, None, None, None, None


# --------------------------------------------------------------------------- the module


def _group_world_size(group) -> int:
    """World size of ``group`` (1 without an initialized default group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    if dist.get_rank(group) < 0:
        raise ValueError("this process is not a member of the SyncBatchNorm's process_group")
    return dist.get_world_size(group)


class SyncBatchNorm(_BatchNorm):
    r"""Batch norm whose training statistics span every process of a group.

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta,

    with :math:`\mu, \sigma^2` the mean and biased variance of each channel
    over the *whole* batch: the union of the inputs of every rank of
    ``process_group``. Same parameters, buffers and state-dict keys as
    :class:`bnkit.torch.BatchNorm2d` (and :class:`torch.nn.SyncBatchNorm`); works
    over any ``torch.distributed`` backend, ``gloo`` on CPUs included.

    In training mode with a group of more than one process, each forward call
    all-gathers a header of 4 int64 values and then :math:`2C` statistics per
    rank, and each backward call all-reduces :math:`2C` values (see
    :mod:`bnkit.torch.sync`). The running statistics are updated with the
    whole batch, identically on every rank. In eval mode, without an
    initialized process group, or with a group of one process, it is exactly
    :class:`bnkit.torch.BatchNorm2d` (for inputs of any rank >= 2).

    Parameters
    ----------
    num_features : int
        :math:`C`.
    eps : float, default 1e-5
    momentum : float in [0, 1] or None, default 0.1
        ``None``: cumulative average over ``num_batches_tracked`` batches.
    affine, track_running_stats : bool, default True
    process_group : ProcessGroup, optional
        The ranks to synchronize over; default: the default (world) group.
    device, dtype : optional
        Of the parameters and buffers.
    bias : bool, default True (keyword only)
        With ``affine``, also learn ``bias`` (``False``: a scale and no shift).

    Shape
    -----
    Input: (N, C) or (N, C, ...), any rank >= 2; output: same shape. :math:`N`
    may differ between ranks, and may be 0 on some, as long as the group holds
    more than one value per channel.

    Raises
    ------
    TypeError, ValueError
        On the rank whose input is refused (wrong channel count, rank, dtype);
        :class:`~bnkit.torch.distributed.PeerError` on the other ranks at the
        same call. When the ranks disagree on dtype or :math:`C`, or hold one
        value per channel in total, every rank raises the same error.

    Notes
    -----
    Every rank of the group must call forward in training mode the same number
    of times and in the same order, and run the backward of each call (a rank
    that never arrives is only detected by the group's timeout, set with
    ``init_process_group(timeout=...)``). The gradients of ``weight`` and
    ``bias`` are each rank's share; their sum over ranks is the whole batch's.

    Empty shards, against :class:`torch.nn.SyncBatchNorm` (whose training forward
    needs a GPU, so this is read from its source, ``torch/nn/modules/_functions.py``):
    a rank with an empty shard sends zero statistics with count 0, which the
    merge leaves out, returns an empty output, joins the backward's all-reduce
    and gets zero ``weight``/``bias`` gradients; its running statistics are
    updated with the other ranks' batch -- as in torch. When *every* shard is
    empty, torch hands zero shards to its CUDA kernel
    ``batch_norm_gather_stats_with_counts``, which divides by the total count 0;
    bnkit does what ``BatchNorm*d`` does on an empty batch: an empty output,
    running statistics unchanged, ``num_batches_tracked`` + 1 (also with
    ``momentum=None``), on every rank.

    Examples
    --------
    >>> import torch, bnkit.torch as bnt
    >>> bn = bnt.SyncBatchNorm(8)      # without a process group: plain batch norm
    >>> bn(torch.randn(4, 8, 5, 5)).shape
    torch.Size([4, 8, 5, 5])
    """

    _allowed_ranks = None          # (N, C, ...) with any rank >= 2, like torch's

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True, process_group=None,
                 device=None, dtype=None, *, bias: bool = True):
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype, bias=bias)
        self.process_group = process_group

    def _check_local_input(self, input) -> None:
        """The local checks of the synchronized path (not: 1 value per channel)."""
        if not isinstance(input, torch.Tensor):
            raise TypeError(f"input must be a torch.Tensor (got {type(input).__name__})")
        if not input.is_floating_point():
            raise TypeError(f"input must be a floating-point tensor (got dtype {input.dtype})")
        _checks.check_input_rank(input.dim())
        _checks.check_eps(self.eps)
        _checks.check_momentum(self.momentum, allow_none=True)
        if input.shape[1] != self.num_features:
            raise ValueError(f"input has {input.shape[1]} channels (shape "
                             f"{tuple(input.shape)}) but num_features={self.num_features}")
        for name, t in (("weight", self.weight), ("running_mean", self.running_mean)):
            if t is not None and t.device != input.device:
                raise ValueError(f"input is on {input.device} but {name} is on {t.device}")

    def _exchange_header(self, input, group):
        """All-gather (ok, dtype, m_k, C) from every rank; raise on every rank if needed."""
        error = None
        try:
            self._check_local_input(input)
        except (TypeError, ValueError) as exc:
            error = exc
        if isinstance(input, torch.Tensor):
            device = input.device
        else:
            state = itertools.chain(self.parameters(), self.buffers())
            device = next((t.device for t in state), torch.device("cpu"))
        ok = error is None
        header = torch.tensor([int(ok), _DTYPES.index(input.dtype) + 1 if ok and
                               input.dtype in _DTYPES else 0,
                               input.numel() // input.shape[1] if ok else 0,
                               self.num_features], dtype=torch.int64, device=device)
        rows = _all_gather(header, group).cpu().tolist()
        failed = [r for r, row in enumerate(rows) if row[0] == 0]
        if failed:
            if error is not None:
                raise error
            raise PeerError(f"SyncBatchNorm: rank(s) {failed} of the process group refused "
                            "their input (their own error says why); this rank stops at the "
                            "same layer instead of waiting for them in a collective")
        features = sorted({row[3] for row in rows})
        if len(features) > 1:
            raise ValueError("SyncBatchNorm: the ranks' layers differ in num_features "
                             f"({', '.join(f'rank {r}: {row[3]}' for r, row in enumerate(rows))})")
        dtypes = sorted({row[1] for row in rows})
        if len(dtypes) > 1:
            names = ", ".join(f"rank {r}: {_DTYPES[row[1] - 1] if row[1] else 'unsupported'}"
                              for r, row in enumerate(rows))
            raise TypeError(f"SyncBatchNorm: the ranks' inputs differ in dtype ({names}); "
                            "every rank must use the same dtype")
        counts = [row[2] for row in rows]
        if sum(counts) == 1:
            raise ValueError("Expected more than 1 value per channel when training, got "
                             f"{sum(counts)} over the {len(rows)} ranks of the process group "
                             f"(input size {tuple(input.shape)} on this rank)")
        return counts

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group
        if not (self.training and _group_world_size(group) > 1):
            return super().forward(input)
        counts = self._exchange_header(input, group)
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.track_running_stats:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        return SyncBatchNormFunction.apply(input, self.weight, self.bias, self.running_mean,
                                           self.running_var, float(momentum), float(self.eps),
                                           group, counts)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Every batch-norm layer of ``module`` replaced by a :class:`SyncBatchNorm`.

        As :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`; see
        :func:`convert_sync_batchnorm`.
        """
        return convert_sync_batchnorm(module, process_group)


_CONVERTIBLE = (_BatchNorm, nn.modules.batchnorm._BatchNorm)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """Replace every batch-norm layer in ``module`` by a :class:`SyncBatchNorm`.

    Converts ``bnkit.torch.BatchNorm1d/2d/3d`` and ``torch.nn.BatchNorm1d/2d/3d``
    (also ``torch.nn.SyncBatchNorm``), like
    :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`. The new layer takes
    over the old one's parameters and buffers (the same tensors, so an
    optimizer built earlier still updates them), its configuration and its
    train/eval mode; its state dict is the old one's. Call it on every rank
    before wrapping the model in ``DistributedDataParallel``.

    Parameters
    ----------
    module : nn.Module
    process_group : ProcessGroup, optional
        Passed to every new layer; default the world group.

    Returns
    -------
    nn.Module
        ``module`` with its batch-norm children replaced (in place), or the new
        layer when ``module`` itself is a batch-norm layer.

    Examples
    --------
    >>> from torch import nn
    >>> net = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
    >>> type(net[1]).__name__
    'SyncBatchNorm'
    """
    if isinstance(module, _CONVERTIBLE) and not isinstance(module, SyncBatchNorm):
        for name in ("weight", "running_mean"):
            t = getattr(module, name, None)
            if t is not None and nn.parameter.is_lazy(t):
                raise ValueError(f"{type(module).__name__} is not initialized yet (lazy); "
                                 "run one forward pass before converting it")
        new = SyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                            module.track_running_stats, process_group, device="meta",
                            bias=module.bias is not None)
        for name in ("weight", "bias"):
            setattr(new, name, getattr(module, name))
        for name in ("running_mean", "running_var", "num_batches_tracked"):
            new.register_buffer(name, getattr(module, name))
        new.train(module.training)
        return new
    for name, child in module.named_children():
        module.add_module(name, convert_sync_batchnorm(child, process_group))
    return module


# --------------------------------------------------------------------------- communication


def sync_payload_bytes(num_channels: Sequence[int], bytes_per_value: int = 4):
    r"""Bytes each rank contributes per training step, for each SyncBatchNorm layer.

    Forward: the header (4 int64 values) and the mean and :math:`M` of the
    :math:`C` channels; backward: :math:`\sum g` and :math:`\sum g \hat x`.

    .. math::

        b_\text{forward} = 32 + 2 C b, \qquad b_\text{backward} = 2 C b

    with :math:`b` bytes per value: the accumulation dtype, float64 (8) for
    CPU tensors and float32 (4) for float32/float16 tensors on a GPU.

    Parameters
    ----------
    num_channels : sequence of int, length L
        :math:`C` of each layer.
    bytes_per_value : int, default 4

    Returns
    -------
    forward, backward : ndarray of int64, shape (L,)
    """
    c = np.asarray(num_channels, dtype=np.int64)
    forward = 8 * HEADER_VALUES + 2 * c * bytes_per_value
    backward = 2 * c * bytes_per_value
    return forward, backward


def ring_bytes_sent(payload, world_size: int, collective: str):
    r"""Bytes each rank sends in a ring all-gather or all-reduce of ``payload`` bytes per rank.

    .. math::

        \text{all-gather: } (W - 1)\,p, \qquad
        \text{all-reduce: } 2\,\frac{W - 1}{W}\,p

    (a ring all-reduce is a reduce-scatter then an all-gather of :math:`p/W`
    bytes per rank). The same amount is received.

    Parameters
    ----------
    payload : float or ndarray
        :math:`p`, bytes each rank contributes.
    world_size : int
        :math:`W \geq 1`.
    collective : {"all_gather", "all_reduce"}
    """
    w = world_size
    if collective == "all_gather":
        return (w - 1) * np.asarray(payload)
    if collective == "all_reduce":
        return 2 * (w - 1) / w * np.asarray(payload)
    raise ValueError(f"collective must be 'all_gather' or 'all_reduce' (got {collective!r})")


# --------------------------------------------------------------------------- multi-process runs


def _as_steps(t) -> List[torch.Tensor]:
    return [t] if isinstance(t, torch.Tensor) else list(t)


class _AnyRankBatchNorm(_BatchNorm):
    """Plain batch norm for (N, C, ...) inputs of any rank: every rank on its own shard."""

    _allowed_ranks = None


def train_steps(layer: nn.Module, x, grad_output) -> dict:
    r"""Run forward and backward of ``layer`` once per step and collect what they computed.

    The reference for :func:`sync_batch_norm_on_shards` (one process, the whole
    batch) and the body of each of its processes (one shard).

    Parameters
    ----------
    layer : nn.Module
        Any batch-norm layer; its parameter gradients are reset after every step.
    x : Tensor of shape (N, C, ...), or a sequence of them (one per step)
    grad_output : Tensor or sequence of Tensors, shaped like ``x``
        :math:`\partial L/\partial y` of each step.

    Returns
    -------
    dict
        ``output``, ``grad_input`` (shaped like ``x``), ``grad_weight``,
        ``grad_bias`` (shape (C,), None without ``affine``): lists with one
        Tensor per step, or single Tensors when ``x`` is a Tensor;
        ``state_dicts``: a one-element list with the final state dict.
    """
    xs, gs = _as_steps(x), _as_steps(grad_output)
    if len(xs) != len(gs) or any(a.shape != b.shape for a, b in zip(xs, gs)):
        raise ValueError("x and grad_output need the same number of steps and shapes "
                         f"(got {[tuple(a.shape) for a in xs]} and {[tuple(b.shape) for b in gs]})")
    out: Dict[str, list] = {"output": [], "grad_input": [], "grad_weight": [], "grad_bias": []}
    for xb, gb in zip(xs, gs):
        xb = xb.detach().clone().requires_grad_(True)
        y = layer(xb)
        y.backward(gb)
        out["output"].append(y.detach())
        out["grad_input"].append(xb.grad)
        for name in ("weight", "bias"):
            p = getattr(layer, name)
            out[f"grad_{name}"].append(None if p is None else p.grad.clone())
            if p is not None:
                p.grad = None
    if isinstance(x, torch.Tensor):
        out = {k: v[0] for k, v in out.items()}
    out["state_dicts"] = [{k: v.clone() for k, v in layer.state_dict().items()}]
    return out


def _shard_worker(rank: int, world_size: int, cases: Sequence[dict]) -> List[dict]:
    """Run on each rank by :func:`run_shard_cases`: every case on this rank's shard."""
    results = []
    for case in cases:
        xs, gs = _as_steps(case["x"]), _as_steps(case["grad_output"])
        sizes = list(case["shard_sizes"])
        shard = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
        options = dict(case.get("options") or {})
        layer = SyncBatchNorm if options.pop("sync", True) else _AnyRankBatchNorm
        bn = layer(xs[0].shape[1], dtype=xs[0].dtype, **options)
        if case.get("state_dict") is not None:
            bn.load_state_dict(case["state_dict"])
        results.append(train_steps(bn, [x[shard] for x in xs], [g[shard] for g in gs]))
    return results


def run_shard_cases(cases: Sequence[dict], timeout: float = 120.0) -> List[dict]:
    """Run several :func:`sync_batch_norm_on_shards` cases in one set of processes.

    Each case is a dict with the arguments of :func:`sync_batch_norm_on_shards`:
    ``x``, ``grad_output``, ``shard_sizes``, and optionally ``state_dict`` and
    ``options`` (a dict of :class:`SyncBatchNorm` arguments, plus ``sync``).
    All cases must have the same number of shards, the number of processes.
    Starting processes costs about a second each, so tests group their cases.

    Returns
    -------
    list of dict
        One result per case, as :func:`sync_batch_norm_on_shards` returns it.
    """
    world_sizes = {len(case["shard_sizes"]) for case in cases}
    if len(world_sizes) != 1:
        raise ValueError(f"every case needs the same number of shards (got {sorted(world_sizes)})")
    for case in cases:
        sizes = list(case["shard_sizes"])
        for x in _as_steps(case["x"]):
            if sum(sizes) != x.shape[0] or min(sizes) < 0:
                raise ValueError(f"shard_sizes {sizes} must be >= 0 and add up to the batch "
                                 f"size {x.shape[0]}")
    world_size = world_sizes.pop()
    per_rank = run_processes(_shard_worker, world_size, (list(cases),), timeout=timeout)
    return _assemble(cases, per_rank)


def _assemble(cases: Sequence[dict], per_rank: Sequence[List[dict]]) -> List[dict]:
    """Concatenate the ranks' shards, sum their parameter gradients, list their state dicts."""
    results = []
    for i, case in enumerate(cases):
        ranks = [rank_results[i] for rank_results in per_rank]
        steps = len(ranks[0]["output"])
        merged = {}
        for key in ("output", "grad_input"):
            merged[key] = [torch.cat([rk[key][s] for rk in ranks]) for s in range(steps)]
        for key in ("grad_weight", "grad_bias"):
            merged[key] = [None if ranks[0][key][s] is None else sum(rk[key][s] for rk in ranks)
                           for s in range(steps)]
        if isinstance(case["x"], torch.Tensor):
            merged = {k: v[0] for k, v in merged.items()}
        merged["state_dicts"] = [rk["state_dicts"][0] for rk in ranks]
        results.append(merged)
    return results


def sync_batch_norm_on_shards(x, grad_output, shard_sizes: Sequence[int], *,
                              state_dict: Optional[dict] = None, timeout: float = 120.0,
                              **options) -> dict:
    r"""Train a :class:`SyncBatchNorm` on ``len(shard_sizes)`` local processes; collect the results.

    The batch is split along :math:`N` into consecutive shards, rank :math:`k`
    getting ``shard_sizes[k]`` samples. Each rank builds the same layer
    (``options``, then ``state_dict`` if given), runs forward and backward on
    its shard with its rows of ``grad_output``, once per step, and sends back
    what it computed. The processes communicate over ``gloo`` on 127.0.0.1
    (:func:`~bnkit.torch.distributed.run_processes`).

    Parameters
    ----------
    x : Tensor of shape (N, C, ...), or a sequence of them (one per step)
    grad_output : Tensor or sequence of Tensors, shaped like ``x``
        :math:`\partial L/\partial y`; :math:`L` is the sum of the ranks' losses.
    shard_sizes : sequence of int
        Samples per rank, :math:`\geq 0`, adding up to :math:`N`.
    state_dict : dict, optional
        Loaded into every rank's layer before the first step.
    timeout : float, default 120
        Seconds for the whole run.
    **options
        :class:`SyncBatchNorm` arguments (``momentum``, ``eps``, ``affine``,
        ``track_running_stats``) and ``sync=False`` to run plain batch norm
        on every shard instead (what unsynchronized data parallelism does).

    Returns
    -------
    dict
        ``output``, ``grad_input``: Tensors of shape (N, C, ...), the ranks'
        shards concatenated; ``grad_weight``, ``grad_bias``: Tensors of shape
        (C,) summed over the ranks (None without ``affine``), one per step
        when ``x`` is a sequence; ``state_dicts``: every rank's final state dict.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(10, 3, dtype=torch.float64)
    >>> res = sync_batch_norm_on_shards(x, torch.ones_like(x), [6, 4])   # doctest: +SKIP
    >>> whole = (x - x.mean(0)) / (x.var(0, correction=0) + 1e-5).sqrt()
    >>> torch.allclose(res["output"], whole)                              # doctest: +SKIP
    True
    """
    case = {"x": x, "grad_output": grad_output, "shard_sizes": list(shard_sizes),
            "state_dict": state_dict, "options": options}
    return run_shard_cases([case], timeout=timeout)[0]
