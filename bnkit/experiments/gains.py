r"""BN's gain :math:`\gamma/\sigma`, and Santurkar et al.'s Theorem 4.1 measured on a network.

A BN layer maps a unit's pre-activations :math:`u_j \in \mathbb R^m` over the
batch to :math:`z_j = \gamma_j \hat u_j + \beta_j`, with
:math:`\hat u_j = (u_j - \mu_j)/\sqrt{\sigma_j^2 + \epsilon}`. Its backward pass
(Chapter 2) gives, for :math:`g_j = \partial\mathcal L/\partial z_j`,

.. math::

    \Bigl\lVert \frac{\partial\mathcal L}{\partial u_j} \Bigr\rVert^2
    = \frac{\gamma_j^2}{\sigma_j^2 + \epsilon}\Bigl(\lVert g_j\rVert^2
      - \tfrac1m \langle \mathbf 1, g_j\rangle^2 - \tfrac{2 - c_j}{m} \langle g_j, \hat u_j\rangle^2\Bigr),
    \qquad c_j = \frac{\sigma_j^2}{\sigma_j^2 + \epsilon} \le 1.

Santurkar et al.'s Theorem 4.1 states the bound with :math:`c_j = 1`
(:math:`\epsilon = 0`, where it is an equality): the gradient reaching the
layer below BN is the gradient at BN's output, with its components along
:math:`\mathbf 1` and :math:`\hat u_j` removed, *times* :math:`\gamma_j^2/\sigma_j^2`.
Whether BN shrinks or amplifies gradients therefore depends on that factor:
below 1 it shrinks them, above 1 it can amplify them. Because BN's output does
not depend on the scale of the weights feeding it, :math:`\sigma_j` -- and with
it the factor -- is set by that free scale (at initialization, by the init
standard deviation).

* :func:`bn_input_std` -- :math:`\sigma_j`; :func:`gain_ratios` -- :math:`\gamma_j^2/(\sigma_j^2 + \epsilon)` of every
  unit of every BN layer on a batch; :func:`input_weight_norms` -- the norm of
  the weights feeding each BN layer.
* :func:`theorem41` -- both sides of the identity above, per unit, for one
  BN layer on a batch.
* :func:`gains_callback` -- logs the medians during training.

All need an :class:`~bnkit.experiments.MLP` (blocks with ``linear`` and
``norm``); every measurement leaves the model untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .probes import BatchSource, LossFn, batch_at, preserved_state

__all__ = ["bn_blocks", "bn_input_std", "gain_ratios", "input_weight_norms", "Theorem41", "theorem41", "gains_callback"]


def bn_blocks(model: nn.Module) -> List[int]:
    """Indices of the blocks of ``model`` (an MLP) whose layer has batch norm."""
    return [i for i, b in enumerate(model.blocks) if getattr(b, "has_batch_norm", False)]


def _bn_io(model: nn.Module, x: torch.Tensor, layers: List[int]):
    """Run ``model`` on ``x`` and capture, for each BN block in ``layers``, the BN input and output."""
    captured = {}
    handles = []
    for i in layers:
        def hook(module, inputs, output, i=i):
            captured[i] = (inputs[0], output)
        handles.append(model.blocks[i].norm.register_forward_hook(hook))
    try:
        out = model(x)
    finally:
        for h in handles:
            h.remove()
    return out, captured


@torch.no_grad()
def bn_input_std(model: nn.Module, x: torch.Tensor) -> List[np.ndarray]:
    r"""Batch standard deviation :math:`\sigma_j` of every BN layer's input on the batch ``x`` (training mode).

    The biased one, what BN divides by. One array of shape ``(D_l,)`` per BN
    block, in the order of :func:`bn_blocks`.
    """
    layers = bn_blocks(model)
    with preserved_state(model, training=True):
        _, io = _bn_io(model, x, layers)
    return [io[i][0].double().std(0, unbiased=False).numpy() for i in layers]


def gain_ratios(model: nn.Module, x: torch.Tensor) -> List[np.ndarray]:
    r""":math:`\gamma_j^2 / (\sigma_j^2 + \epsilon)` for every unit of every BN layer, on the batch ``x``.

    :math:`\sigma_j` as in :func:`bn_input_std`. One array of shape ``(D_l,)``
    per BN block, in the order of :func:`bn_blocks`.
    """
    out = []
    for i, std in zip(bn_blocks(model), bn_input_std(model, x)):
        bn = model.blocks[i].norm
        out.append(bn.weight.detach().double().numpy() ** 2 / (std ** 2 + bn.eps))
    return out


@torch.no_grad()
def input_weight_norms(model: nn.Module) -> np.ndarray:
    r"""Frobenius norm :math:`\lVert W_l\rVert_F` of the weights feeding each BN layer, shape ``(len(bn_blocks),)``."""
    return np.array([float(model.blocks[i].linear.weight.double().norm()) for i in bn_blocks(model)])


@dataclass
class Theorem41:
    r"""Both sides of Theorem 4.1 for the units of one BN layer (arrays of shape ``(D,)``).

    ``grad_in_sq``: :math:`\lVert\partial\mathcal L/\partial u_j\rVert^2`, the gradient
    reaching the layer below; ``grad_out_sq``: :math:`\lVert g_j\rVert^2` at BN's
    output; ``gain_ratio``: :math:`\gamma_j^2/(\sigma_j^2+\epsilon)`; ``bound``:
    the theorem's right-hand side (with :math:`\sigma_j^2 + \epsilon`);
    ``exact``: the identity with the :math:`\epsilon` correction :math:`2 - c_j`.
    """

    grad_in_sq: np.ndarray
    grad_out_sq: np.ndarray
    gain_ratio: np.ndarray
    bound: np.ndarray
    exact: np.ndarray


def theorem41(model: nn.Module, x: torch.Tensor, y: torch.Tensor, layer: int,
              loss_fn: LossFn = F.cross_entropy) -> Theorem41:
    """Measure Theorem 4.1 on BN block ``layer`` of ``model`` for the batch ``(x, y)`` (in float64).

    The gradients come from autograd through the model's own BN; the
    right-hand sides from the BN output gradient and the batch statistics.
    The model is left as it was.
    """
    if layer not in bn_blocks(model):
        raise ValueError(f"block {layer} has no batch norm (BN blocks: {bn_blocks(model)})")
    bn = model.blocks[layer].norm
    with preserved_state(model, training=True):
        out, io = _bn_io(model, x, [layer])
        u, z = io[layer]
        g_in, g_out = torch.autograd.grad(loss_fn(out, y), [u, z])
    u, g_in, g_out = u.detach().double(), g_in.double(), g_out.double()
    m = u.shape[0]
    var = u.var(0, unbiased=False)
    u_hat = (u - u.mean(0)) / torch.sqrt(var + bn.eps)
    c = var / (var + bn.eps)
    ratio = bn.weight.detach().double() ** 2 / (var + bn.eps)
    sq = (g_out ** 2).sum(0)
    ones = g_out.sum(0) ** 2 / m
    along = (g_out * u_hat).sum(0) ** 2 / m
    return Theorem41(grad_in_sq=(g_in ** 2).sum(0).numpy(), grad_out_sq=sq.numpy(), gain_ratio=ratio.numpy(),
                     bound=(ratio * (sq - ones - along)).numpy(),
                     exact=(ratio * (sq - ones - (2 - c) * along)).numpy())


def gains_callback(batch: BatchSource, prefix: str = "bn") -> Callable:
    r"""A :func:`bnkit.experiments.train` callback logging BN's gains on ``batch``.

    Logs, one value per BN layer: ``{prefix}/gain_ratio`` (median over units of
    :math:`\gamma_j^2/(\sigma_j^2+\epsilon)`), ``{prefix}/gamma`` (median
    :math:`|\gamma_j|`), ``{prefix}/input_std`` (median :math:`\sigma_j`) and
    ``{prefix}/weight_norm`` (:func:`input_weight_norms`). Does nothing in a
    network without BN.
    """
    def callback(ctx) -> None:
        layers = bn_blocks(ctx.model)
        if not layers:
            return
        x, _ = batch_at(batch, ctx)
        stds = bn_input_std(ctx.model, x)
        norms = [ctx.model.blocks[i].norm for i in layers]
        gammas = [bn.weight.detach().double().numpy() for bn in norms]
        ratios = [g ** 2 / (s ** 2 + bn.eps) for g, s, bn in zip(gammas, stds, norms)]
        ctx.history.log(f"{prefix}/gain_ratio", ctx.step, [np.median(r) for r in ratios])
        ctx.history.log(f"{prefix}/gamma", ctx.step, [np.median(np.abs(g)) for g in gammas])
        ctx.history.log(f"{prefix}/input_std", ctx.step, [np.median(s) for s in stds])
        ctx.history.log(f"{prefix}/weight_norm", ctx.step, input_weight_norms(ctx.model))
    return callback
