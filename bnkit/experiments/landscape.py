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

:func:`landscape` measures one step; :func:`landscape_callback` logs it during
:func:`bnkit.experiments.train`; :func:`bnkit.experiments.figures.plot_landscape`
draws it. As in :mod:`bnkit.experiments.ics`, the model runs in training
mode with BN noise frozen and is left untouched.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .probes import LossFn, buffer_copies, flat, loss_and_grads, parameter_copies, preserved_state

__all__ = [
    "LandscapeResult",
    "landscape",
    "landscape_callback",
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


def landscape_callback(x: torch.Tensor, y: torch.Tensor, eta_factors: Sequence[float] = DEFAULT_ETA_FACTORS,
                       prefix: str = "landscape") -> Callable:
    """A :func:`bnkit.experiments.train` callback logging :func:`landscape` on the fixed batch ``(x, y)``.

    Step sizes are ``eta_factors`` times the training rate. Logs
    ``{prefix}/loss`` and ``{prefix}/grad_diff`` (shape ``(E,)`` per step),
    ``{prefix}/loss0``, ``{prefix}/grad_norm`` and ``{prefix}/beta`` (scalars).
    """
    factors = np.asarray(eta_factors, dtype=np.float64)

    def callback(ctx) -> None:
        r = landscape(ctx.model, x, y, factors * ctx.lr)
        for k in ("loss", "grad_diff", "loss0", "grad_norm", "beta"):
            ctx.history.log(f"{prefix}/{k}", ctx.step, getattr(r, k))
    return callback
