r"""PreciseBN: recompute the population statistics of every BatchNorm with frozen weights.

The running statistics that training leaves behind are an exponential moving
average over batches seen under *old* weights. After training, the weights
are fixed, so the statistics can be measured instead: run the model over
:math:`K` batches, record each BatchNorm's batch mean :math:`\mu_k` and biased
batch variance :math:`\sigma^2_k` (:math:`m_k` values per channel), and
average with equal weight :math:`1/K` per batch. Two aggregations of the
variance are offered:

``"mean_of_variances"`` (the default; Ioffe & Szegedy 2015, Algorithm 2)
    .. math::

        \hat\mu = \frac{1}{K}\sum_k \mu_k, \qquad
        \hat\sigma^2 = \frac{1}{K}\sum_k \frac{m_k}{m_k - 1}\,\sigma^2_k

    the average of the per-batch *unbiased* variances -- exactly what a torch
    BatchNorm stores with ``momentum=None`` (cumulative average) after the
    same :math:`K` batches.

``"pooled"`` (:math:`E[x^2] - E[x]^2` over all the values seen)
    .. math::

        \hat\mu = \frac{1}{K}\sum_k \mu_k, \qquad
        \hat\sigma^2 = \frac{1}{K}\sum_k \big(\sigma^2_k + \mu_k^2\big) - \hat\mu^2
                     = \frac{1}{K}\sum_k \sigma^2_k + \frac{1}{K}\sum_k (\mu_k - \hat\mu)^2

    the biased variance of the concatenated batches (exactly so when they
    have equal sizes). It exceeds the average of the per-batch *biased*
    variances by the variance of the batch means. The default replaces that
    term by the Bessel factor, :math:`\frac{1}{K}\sum_k \sigma^2_k/(m_k - 1)`,
    which is its expected value only when the :math:`m_k` values of a batch
    are independent draws; when they are not (pixels of the same image, a
    batch of one class), the pooled variance is the faithful one.

Wu & Johnson (2021) call the recomputation PreciseBN.
"""

from __future__ import annotations

import itertools
from typing import Dict, Iterable, List, Optional

import torch
from torch import nn

from .modules import BatchNormBase

__all__ = ["recompute_batch_norm_stats", "AGGREGATIONS"]

#: The variance aggregations of :func:`recompute_batch_norm_stats`.
AGGREGATIONS = ("mean_of_variances", "pooled")

_BATCH_NORMS = (nn.modules.batchnorm._BatchNorm, BatchNormBase)


class _Accumulator:
    """float64 sums over batches of the per-channel mean, biased variance and m/(m-1)-scaled variance."""

    def __init__(self) -> None:
        self.count = 0
        self.sum_mean = self.sum_var = self.sum_unbiased = self.sum_sq_mean = None

    def __call__(self, module: nn.Module, args) -> None:
        x = args[0].detach()
        dims = (0,) + tuple(range(2, x.dim()))
        m = x.numel() // x.shape[1]
        var, mean = torch.var_mean(x.to(torch.float64), dim=dims, correction=0)
        unbiased = var * (m / (m - 1)) if m > 1 else torch.full_like(var, float("nan"))
        if self.count == 0:
            self.sum_mean, self.sum_var = torch.zeros_like(mean), torch.zeros_like(var)
            self.sum_unbiased, self.sum_sq_mean = torch.zeros_like(var), torch.zeros_like(mean)
        self.count += 1
        self.sum_mean += mean
        self.sum_var += var
        self.sum_unbiased += unbiased
        self.sum_sq_mean += mean * mean

    def statistics(self, aggregation: str):
        k = self.count
        mean = self.sum_mean / k
        if aggregation == "mean_of_variances":
            var = self.sum_unbiased / k
        else:
            # E[x^2] - E[x]^2 with E[x^2] = mean over batches of (sigma_k^2 + mu_k^2)
            var = (self.sum_var + self.sum_sq_mean) / k - mean * mean
        return mean, var


def recompute_batch_norm_stats(model: nn.Module, batches: Iterable,
                               num_batches: Optional[int] = None,
                               aggregation: str = "mean_of_variances") -> nn.Module:
    r"""Replace the running statistics of every BatchNorm in ``model`` by population statistics.

    The model runs forward over the batches under :func:`torch.no_grad`, with
    every BatchNorm in training mode (so each normalizes with its batch's
    statistics, as in training) and every other module in eval mode (dropout
    off). A forward pre-hook records, for each BatchNorm, the mean and biased
    variance of its input per channel (in float64); at the end
    ``running_mean`` and ``running_var`` are set to the equal-weight averages
    over the batches (see the module docstring for the two aggregations) and
    ``num_batches_tracked`` to the number of batches. Parameters are not
    touched, no gradient is computed, and the train/eval mode of every module
    is restored afterwards.

    Parameters
    ----------
    model : nn.Module
        Containing ``BatchNorm1d/2d/3d`` from ``torch.nn`` or :mod:`bnkit.torch`
        (any ``torch.nn.modules.batchnorm._BatchNorm``, e.g. ``SyncBatchNorm``
        on one process). Layers with ``track_running_stats=False``, and layers
        the forward pass never calls, are left as they are.
    batches : iterable
        Each item is an input batch (a Tensor, called as ``model(batch)``) or a
        tuple/list whose first element is (``(x, y)`` pairs from a
        ``DataLoader``). Each batch needs more than one value per channel.
    num_batches : int, optional
        Use the first ``num_batches`` batches; default: all of them.
    aggregation : {"mean_of_variances", "pooled"}, default "mean_of_variances"
        ``"mean_of_variances"``: :math:`\frac1K\sum_k \frac{m_k}{m_k-1}\sigma^2_k`
        (Ioffe & Szegedy's Algorithm 2; torch's ``momentum=None``).
        ``"pooled"``: :math:`\frac1K\sum_k(\sigma^2_k + \mu_k^2) - \hat\mu^2`, the
        biased variance of all the values (of the concatenated batches, when
        they have equal sizes). Both use :math:`\hat\mu = \frac1K\sum_k\mu_k`.

    Returns
    -------
    nn.Module
        ``model`` itself, its BatchNorm buffers updated in place.

    Raises
    ------
    TypeError
        ``model`` is not an ``nn.Module``.
    ValueError
        Unknown ``aggregation``; ``num_batches`` < 1; no BatchNorm with running
        statistics in ``model``; ``batches`` yields no batch, or fewer than
        ``num_batches``. On any error (also one raised by the forward pass)
        every running statistic and mode is restored to what it was.

    Examples
    --------
    >>> import torch
    >>> from torch import nn
    >>> import bnkit.torch as bnt
    >>> model = nn.Sequential(nn.Linear(4, 3), nn.BatchNorm1d(3)).eval()
    >>> data = torch.randn(64, 4)
    >>> _ = bnt.recompute_batch_norm_stats(model, data.split(16))
    >>> hidden = model[0](data)
    >>> torch.allclose(model[1].running_mean, hidden.mean(0), atol=1e-6)
    True
    >>> model.training                    # mode restored
    False
    """
    if not isinstance(model, nn.Module):
        raise TypeError(f"model must be an nn.Module (got {type(model).__name__})")
    if aggregation not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS} (got {aggregation!r})")
    if num_batches is not None and not (isinstance(num_batches, int) and num_batches >= 1):
        raise ValueError(f"num_batches must be a positive int or None (got {num_batches!r})")
    bns: List[nn.Module] = [mod for mod in model.modules()
                            if isinstance(mod, _BATCH_NORMS) and mod.track_running_stats
                            and mod.running_mean is not None]
    if not bns:
        raise ValueError("model has no BatchNorm layer with running statistics "
                         "(track_running_stats=True)")

    modes: Dict[nn.Module, bool] = {mod: mod.training for mod in model.modules()}
    saved = [(bn.running_mean.clone(), bn.running_var.clone(), bn.num_batches_tracked.clone())
             for bn in bns]
    accumulators = [_Accumulator() for _ in bns]
    handles = [bn.register_forward_pre_hook(acc) for bn, acc in zip(bns, accumulators)]
    done = False
    try:
        model.eval()
        for bn in bns:
            bn.train()
        if num_batches is not None:
            batches = itertools.islice(batches, num_batches)
        seen = 0
        with torch.no_grad():
            for batch in batches:
                model(batch[0] if isinstance(batch, (tuple, list)) else batch)
                seen += 1
        if seen == 0:
            raise ValueError("batches yielded no batch")
        if num_batches is not None and seen < num_batches:
            raise ValueError(f"batches yielded {seen} batches, fewer than "
                             f"num_batches={num_batches}")
        with torch.no_grad():
            for bn, acc in zip(bns, accumulators):
                if acc.count == 0:            # not on the forward path: left as it was
                    continue
                mean, var = acc.statistics(aggregation)
                bn.running_mean.copy_(mean.to(bn.running_mean.dtype))
                bn.running_var.copy_(var.to(bn.running_var.dtype))
                bn.num_batches_tracked.fill_(acc.count)
        done = True
    finally:
        for handle in handles:
            handle.remove()
        for mod, mode in modes.items():
            mod.train(mode)
        if not done:
            with torch.no_grad():
                for bn, (mean, var, count) in zip(bns, saved):
                    bn.running_mean.copy_(mean)
                    bn.running_var.copy_(var)
                    bn.num_batches_tracked.copy_(count)
    return model
