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
:func:`bnkit.experiments.train`; :func:`plot_landscape` draws min--max bands
over training. As in :mod:`bnkit.experiments.ics`, the model runs in training
mode with BN noise frozen and is left untouched.
"""

from __future__ import annotations

import argparse
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .ics import LossFn, _grads, preserved_state

__all__ = [
    "LandscapeResult",
    "landscape",
    "landscape_callback",
    "plot_landscape",
    "DEFAULT_ETA_FACTORS",
    "run_landscape_command",
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
        params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        loss0, g = _grads(model, params, buffers, x, y, loss_fn, names)
        g_flat = torch.cat([t.double().flatten() for t in g])
        losses, diffs = [], []
        for eta in etas:
            with torch.no_grad():
                moved = {n: (params[n] - float(eta) * gi).requires_grad_(True) for n, gi in zip(names, g)}
            loss, g2 = _grads(model, moved, buffers, x, y, loss_fn, names)
            losses.append(float(loss))
            diffs.append(float((g_flat - torch.cat([t.double().flatten() for t in g2])).norm()))
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


def plot_landscape(histories: Dict[str, object], axes=None, prefix: str = "landscape",
                   colors: Optional[Dict[str, str]] = None, title: str = ""):
    r"""Three panels over training: loss variation band, gradient-predictiveness band, :math:`\beta_{\text{eff}}`.

    Each band spans the min and max over the step sizes :math:`\eta` at every
    measured step. ``histories`` maps a label ("plain", "BN", "noisy BN") to a
    History with the series of :func:`landscape_callback`; ``axes`` is an
    optional row of 3 axes. Returns the figure.
    """
    import matplotlib.pyplot as plt

    from .ics import _net_color

    if axes is None:
        fig, axes = plt.subplots(1, 3, figsize=(11.0, 3.4), layout="constrained")
    else:
        fig = axes[0].figure
    for i, (label, h) in enumerate(histories.items()):
        c = _net_color(label, i, colors)
        steps, loss = h.logged(f"{prefix}/loss")
        _, diff = h.logged(f"{prefix}/grad_diff")
        _, beta = h.logged(f"{prefix}/beta")
        axes[0].fill_between(steps, loss.min(1), loss.max(1), color=c, alpha=0.35, lw=0, label=label)
        axes[1].fill_between(steps, diff.min(1), diff.max(1), color=c, alpha=0.35, lw=0, label=label)
        axes[2].plot(steps, beta, color=c, label=label)
    axes[0].set_ylabel(r"loss $\mathcal{L}(w - \eta g)$")
    axes[1].set_ylabel(r"$\|\nabla\mathcal{L}(w) - \nabla\mathcal{L}(w - \eta g)\|_2$")
    axes[2].set_ylabel(r"effective $\beta$-smoothness")
    for ax, t in zip(axes, ("loss variation", "gradient predictiveness", r"$\beta$-smoothness")):
        ax.set_xlabel("training step")
        ax.set_title(f"{title}: {t}" if title else t)
    for ax in axes:
        ax.set_yscale("log")
    axes[0].legend(fontsize="small")
    return fig


def _configure_landscape(parser: argparse.ArgumentParser) -> None:
    from .ics import add_experiment_arguments

    add_experiment_arguments(parser)
    parser.add_argument("--eta-factors", type=float, nargs="+", default=list(DEFAULT_ETA_FACTORS),
                        help="step sizes along the gradient, in multiples of --lr")


def run_landscape_command(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments landscape``: the landscape along the gradient, plain vs BN.

    Writes ``landscape-<variant>-depth<d>.json`` and ``landscape-depth<d>.png``
    to ``--out`` and prints a JSON summary (final accuracy, median loss range
    over the step sizes, median effective beta-smoothness).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..plotting import use_book_style
    from .cli import load_data
    from .ics import run_experiment

    use_book_style()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    res = run_experiment(load_data(args), steps=args.steps, depth=args.depth, lr=args.lr,
                         activation=args.activation, init_std=args.init_std, every=args.every, seed=args.seed,
                         variants=("plain", "BN"), measure=("landscape",), eta_factors=tuple(args.eta_factors),
                         progress=args.progress, out=out, resume=args.resume)
    fig = plot_landscape(res, title=f"{args.depth} hidden layers")
    png = out / f"landscape-depth{args.depth}.png"
    fig.savefig(png)
    plt.close(fig)
    summary = {}
    for v, h in res.items():
        loss = h.logged("landscape/loss")[1]
        summary[v] = {"final_accuracy": h.final_accuracy,
                      "median_loss_range": float(np.median(loss.max(1) - loss.min(1))),
                      "median_beta": float(np.median(h.logged("landscape/beta")[1]))}
    print(json.dumps(summary, indent=1))
    print(f"wrote {png}")
    return 0


def _register_command() -> None:
    from .cli import register as register_command

    register_command("landscape", "Santurkar et al.'s loss landscape along the gradient over training",
                     _configure_landscape)(run_landscape_command)


_register_command()
