r"""What every measurement of a training network needs: losses and gradients at other weights.

The measurements of Chapter 6 (:mod:`bnkit.experiments.ics`,
:mod:`bnkit.experiments.landscape`) evaluate a model's loss and gradient at
weights other than its own -- the lower layers moved by one SGD step, or all
weights moved along the gradient -- without touching the model. The pieces:

* :func:`preserved_state` -- run a block in training mode with the noise of
  :mod:`bnkit.experiments.noise` frozen; restore buffers (BN running
  statistics) and mode afterwards.
* :func:`parameter_copies`, :func:`loss_and_grads` -- the loss
  :math:`\mathcal L(w; x, y)` and its gradient at any parameter dict
  :math:`w`, through ``torch.func.functional_call``.
* :func:`weight_layers` -- the model's ``nn.Linear`` layers in forward order.
* :func:`flat` -- tensors concatenated into one float64 vector.
* :func:`fixed_batch` -- a seeded sample of training examples.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, List, Mapping, Sequence, Tuple

import numpy as np
import torch
from torch import nn
from torch.func import functional_call

from .noise import frozen_noise

__all__ = [
    "LossFn",
    "preserved_state",
    "weight_layers",
    "parameter_copies",
    "buffer_copies",
    "loss_and_grads",
    "flat",
    "fixed_batch",
]

#: ``loss_fn(model(x), y) -> scalar tensor``.
LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


@contextlib.contextmanager
def preserved_state(model: nn.Module, training: bool = True) -> Iterator[None]:
    """Run the block with ``model`` in training mode (or eval), noise frozen; restore buffers and mode after.

    Buffers (BN running statistics and counters) are copied before and
    written back after, so a measurement's forward passes leave no trace.
    """
    saved = {k: b.detach().clone() for k, b in model.named_buffers()}
    was_training = model.training
    model.train(training)
    try:
        with frozen_noise(model):
            yield
    finally:
        model.train(was_training)
        with torch.no_grad():
            for k, b in model.named_buffers():
                b.copy_(saved[k])


def weight_layers(model: nn.Module) -> List[Tuple[str, nn.Module]]:
    """``(name, module)`` of every ``nn.Linear`` in ``model``, in registration (= forward) order."""
    return [(n, m) for n, m in model.named_modules() if isinstance(m, nn.Linear)]


def parameter_copies(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Detached copies of ``model``'s parameters, by name, each a leaf that requires grad."""
    return {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}


def buffer_copies(model: nn.Module) -> Dict[str, torch.Tensor]:
    """Detached views of ``model``'s buffers, by name (:func:`loss_and_grads` never writes them)."""
    return {n: b.detach() for n, b in model.named_buffers()}


def loss_and_grads(model: nn.Module, params: Mapping[str, torch.Tensor], buffers: Mapping[str, torch.Tensor],
                   x: torch.Tensor, y: torch.Tensor, loss_fn: LossFn,
                   wrt: Sequence[str]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    r"""The loss :math:`\mathcal L(w; x, y)` of ``model`` at parameters ``params`` and its gradient.

    Parameters
    ----------
    model : the module whose forward is evaluated (its own parameters unused).
    params : every parameter by name (e.g. from :func:`parameter_copies`);
        those named in ``wrt`` must require grad.
    buffers : every buffer by name; fresh copies go into each call, so BN's
        running statistics are never written.
    x, y : the batch, as ``loss_fn`` expects.
    loss_fn : ``loss_fn(output, y) -> scalar``.
    wrt : names of the parameters to differentiate.

    Returns
    -------
    ``(loss, grads)``: the detached scalar loss and one gradient per name in
    ``wrt``, each of its parameter's shape.
    """
    bufs = {k: b.clone() for k, b in buffers.items()}
    loss = loss_fn(functional_call(model, {**params, **bufs}, (x,)), y)
    return loss.detach(), list(torch.autograd.grad(loss, [params[k] for k in wrt]))


def flat(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """The tensors flattened and concatenated into one float64 vector."""
    return torch.cat([t.double().flatten() for t in tensors])


def fixed_batch(data: Mapping[str, torch.Tensor], size: int, seed: int = 0,
                split: str = "train") -> Tuple[torch.Tensor, torch.Tensor]:
    """``size`` examples of ``split`` drawn once without replacement (``np.random.default_rng(seed)``).

    Not simply the first ``size`` rows: a data set stored sorted by class
    would give a batch of one digit. Returns ``(x, y)`` of shapes
    ``(size, d)`` and ``(size,)``, in the data's order.
    """
    x, y = data[f"x_{split}"], data[f"y_{split}"]
    if not 0 < size <= len(x):
        raise ValueError(f"size must be in [1, {len(x)}], got {size}")
    idx = np.random.default_rng(seed).choice(len(x), size=size, replace=False)
    idx = torch.from_numpy(np.sort(idx))
    return x[idx], y[idx]
