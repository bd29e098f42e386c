r"""Chapter 8's data-parallel runs: batch norm on shards, live in processes and simulated in one.

In data-parallel training :math:`W` processes (ranks) each hold a shard of
:math:`n` samples of a batch of :math:`N = Wn`; ``DistributedDataParallel``
(DDP) averages their parameter gradients, and copies rank 0's buffers to the
others at every forward pass (its default, ``broadcast_buffers=True``). With
plain batch norm every rank normalizes with its own shard's statistics; with
:class:`~bnkit.torch.sync.SyncBatchNorm` every rank uses the whole batch's.

Both are exactly one process running the whole batch:

* synchronized: plain batch norm over the whole batch (which is what
  :class:`~bnkit.torch.sync.SyncBatchNorm` computes);
* per-process (local): :class:`LocalBatchNorm`, batch norm applied to each
  shard of :math:`n` samples separately, its running statistics updated from
  the first shard only (rank 0's, which DDP copies to every rank).

The loss of the whole batch (a mean over :math:`N`) is the mean of the ranks'
losses (each a mean over :math:`n`), so its gradient is the average DDP
forms. :func:`run_data_parallel` trains a model for a few steps in real
processes (``gloo``), :func:`simulate_data_parallel` in one; the two agree to
round-off (checked in the tests and in Chapter 8).

:func:`run_layer_on_shards` runs one layer, forward and backward, on shards of
any sizes in real processes, for the chapter's layer-level comparison.

Needs torch.
"""

from __future__ import annotations

import copy
from typing import Dict, List, Optional, Sequence

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from ..torch import SyncBatchNorm, batch_norm, run_processes
from ..torch.convert import replace_batch_norms
from ..torch.modules import BatchNormBase
from .small_batch import conv_net

__all__ = [
    "LocalBatchNorm",
    "convert_local_batchnorm",
    "build_model",
    "shard_slices",
    "layer_steps",
    "run_layer_on_shards",
    "run_data_parallel",
    "simulate_data_parallel",
]

#: The ways :func:`build_model` normalizes: plain, synchronized, or simulated per-process.
MODES = ("plain", "sync", "local")


class LocalBatchNorm(BatchNormBase):
    r"""Batch norm of :math:`W` processes with plain batch norm, simulated in one process.

    In training mode the input, of shape (N, C, ...), is cut along :math:`N`
    into consecutive shards of ``shard_size`` samples (rank :math:`k` holds
    shard :math:`k`), and every shard is normalized with its own mean and
    biased variance, as each rank's plain batch norm would:

    .. math::

        y_i = \gamma\,\frac{x_i - \mu_{k(i)}}{\sqrt{\sigma^2_{k(i)} + \varepsilon}} + \beta .

    The running statistics (and ``num_batches_tracked``) are updated from the
    first shard only: the buffers of rank 0, which DDP copies to every rank
    before each forward pass. In eval mode it is plain batch norm with the
    running statistics. Same parameters, buffers and state-dict keys as
    :class:`bnkit.torch.BatchNorm2d`.

    Parameters
    ----------
    num_features : int
        :math:`C`.
    shard_size : int
        :math:`n`, samples per simulated process; :math:`N` must be a multiple of it.
    eps, momentum, affine, track_running_stats, device, dtype, bias
        As :class:`bnkit.torch.BatchNorm2d`.

    Examples
    --------
    >>> import torch
    >>> x = torch.randn(8, 3, 5, 5)
    >>> local = LocalBatchNorm(3, shard_size=4)
    >>> y = local(x)
    >>> import bnkit.torch as bnt
    >>> torch.allclose(y[4:], bnt.batch_norm(x[4:], None, None, training=True), atol=1e-6)
    True
    """

    _allowed_ranks = None          # (N, C, ...) with any rank >= 2

    def __init__(self, num_features: int, shard_size: int, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True,
                 track_running_stats: bool = True, device=None, dtype=None, *, bias: bool = True):
        if not (isinstance(shard_size, int) and shard_size >= 1):
            raise ValueError(f"shard_size must be a positive int (got {shard_size!r})")
        super().__init__(num_features, eps, momentum, affine, track_running_stats,
                         device=device, dtype=dtype, bias=bias)
        self.shard_size = shard_size

    def forward(self, input: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(input)
        n = self.shard_size
        if not isinstance(input, torch.Tensor) or input.dim() < 2 or input.shape[0] % n:
            shape = tuple(input.shape) if isinstance(input, torch.Tensor) else type(input).__name__
            raise ValueError(f"LocalBatchNorm: the batch (shape {shape}) must be (N, C, ...) "
                             f"with N a multiple of shard_size={n} (equal shards)")
        shards = input.split(n)
        first = super().forward(shards[0])        # rank 0: checks, counts, updates the buffers
        rest = [batch_norm(s, None, None, self.weight, self.bias, training=True, eps=self.eps)
                for s in shards[1:]]
        return torch.cat([first, *rest])

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, shard_size={self.shard_size}"


def convert_local_batchnorm(module: nn.Module, shard_size: int) -> nn.Module:
    """Replace every batch-norm layer of ``module`` by a :class:`LocalBatchNorm` (in place).

    Like :meth:`bnkit.torch.sync.SyncBatchNorm.convert_sync_batchnorm`: the new
    layers take over the old ones' parameters, buffers and mode.

    Parameters
    ----------
    module : nn.Module
    shard_size : int
        :math:`n`, samples per simulated process.

    Returns
    -------
    nn.Module
        ``module``, or the new layer when ``module`` is itself a batch norm.
    """
    def make(old: nn.Module) -> nn.Module:
        return LocalBatchNorm(old.num_features, shard_size, old.eps, old.momentum, old.affine,
                              old.track_running_stats, device="meta", bias=old.bias is not None)

    return replace_batch_norms(module, make, keep=LocalBatchNorm)


def build_model(mode: str, net: Optional[dict] = None, shard_size: Optional[int] = None,
                dtype: torch.dtype = torch.float32) -> nn.Module:
    """The network of Chapter 8's runs: :func:`~bnkit.experiments.small_batch.conv_net` with batch norm.

    Parameters
    ----------
    mode : {"plain", "sync", "local"}
        ``"plain"``: bnkit's ``BatchNorm*d`` (each rank's own statistics when run in
        processes; the whole batch's in one process). ``"sync"``: converted to
        :class:`~bnkit.torch.sync.SyncBatchNorm`. ``"local"``: converted to
        :class:`LocalBatchNorm` with ``shard_size``.
    net : dict, optional
        Arguments of :func:`~bnkit.experiments.small_batch.conv_net` (``seed`` fixes the initial weights, the
        same for every mode).
    shard_size : int, optional
        Needed for ``"local"``.
    dtype : torch.dtype, default float32
    """
    if mode not in MODES:
        raise ValueError(f"mode must be one of {MODES} (got {mode!r})")
    model = conv_net("batch", **dict(net or {})).to(dtype)
    if mode == "sync":
        return SyncBatchNorm.convert_sync_batchnorm(model)
    if mode == "local":
        if shard_size is None:
            raise ValueError("mode 'local' needs shard_size")
        return convert_local_batchnorm(model, shard_size)
    return model


def shard_slices(sizes: Sequence[int]) -> List[slice]:
    """Consecutive slices of lengths ``sizes``: rank :math:`k`'s part of the batch.

    Examples
    --------
    >>> shard_slices([3, 0, 2])
    [slice(0, 3, None), slice(3, 3, None), slice(3, 5, None)]
    """
    sizes = [int(s) for s in sizes]
    if not sizes or min(sizes) < 0:
        raise ValueError(f"shard sizes must be a non-empty list of ints >= 0 (got {sizes})")
    starts = [sum(sizes[:k]) for k in range(len(sizes) + 1)]
    return [slice(a, b) for a, b in zip(starts[:-1], starts[1:])]


# --------------------------------------------------------------------------- one layer


def layer_steps(layer: nn.Module, xs: Sequence[torch.Tensor],
                grads: Sequence[torch.Tensor]) -> Dict[str, list]:
    r"""Forward and backward of ``layer`` once per step; what it computed.

    Parameters
    ----------
    layer : nn.Module
        A batch-norm layer; its parameter gradients are reset after every step.
    xs : sequence of Tensor of shape (N, C, ...)
        The inputs, one per step.
    grads : sequence of Tensor
        :math:`\partial L/\partial y` of each step, shaped like ``xs``.

    Returns
    -------
    dict
        ``output``, ``grad_input``, ``grad_weight``, ``grad_bias``: one Tensor
        per step (None without the parameter); ``state``: the final state dict.
    """
    if len(xs) != len(grads) or any(a.shape != b.shape for a, b in zip(xs, grads)):
        raise ValueError("xs and grads need the same number of steps and shapes (got "
                         f"{[tuple(a.shape) for a in xs]} and {[tuple(b.shape) for b in grads]})")
    out: Dict[str, list] = {"output": [], "grad_input": [], "grad_weight": [], "grad_bias": []}
    for x, g in zip(xs, grads):
        x = x.detach().clone().requires_grad_(True)
        y = layer(x)
        y.backward(g)
        out["output"].append(y.detach())
        out["grad_input"].append(x.grad)
        for name in ("weight", "bias"):
            p = getattr(layer, name)
            out[f"grad_{name}"].append(None if p is None else p.grad.clone())
            if p is not None:
                p.grad = None
    out["state"] = {k: v.clone() for k, v in layer.state_dict().items()}
    return out


def _layer_worker(rank: int, world_size: int, xs, grads, sizes, sync: bool) -> dict:
    shard = shard_slices(sizes)[rank]
    c = xs[0].shape[1]
    layer = (SyncBatchNorm(c, dtype=xs[0].dtype) if sync
             else LocalBatchNorm(c, shard_size=max(1, sizes[rank]), dtype=xs[0].dtype))
    return layer_steps(layer, [x[shard] for x in xs], [g[shard] for g in grads])


def run_layer_on_shards(xs: Sequence[torch.Tensor], grads: Sequence[torch.Tensor],
                        shard_sizes: Sequence[int], sync: bool = True,
                        timeout: float = 120.0) -> dict:
    r"""Train one batch-norm layer on ``len(shard_sizes)`` processes, rank :math:`k` on shard :math:`k`.

    Each rank builds the same fresh layer -- :class:`~bnkit.torch.sync.SyncBatchNorm`
    (``sync``) or plain batch norm -- and runs :func:`layer_steps` on its
    shard of every step's batch (``shard_sizes[k]`` samples, consecutive).

    Returns
    -------
    dict
        ``output``, ``grad_input``: the ranks' shards concatenated, one per step;
        ``grad_weight``, ``grad_bias``: summed over the ranks (as DDP's
        all-reduce would, before it divides by :math:`W`); ``states``: every
        rank's final state dict.
    """
    sizes = [int(s) for s in shard_sizes]
    for x in xs:
        if sum(sizes) != x.shape[0]:
            raise ValueError(f"shard_sizes {sizes} must add up to the batch size {x.shape[0]}")
    ranks = run_processes(_layer_worker, len(sizes), (list(xs), list(grads), sizes, sync),
                          timeout=timeout)
    steps = range(len(xs))
    return {"output": [torch.cat([r["output"][s] for r in ranks]) for s in steps],
            "grad_input": [torch.cat([r["grad_input"][s] for r in ranks]) for s in steps],
            "grad_weight": [sum(r["grad_weight"][s] for r in ranks) for s in steps],
            "grad_bias": [sum(r["grad_bias"][s] for r in ranks) for s in steps],
            "states": [r["state"] for r in ranks]}


# --------------------------------------------------------------------------- a model


def _sgd(model: nn.Module, lr: float, momentum: float) -> torch.optim.Optimizer:
    return torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)


def _data_parallel_worker(rank: int, world_size: int, mode: str, net: dict, dtype,
                          xs, ys, lr: float, momentum: float) -> dict:
    model = build_model("sync" if mode == "sync" else "plain", net, dtype=dtype)
    ddp = DistributedDataParallel(model)          # broadcast_buffers=True: rank 0's buffers
    optimizer = _sgd(ddp, lr, momentum)
    losses = []
    for x, y in zip(xs, ys):
        shard = slice(rank * len(x) // world_size, (rank + 1) * len(x) // world_size)
        loss = F.cross_entropy(ddp(x[shard]), y[shard])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        t = loss.detach().clone()
        dist.all_reduce(t)
        losses.append(float(t) / world_size)
    return {"state": {k: v.clone() for k, v in model.state_dict().items()}, "losses": losses}


def run_data_parallel(mode: str, world_size: int, xs: Sequence[torch.Tensor],
                      ys: Sequence[torch.Tensor], net: Optional[dict] = None,
                      lr: float = 0.05, momentum: float = 0.9,
                      dtype: torch.dtype = torch.float64, timeout: float = 120.0) -> List[dict]:
    r"""Train :func:`build_model` with DDP on ``world_size`` real processes, one step per batch.

    Every rank builds the same network (seeded), wraps it in
    ``DistributedDataParallel`` and, for each batch of ``xs``, runs forward and
    backward on its equal shard of ``len(x) / world_size`` samples (rank
    :math:`k`: the :math:`k`-th), then one SGD step on DDP's averaged gradient.

    Parameters
    ----------
    mode : {"sync", "plain"}
        Synchronized batch norm, or plain batch norm on every rank.
    world_size : int
    xs, ys : sequences of Tensors
        Images (N, 1, 28, 28) and labels (N,) of each step; :math:`N` a multiple of ``world_size``.
    net : dict, optional
        Arguments of :func:`~bnkit.experiments.small_batch.conv_net`.
    lr, momentum : float
        Of :class:`torch.optim.SGD`.
    dtype : torch.dtype, default float64

    Returns
    -------
    list of dict, one per rank
        ``state``: the rank's final state dict; ``losses``: the whole batch's
        mean loss at each step (the ranks' losses averaged).
    """
    if mode not in ("sync", "plain"):
        raise ValueError(f"mode must be 'sync' or 'plain' (got {mode!r})")
    for x in xs:
        if len(x) % world_size:
            raise ValueError(f"every batch size must be a multiple of world_size={world_size} "
                             f"(got {len(x)})")
    return run_processes(_data_parallel_worker, world_size,
                         (mode, dict(net or {}), dtype, [x.to(dtype) for x in xs], list(ys),
                          float(lr), float(momentum)), timeout=timeout)


def simulate_data_parallel(mode: str, world_size: int, xs: Sequence[torch.Tensor],
                           ys: Sequence[torch.Tensor], net: Optional[dict] = None,
                           lr: float = 0.05, momentum: float = 0.9,
                           dtype: torch.dtype = torch.float64) -> dict:
    r""":func:`run_data_parallel` simulated in this process.

    ``"sync"``: plain batch norm over each whole batch; ``"plain"`` (every rank
    its own statistics): :class:`LocalBatchNorm` with shards of
    ``len(x) / world_size`` samples. One SGD step per batch on the mean loss
    over the batch.

    Returns
    -------
    dict
        ``state``: the final state dict (rank 0's, in the live run);
        ``losses``: the mean loss of each step.
    """
    if mode not in ("sync", "plain"):
        raise ValueError(f"mode must be 'sync' or 'plain' (got {mode!r})")
    sizes = {len(x) for x in xs}
    if len(sizes) != 1 or next(iter(sizes)) % world_size:
        raise ValueError(f"the batches must have one size, a multiple of world_size={world_size} "
                         f"(got {sorted(sizes)})")
    n = next(iter(sizes)) // world_size
    model = build_model("plain" if mode == "sync" else "local", net, shard_size=n, dtype=dtype)
    optimizer = _sgd(model, lr, momentum)
    losses = []
    for x, y in zip(xs, ys):
        loss = F.cross_entropy(model(x.to(dtype)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(float(loss.detach()))
    return {"state": copy.deepcopy(model.state_dict()), "losses": losses}
