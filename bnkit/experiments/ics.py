r"""Internal covariate shift measured by its effect on the gradient (Santurkar et al. 2018, Section 2.2).

**ICS by Definition 2.1** (:func:`ics`). For weight layer :math:`i` at step
:math:`t`, with loss :math:`\mathcal L` on the batch :math:`(x_t, y_t)`,

.. math::

    G_{t,i} = \nabla_{W_i} \mathcal L(W_1^{t}, \dots, W_k^{t}), \qquad
    G'_{t,i} = \nabla_{W_i} \mathcal L(W_1^{t+1}, \dots, W_{i-1}^{t+1}, W_i^{t}, \dots, W_k^{t}),

where :math:`W^{t+1} = W^{t} - \eta\, \nabla \mathcal L(W^t)` is the SGD step
on that same batch, applied only to the parameters *below* layer :math:`i`
(every parameter registered before :math:`W_i`: lower weights, biases, BN's
:math:`\gamma, \beta`). ICS is :math:`\lVert G - G' \rVert_2`; the paper also
reports :math:`\cos(G, G')`. It is how much layer :math:`i`'s gradient changes
because its input distribution moved.

Every measurement runs the model in training mode (BN uses batch statistics,
noise frozen at the current step's draw) and leaves the model untouched: its
parameters, running statistics and mode are as before.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from .probes import LossFn, buffer_copies, loss_and_grads, parameter_copies, preserved_state, weight_layers

__all__ = ["ICSResult", "ics", "ics_callback"]


@dataclass
class ICSResult:
    r"""Definition 2.1 at one step, one entry per measured layer (arrays of shape ``(k,)``).

    ``names``: the layers; ``grad_norm`` :math:`\lVert G\rVert`; ``diff_norm``
    :math:`\lVert G - G'\rVert` (the ICS); ``cosine`` :math:`\cos(G, G')`
    (NaN if a gradient is zero); ``loss``: the batch loss at :math:`W^t`.
    """

    names: List[str]
    grad_norm: np.ndarray
    diff_norm: np.ndarray
    cosine: np.ndarray
    loss: float

    @property
    def relative(self) -> np.ndarray:
        r""":math:`\lVert G - G'\rVert / \lVert G\rVert`."""
        with np.errstate(divide="ignore", invalid="ignore"):
            return self.diff_norm / self.grad_norm


def ics(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
        layers: Optional[Sequence] = None, loss_fn: LossFn = F.cross_entropy) -> ICSResult:
    r"""Internal covariate shift of ``model``'s weight layers on batch ``(x, y)`` (Santurkar et al., Def. 2.1).

    Parameters
    ----------
    model : an ``nn.Module``; its parameters must be registered in forward
        order (true for :func:`bnkit.experiments.mlp` and ``nn.Sequential``).
    x, y : the batch, shapes ``(N, d)`` and ``(N,)`` (whatever ``loss_fn`` takes).
    lr : the SGD step :math:`\eta` of the update of the lower layers.
    layers : which weight layers to measure: indices into
        :func:`weight_layers`, names, or modules. Default: all of them.
    loss_fn : ``loss_fn(model(x), y) -> scalar``; default cross-entropy.

    Returns
    -------
    ICSResult with, for each layer :math:`i`, :math:`\lVert G\rVert`,
    :math:`\lVert G - G'\rVert` and :math:`\cos(G, G')`, computed in float64
    from the model's gradients. The model is left as it was.
    """
    all_layers = weight_layers(model)
    if layers is None:
        chosen = all_layers
    else:
        chosen = []
        for l in layers:
            if isinstance(l, int):
                chosen.append(all_layers[l])
            elif isinstance(l, str):
                chosen.append((l, dict(model.named_modules())[l]))
            else:
                chosen.append(next((n, m) for n, m in all_layers if m is l))
    names = [n for n, _ in model.named_parameters()]
    with preserved_state(model, training=True):
        params = parameter_copies(model)
        buffers = buffer_copies(model)
        loss, grads = loss_and_grads(model, params, buffers, x, y, loss_fn, names)
        step = dict(zip(names, grads))
        g_norm, d_norm, cos = [], [], []
        for lname, layer in chosen:
            wname = f"{lname}.weight" if lname else "weight"
            below = names[:names.index(wname)]
            moved = dict(params)
            with torch.no_grad():
                for n in below:
                    moved[n] = (params[n] - lr * step[n]).requires_grad_(True)
            _, (g_after,) = loss_and_grads(model, moved, buffers, x, y, loss_fn, [wname])
            g = step[wname].double().flatten()
            g2 = g_after.double().flatten()
            gn, g2n = float(g.norm()), float(g2.norm())
            g_norm.append(gn)
            d_norm.append(float((g - g2).norm()))
            cos.append(float(g @ g2) / (gn * g2n) if gn > 0 and g2n > 0 else math.nan)
    return ICSResult([n for n, _ in chosen], np.array(g_norm), np.array(d_norm), np.array(cos), float(loss))


def ics_callback(x: torch.Tensor, y: torch.Tensor, layers: Optional[Sequence] = None,
                 lr: Optional[float] = None, prefix: str = "ics") -> Callable:
    """A :func:`bnkit.experiments.train` callback logging :func:`ics` on the fixed batch ``(x, y)``.

    Logs ``{prefix}/grad_norm``, ``{prefix}/diff_norm``, ``{prefix}/cosine``
    (each of shape ``(k,)`` per step) into the history; ``lr`` defaults to
    the training rate. Use with ``callback_every``.
    """
    def callback(ctx) -> None:
        r = ics(ctx.model, x, y, ctx.lr if lr is None else lr, layers)
        ctx.history.log(f"{prefix}/grad_norm", ctx.step, r.grad_norm)
        ctx.history.log(f"{prefix}/diff_norm", ctx.step, r.diff_norm)
        ctx.history.log(f"{prefix}/cosine", ctx.step, r.cosine)
    return callback
