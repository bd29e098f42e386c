r"""Synchronized batch norm: one set of batch statistics over every process of a group.

In data-parallel training each of :math:`W` processes (ranks) holds a shard of
the batch, :math:`m_k` values per channel on rank :math:`k`. Plain batch norm
normalizes every shard with its own statistics. :class:`SyncBatchNorm`
normalizes with the statistics of the whole batch, :math:`m = \sum_k m_k`
values per channel, at the price of one collective operation in the forward
pass and one in the backward pass, as :class:`torch.nn.SyncBatchNorm`.

Forward. Every rank computes its count :math:`m_k`, mean :math:`\mu_k` and
sum of squared deviations :math:`M_k = \sum_i (x_i - \mu_k)^2` per channel, the
ranks exchange them in one all-gather, and each rank merges them, in the same
order, with Chan et al.'s parallel formula:

.. math::

    \mu = \frac{1}{m}\sum_k m_k \mu_k, \qquad
    M = \sum_k M_k + \sum_k m_k (\mu_k - \mu)^2, \qquad
    \sigma^2 = \frac{M}{m}.

No large sum of squares is ever subtracted from another, so the variance is as
accurate as the two-pass one; shards may have any sizes (zero included). The
running statistics use the unbiased :math:`\frac{m}{m-1}\sigma^2` of the whole
batch, identically on every rank.

The exchange carries, per rank, :math:`2C + 3` float64 values: the :math:`C`
means, the :math:`C` sums :math:`M_k`, then :math:`m_k`, a status (1: this
rank accepted its input) and the input's dtype. A rank whose input is refused
still takes part, with status 0, so that *every* rank raises (the others a
:class:`~bnkit.torch.distributed.PeerError`) instead of leaving some waiting
in a collective that will never complete; ranks whose dtypes disagree, or that
hold one value per channel in total, all raise the same error. The sizes of
the exchanges depend on :math:`C`, which therefore must agree before the first
one: the first training forward of a layer all-gathers its ``num_features``
once, so that layers built differently on different ranks raise on every rank
instead of crashing the collective.

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

The normalize step, the running-average update and the input gradient are
:mod:`bnkit.torch.kernels`' (shared with ``BatchNorm*d``); the collective
counts and bytes are modeled in :mod:`bnkit.torch.communication`.
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Tuple

import torch
import torch.distributed as dist
from torch import nn

from .convert import replace_batch_norms
from .distributed import PeerError
from .kernels import (
    batch_statistics,
    compute_dtype,
    gradient_sums,
    input_gradient,
    normalize,
    update_running_stats,
    values_per_channel,
)
from .modules import BatchNormBase

__all__ = [
    "SyncBatchNorm",
    "SyncBatchNormFunction",
    "merge_moments",
    "convert_sync_batchnorm",
]

# The dtypes a SyncBatchNorm input may have, numbered 1.. in the exchange (0: refused).
_DTYPES = (torch.float16, torch.bfloat16, torch.float32, torch.float64)
_OK = 1.0


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


# --------------------------------------------------------------------------- the exchange


def _all_gather(t: torch.Tensor, group) -> torch.Tensor:
    """(W, ...) stack of every rank's ``t``, in group-rank order: one collective."""
    out = [torch.empty_like(t) for _ in range(dist.get_world_size(group))]
    dist.all_gather(out, t.contiguous(), group=group)
    return torch.stack(out)


def _packet(input, accepted: bool, num_features: int, device) -> torch.Tensor:
    """This rank's share of the exchange: (2C + 3,) float64 = means, M_k, m_k, status, dtype."""
    c = num_features
    packet = torch.zeros(2 * c + 3, dtype=torch.float64, device=device)
    if not accepted:
        return packet                                       # status 0: refused
    m = values_per_channel(input)
    if m > 0:
        mean, var = batch_statistics(input.detach())
        packet[:c] = mean
        packet[c:2 * c] = var.to(torch.float64) * m         # M_k = m_k sigma_k^2
    dtype = _DTYPES.index(input.dtype) + 1 if input.dtype in _DTYPES else 0
    packet[2 * c:] = torch.tensor([m, _OK, dtype], dtype=torch.float64)
    return packet


def _exchange(input, error, num_features: int, device,
              group) -> Tuple[List[int], torch.Tensor, torch.Tensor]:
    """One all-gather of every rank's packet; raise on every rank when any refused.

    Returns the counts :math:`m_k` and the (W, C) means and sums of squared
    deviations, in float64.
    """
    c = num_features
    gathered = _all_gather(_packet(input, error is None, c, device), group)   # (W, 2C + 3)
    rows = gathered[:, 2 * c:].cpu().tolist()
    failed = [r for r, (_, status, _) in enumerate(rows) if status != _OK]
    if failed:
        if error is not None:
            raise error
        raise PeerError(f"SyncBatchNorm: rank(s) {failed} of the process group refused "
                        "their input (their own error says why); this rank stops at the "
                        "same layer instead of waiting for them in a collective")
    dtypes = {int(code) for _, _, code in rows}
    if len(dtypes) > 1:
        names = ", ".join(f"rank {r}: {_DTYPES[int(code) - 1] if code else 'unsupported'}"
                          for r, (_, _, code) in enumerate(rows))
        raise TypeError(f"SyncBatchNorm: the ranks' inputs differ in dtype ({names}); "
                        "every rank must use the same dtype")
    counts = [int(m) for m, _, _ in rows]
    if sum(counts) == 1:
        raise ValueError("Expected more than 1 value per channel when training, got "
                         f"{sum(counts)} over the {len(rows)} ranks of the process group "
                         f"(input size {tuple(input.shape)} on this rank)")
    return counts, gathered[:, :c], gathered[:, c:2 * c]


# --------------------------------------------------------------------------- autograd


class SyncBatchNormFunction(torch.autograd.Function):
    """The autograd node of :class:`SyncBatchNorm` in training mode.

    Inputs: ``(input, weight, bias, running_mean, running_var, factor, eps,
    group, counts, means, m2s)``: ``factor`` is the weight of the batch in the
    running average, ``counts`` lists :math:`m_k` for every rank of ``group``
    and ``means``, ``m2s`` (shape (W, C)) their statistics, all exchanged
    beforehand by :class:`SyncBatchNorm`. Every rank of the group must call its
    backward, in the same order: each backward all-reduces once.
    """

    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, factor, eps, group,
                counts, means, m2s):
        m = sum(counts)
        ctx.group, ctx.m = group, m
        ctx.param_dtypes = (None if weight is None else weight.dtype,
                            None if bias is None else bias.dtype)
        if m == 0:
            # Every shard is empty (as BatchNorm*d with N = 0): an empty output and the
            # running statistics left as they are; the backward still all-reduces.
            return torch.empty_like(input)
        n = torch.tensor(counts, dtype=torch.float64, device=means.device)
        _, mean64, m2 = merge_moments(n, means, m2s)
        var64 = m2 / m
        update_running_stats(running_mean, running_var, mean64, var64, m, factor)
        acc = compute_dtype(input.dtype)
        mean, var = mean64.to(acc), var64.to(acc)
        invstd = torch.rsqrt(var + eps)
        y, scale = normalize(input, mean, invstd, weight, bias)
        ctx.save_for_backward(input, mean, invstd, scale)
        return y

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_y):
        need_x, need_w, need_b = ctx.needs_input_grad[:3]
        w_dtype, b_dtype = ctx.param_dtypes
        c = grad_y.shape[1]
        if ctx.m == 0:
            # Join the all-reduce the other ranks run (all of them are here too).
            dist.all_reduce(torch.zeros(2 * c, dtype=torch.float64, device=grad_y.device),
                            group=ctx.group)
            return (torch.empty_like(grad_y) if need_x else None,
                    grad_y.new_zeros(c, dtype=w_dtype) if need_w else None,
                    grad_y.new_zeros(c, dtype=b_dtype) if need_b else None,
                    None, None, None, None, None, None, None, None)
        input, mean, invstd, scale = ctx.saved_tensors
        sum_g, sum_g_xhat = gradient_sums(grad_y, input, mean, invstd)   # this shard's
        # Always all-reduce (even when no input gradient is needed) so that every
        # rank runs the same collectives in the same order.
        both = torch.stack([sum_g, sum_g_xhat]).to(torch.float64)
        dist.all_reduce(both, group=ctx.group)
        all_g, all_g_xhat = both.to(sum_g.dtype).unbind(0)
        grad_x = None
        if need_x:
            grad_x = input_gradient(grad_y, input, mean, invstd, scale, all_g, all_g_xhat, ctx.m)
        return (grad_x, sum_g_xhat.to(w_dtype) if need_w else None,
                sum_g.to(b_dtype) if need_b else None,
                None, None, None, None, None, None, None, None)


# --------------------------------------------------------------------------- the module


def _group_world_size(group) -> int:
    """World size of ``group`` (1 without an initialized default group)."""
    if not (dist.is_available() and dist.is_initialized()):
        return 1
    if dist.get_rank(group) < 0:
        raise ValueError("this process is not a member of the SyncBatchNorm's process_group")
    return dist.get_world_size(group)


class SyncBatchNorm(BatchNormBase):
    r"""Batch norm whose training statistics span every process of a group.

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta,

    with :math:`\mu, \sigma^2` the mean and biased variance of each channel
    over the *whole* batch: the union of the inputs of every rank of
    ``process_group``. Same parameters, buffers and state-dict keys as
    :class:`bnkit.torch.BatchNorm2d` (and :class:`torch.nn.SyncBatchNorm`); works
    over any ``torch.distributed`` backend, ``gloo`` on CPUs included.

    In training mode with a group of more than one process, each forward call
    all-gathers :math:`2C + 3` float64 values per rank (the statistics, the
    count, a status and the dtype) and each backward call all-reduces
    :math:`2C` values (see :mod:`bnkit.torch.sync`); the first forward call also
    checks once that every rank's layer has the same ``num_features``. The
    running statistics are updated with the whole batch, identically on every
    rank. In eval mode, without an initialized process group, or with a group
    of one process, it is exactly :class:`bnkit.torch.BatchNorm2d` (for inputs
    of any rank >= 2).

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
    may differ between ranks, and may be 0 on some or all of them.

    Raises
    ------
    TypeError, ValueError
        On the rank whose input is refused (wrong channel count, rank, dtype);
        :class:`~bnkit.torch.distributed.PeerError` on the other ranks at the
        same call. When the ranks disagree on dtype or ``num_features``, or
        hold one value per channel in total, every rank raises the same error.

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
        self._peers_checked_for = None      # the group whose ranks agreed on num_features

    def _device(self, input) -> torch.device:
        """Where this rank's exchange tensors live: the input's device, else the layer's."""
        if isinstance(input, torch.Tensor):
            return input.device
        state = itertools.chain(self.parameters(), self.buffers())
        return next((t.device for t in state), torch.device("cpu"))

    def _check_peers(self, group, device) -> None:
        """Once per group: every rank's layer has this ``num_features`` (one all-gather)."""
        key = ("group", id(group)) if group is not None else ("world",)
        if getattr(self, "_peers_checked_for", None) == key:
            return
        sizes = _all_gather(torch.tensor([self.num_features], dtype=torch.int64,
                                         device=device), group).view(-1).tolist()
        if len(set(sizes)) > 1:
            raise ValueError("SyncBatchNorm: the ranks' layers differ in num_features "
                             f"({', '.join(f'rank {r}: {c}' for r, c in enumerate(sizes))})")
        self._peers_checked_for = key

    def _check_local_input(self, input) -> None:
        """The checks of the synchronized path: this rank's input (not the group's count)."""
        self._check_input(input, batch_statistics=True, whole_batch=False)
        for name, t in (("weight", self.weight), ("running_mean", self.running_mean)):
            if t is not None and t.device != input.device:
                raise ValueError(f"input is on {input.device} but {name} is on {t.device}")

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        group = self.process_group
        if not (self.training and _group_world_size(group) > 1):
            return super().forward(input)
        device = self._device(input)
        self._check_peers(group, device)
        error = None
        try:
            self._check_local_input(input)
        except (TypeError, ValueError) as exc:
            error = exc
        counts, means, m2s = _exchange(input, error, self.num_features, device, group)
        factor = self._count_batch()
        return SyncBatchNormFunction.apply(input, self.weight, self.bias, self.running_mean,
                                           self.running_var, factor, float(self.eps), group,
                                           counts, means, m2s)

    @classmethod
    def convert_sync_batchnorm(cls, module: nn.Module, process_group=None) -> nn.Module:
        """Replace every batch-norm layer in ``module`` by a :class:`SyncBatchNorm`.

        Converts ``bnkit.torch.BatchNorm1d/2d/3d`` and ``torch.nn.BatchNorm1d/2d/3d``
        (also ``torch.nn.SyncBatchNorm``), like
        :meth:`torch.nn.SyncBatchNorm.convert_sync_batchnorm`. The new layer takes
        over the old one's parameters and buffers (the same tensors, so an
        optimizer built earlier still updates them), its configuration
        (``bias=False`` included) and its train/eval mode; its state dict is the
        old one's. Call it on every rank before wrapping the model in
        ``DistributedDataParallel``.

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
        >>> net = SyncBatchNorm.convert_sync_batchnorm(
        ...     nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
        >>> type(net[1]).__name__
        'SyncBatchNorm'
        """
        def make(old: nn.Module) -> nn.Module:
            return cls(old.num_features, old.eps, old.momentum, old.affine,
                       old.track_running_stats, process_group, device="meta",
                       bias=old.bias is not None)

        return replace_batch_norms(module, make, keep=cls)


def convert_sync_batchnorm(module: nn.Module, process_group=None) -> nn.Module:
    """:meth:`SyncBatchNorm.convert_sync_batchnorm` as a function.

    Examples
    --------
    >>> from torch import nn
    >>> net = convert_sync_batchnorm(nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8)))
    >>> type(net[1]).__name__
    'SyncBatchNorm'
    """
    return SyncBatchNorm.convert_sync_batchnorm(module, process_group)
