r"""The loss landscape along the gradient (Santurkar et al. 2018, Section 3.1).

At a training step, with all parameters :math:`w` flattened into one vector,
loss :math:`\mathcal L` on a batch and its gradient :math:`g = \nabla\mathcal L(w)`,
take steps :math:`\eta` along :math:`-g` and measure

* **loss variation**: :math:`\mathcal L(w - \eta g)` for each :math:`\eta`;
  a wide range over :math:`\eta` means the loss is hard to predict from the
  gradient;
* **gradient predictiveness**: :math:`\lVert \nabla\mathcal L(w) - \nabla\mathcal L(w - \eta g)\rVert_2`;
  small means the gradient where we stand still describes the gradient
  where the step lands;
* **effective** :math:`\beta`-**smoothness**:

  .. math::

      \beta_{\text{eff}} = \max_{\eta > 0}
        \frac{\lVert \nabla\mathcal L(w) - \nabla\mathcal L(w - \eta g)\rVert_2}{\lVert \eta g\rVert_2},

  the largest Lipschitz constant of the gradient seen along that line. For a
  quadratic :math:`\tfrac12 w^\top A w` it is :math:`\lVert A g\rVert / \lVert g\rVert`
  for every :math:`\eta` (the curvature along :math:`g`).

:func:`sharpness` is the top eigenvalue :math:`\lambda_{\max}` of the Hessian of
the loss on a batch, the curvature in the worst direction, which bounds the
curvature along any direction (for a quadratic, :math:`\beta_{\text{eff}} \le
\lambda_{\max}`); Cohen et al. (2021) track it under full-batch gradient
descent, where it rises to about :math:`2/\eta` and stays there.

:func:`landscape` measures one step; :func:`landscape_callback` logs it during
:func:`bnkit.experiments.train`; :func:`bnkit.experiments.figures.plot_landscape`
draws it. As in :mod:`bnkit.experiments.ics`, the model runs in training
mode with BN noise frozen and is left untouched.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .probes import (BatchSource, LossFn, batch_at, buffer_copies, flat, loss_and_grads, parameter_copies,
                     preserved_state)

__all__ = [
    "LandscapeResult",
    "landscape",
    "landscape_callback",
    "sharpness",
    "sharpness_callback",
    "DEFAULT_ETA_FACTORS",
]

#: Step sizes along the gradient, as multiples of the training learning rate.
DEFAULT_ETA_FACTORS = (0.25, 0.5, 1.0, 2.0, 4.0)


@dataclass
class LandscapeResult:
    r"""The landscape along :math:`-g` at one step.

    ``etas`` (E,), ``loss`` (E,) :math:`\mathcal L(w - \eta g)`, ``grad_diff``
    (E,) :math:`\lVert \nabla\mathcal L(w) - \nabla\mathcal L(w-\eta g)\rVert`,
    ``loss0`` :math:`\mathcal L(w)`, ``grad_norm`` :math:`\lVert g\rVert`.
    """

    etas: np.ndarray
    loss: np.ndarray
    grad_diff: np.ndarray
    loss0: float
    grad_norm: float

    @property
    def beta(self) -> float:
        r"""Effective :math:`\beta`-smoothness: max over :math:`\eta > 0` of ``grad_diff / (eta * grad_norm)``."""
        pos = self.etas > 0
        if not pos.any() or self.grad_norm == 0:
            return float("nan")
        return float(np.max(self.grad_diff[pos] / (self.etas[pos] * self.grad_norm)))


def landscape(model: nn.Module, x: torch.Tensor, y: torch.Tensor, etas: Sequence[float],
              loss_fn: LossFn = F.cross_entropy) -> LandscapeResult:
    r"""Loss and gradient of ``model`` along its gradient direction on batch ``(x, y)``.

    Parameters
    ----------
    model : any ``nn.Module``; every parameter is part of :math:`w`.
    x, y : the batch (shapes as ``loss_fn`` expects, e.g. ``(N, d)``, ``(N,)``).
    etas : step sizes :math:`\eta \ge 0` (0 gives :math:`\mathcal L(w)` itself).
    loss_fn : ``loss_fn(model(x), y) -> scalar``; default cross-entropy.

    Returns
    -------
    LandscapeResult (norms in float64). The model is left as it was.
    """
    etas = np.asarray(etas, dtype=np.float64)
    if etas.ndim != 1 or (etas < 0).any():
        raise ValueError(f"etas must be a 1-D sequence of non-negative step sizes, got {etas}")
    names = [n for n, _ in model.named_parameters()]
    with preserved_state(model, training=True):
        params = parameter_copies(model)
        buffers = buffer_copies(model)
        loss0, g = loss_and_grads(model, params, buffers, x, y, loss_fn, names)
        g_flat = flat(g)
        losses, diffs = [], []
        for eta in etas:
            with torch.no_grad():
                moved = {n: (params[n] - float(eta) * gi).requires_grad_(True) for n, gi in zip(names, g)}
            loss, g2 = loss_and_grads(model, moved, buffers, x, y, loss_fn, names)
            losses.append(float(loss))
            diffs.append(float((g_flat - flat(g2)).norm()))
    return LandscapeResult(etas, np.array(losses), np.array(diffs), float(loss0), float(g_flat.norm()))


def landscape_callback(batch: BatchSource, eta_factors: Sequence[float] = DEFAULT_ETA_FACTORS,
                       prefix: str = "landscape") -> Callable:
    """A :func:`bnkit.experiments.train` callback logging :func:`landscape` on ``batch``.

    ``batch`` is a fixed ``(x, y)`` or a function of the step's context, e.g.
    :func:`~bnkit.experiments.probes.next_training_batch` (the step's own
    batch, before its update). Step sizes are ``eta_factors`` times the
    training rate. Logs
    ``{prefix}/loss`` and ``{prefix}/grad_diff`` (shape ``(E,)`` per step),
    ``{prefix}/loss0``, ``{prefix}/grad_norm`` and ``{prefix}/beta`` (scalars).
    """
    factors = np.asarray(eta_factors, dtype=np.float64)

    def callback(ctx) -> None:
        x, y = batch_at(batch, ctx)
        r = landscape(ctx.model, x, y, factors * ctx.lr)
        for k in ("loss", "grad_diff", "loss0", "grad_norm", "beta"):
            ctx.history.log(f"{prefix}/{k}", ctx.step, getattr(r, k))
    return callback


def sharpness(model: nn.Module, x: torch.Tensor, y: torch.Tensor, iterations: int = 20, seed: int = 0,
              loss_fn: LossFn = F.cross_entropy, h: float = 1e-5) -> float:
    r"""The top eigenvalue of the Hessian of ``model``'s loss on ``(x, y)``, by power iteration.

    Every parameter is part of :math:`w`. Each iteration is one
    Hessian-vector product by central differences of gradients,
    :math:`Hv \approx (\nabla\mathcal L(w + hv) - \nabla\mathcal L(w - hv))/2h`,
    on a float64 copy of the model (so layers with a once-differentiable
    backward, like :func:`bnkit.torch.batch_norm`, need no double
    backpropagation). The start vector is Gaussian, drawn from a generator
    seeded with ``seed``. Returns the Rayleigh quotient :math:`v^\top H v` of
    the last unit iterate: the eigenvalue of largest magnitude (the top one
    wherever the Hessian is nearly positive semi-definite, as near a
    minimum). The model is left as it was.
    """
    if iterations < 1:
        raise ValueError(f"iterations must be >= 1, got {iterations}")
    twin = copy.deepcopy(model).double()
    x = x.double() if torch.is_floating_point(x) else x
    names = [n for n, _ in twin.named_parameters()]
    with preserved_state(twin, training=True):
        params = parameter_copies(twin)
        buffers = buffer_copies(twin)

        def grad_at(v, sign):
            with torch.no_grad():
                moved = {n: (params[n] + sign * h * vi).requires_grad_(True) for n, vi in zip(names, v)}
            return loss_and_grads(twin, moved, buffers, x, y, loss_fn, names)[1]

        gen = torch.Generator().manual_seed(int(seed))
        v = [torch.randn(params[n].shape, generator=gen, dtype=torch.float64) for n in names]
        norm = flat(v).norm()
        v = [t / norm for t in v]
        rayleigh = float("nan")
        for _ in range(iterations):
            hv = [(a - b) / (2 * h) for a, b in zip(grad_at(v, 1.0), grad_at(v, -1.0))]
            rayleigh = float(flat(hv) @ flat(v))
            norm = flat(hv).norm()
            if norm == 0:
                return 0.0
            v = [t / norm for t in hv]
    return rayleigh


def sharpness_callback(batch: BatchSource, every: int = 500, iterations: int = 20,
                       prefix: str = "sharpness") -> Callable:
    """A :func:`bnkit.experiments.train` callback logging :func:`sharpness` on ``batch`` at every ``every``-th step.

    Logs ``{prefix}/top`` (a scalar) at steps that are multiples of ``every``
    (step 0 included); use with a ``callback_every`` that divides ``every``.
    """
    if every < 1:
        raise ValueError(f"every must be >= 1, got {every}")

    def callback(ctx) -> None:
        if ctx.step % every == 0:
            x, y = batch_at(batch, ctx)
            ctx.history.log(f"{prefix}/top", ctx.step, sharpness(ctx.model, x, y, iterations=iterations))
    return callback
