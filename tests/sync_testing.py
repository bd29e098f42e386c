r"""Test support for SyncBatchNorm: train a layer on shards in real processes, collect the results.

Not part of the library: the multi-process runner of the tests (and a plain
batch-norm layer for inputs of any rank, the unsynchronized baseline). Each
process is started by :func:`bnkit.torch.run_processes` over ``gloo`` on
127.0.0.1 and imports this module by name (it sits next to the tests, which
pytest puts on ``sys.path``).
"""

from typing import Dict, List, Optional, Sequence

import torch
from torch import nn

from bnkit.experiments.data_parallel import layer_steps
from bnkit.torch import SyncBatchNorm, run_processes
from bnkit.torch.modules import BatchNormBase


def _as_steps(t) -> List[torch.Tensor]:
    return [t] if isinstance(t, torch.Tensor) else list(t)


class AnyRankBatchNorm(BatchNormBase):
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
        ``grad_bias`` (shape (C,), None without them): lists with one
        Tensor per step, or single Tensors when ``x`` is a Tensor;
        ``state_dicts``: a one-element list with the final state dict.
    """
    xs, gs = _as_steps(x), _as_steps(grad_output)
    out = layer_steps(layer, xs, gs)
    state = out.pop("state")
    if isinstance(x, torch.Tensor):
        out = {k: v[0] for k, v in out.items()}
    out["state_dicts"] = [state]
    return out


def shard_worker(rank: int, world_size: int, cases: Sequence[dict]) -> List[dict]:
    """Run on each rank by :func:`run_shard_cases`: every case on this rank's shard."""
    results = []
    for case in cases:
        xs, gs = _as_steps(case["x"]), _as_steps(case["grad_output"])
        sizes = list(case["shard_sizes"])
        shard = slice(sum(sizes[:rank]), sum(sizes[:rank + 1]))
        options = dict(case.get("options") or {})
        layer = SyncBatchNorm if options.pop("sync", True) else AnyRankBatchNorm
        dtype = options.pop("dtype", xs[0].dtype)
        bn = layer(xs[0].shape[1], dtype=dtype, **options)
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
    per_rank = run_processes(shard_worker, world_size, (list(cases),), timeout=timeout)
    return assemble(cases, per_rank)


def assemble(cases: Sequence[dict], per_rank: Sequence[List[dict]]) -> List[dict]:
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
    what it computed.

    Returns
    -------
    dict
        ``output``, ``grad_input``: the ranks' shards concatenated;
        ``grad_weight``, ``grad_bias``: summed over the ranks (None without
        them), one per step when ``x`` is a sequence; ``state_dicts``: every
        rank's final state dict.
    """
    case = {"x": x, "grad_output": grad_output, "shard_sizes": list(shard_sizes),
            "state_dict": state_dict, "options": options}
    return run_shard_cases([case], timeout=timeout)[0]
