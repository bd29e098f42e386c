r"""Why normalize: a deep sigmoid network at initialisation, without and with batch norm.

The book opens with this experiment (Chapter 1). A deep MLP of sigmoid units
(:func:`bnkit.experiments.mlp`, the paper's network made deeper) is evaluated
at initialisation on one batch, with every hidden layer's pre-activation
:math:`z_\ell` (the input to its nonlinearity) recorded, and the gradient of the
cross-entropy loss with respect to every hidden layer's weights :math:`W_\ell`.
The same weights with a batch-norm layer before each sigmoid give the
comparison: only the normalization differs.

Per hidden layer :math:`\ell`, :func:`saturation_profile` reports

* the **saturated fraction**: the share of the :math:`N \times D` values of
  :math:`z_\ell` where the nonlinearity's slope is below ``threshold`` times
  its largest slope, :math:`\phi'(z) < t\,\phi'(0)` (:func:`saturated_fraction`);
  such a unit passes on less than that share of the gradient it could;
* the **unit spread**: each unit's standard deviation over the batch, averaged
  over the units, :math:`\frac1D \sum_j \operatorname{std}_i z_{ij}`; when it
  shrinks, every unit outputs nearly the same value for every example;
* the **offset spread**: the standard deviation over the units of their batch
  means, :math:`\operatorname{std}_j \bar z_{j}`: how far apart the units'
  distributions have drifted;
* the **gradient norm** :math:`\lVert \partial L / \partial W_\ell \rVert_F`.

Needs torch.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Dict, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F

from .models import MLP, mlp

__all__ = ["SLOPE_AT_ZERO", "activation_slope", "saturated_fraction", "saturation_bound",
           "SaturationProfile",
           "saturation_profile", "deep_mlp", "profiles_over_seeds"]

#: :math:`\phi'(0)`, the largest slope of each nonlinearity.
SLOPE_AT_ZERO: Dict[str, float] = {"sigmoid": 0.25, "tanh": 1.0}


def activation_slope(z, activation: str = "sigmoid") -> np.ndarray:
    r"""The nonlinearity's derivative :math:`\phi'(z)`, elementwise.

    Sigmoid: :math:`\sigma(z)(1 - \sigma(z)) = \tfrac14 \operatorname{sech}^2(z/2)`;
    tanh: :math:`1 - \tanh^2 z = \operatorname{sech}^2 z`.

    Parameters
    ----------
    z : array_like, any shape
    activation : {"sigmoid", "tanh"}

    Returns
    -------
    ndarray, the shape of ``z``, float64
    """
    if activation not in SLOPE_AT_ZERO:
        raise ValueError(f"activation must be one of {tuple(SLOPE_AT_ZERO)} (got {activation!r})")
    z = np.asarray(z, dtype=np.float64)
    # sech^2 keeps full relative precision in the tails, where s(1 - s) or 1 - tanh^2 cancel
    half = 0.5 if activation == "sigmoid" else 1.0
    with np.errstate(over="ignore"):                 # cosh overflows to inf: slope 0
        return SLOPE_AT_ZERO[activation] / np.cosh(half * z) ** 2


def saturated_fraction(z, activation: str = "sigmoid", threshold: float = 0.1) -> float:
    r"""Share of the values of ``z`` where :math:`\phi'(z) < t\,\phi'(0)`.

    With the default :math:`t = 0.1`, a sigmoid is saturated for
    :math:`|z| > 3.64` and a tanh for :math:`|z| > 1.82`
    (:func:`saturation_bound`).

    Parameters
    ----------
    z : array_like, any shape
        Pre-activations (inputs of the nonlinearity).
    activation : {"sigmoid", "tanh"}
    threshold : float in (0, 1), default 0.1

    Returns
    -------
    float in [0, 1]
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1) (got {threshold})")
    slope = activation_slope(z, activation)
    if slope.size == 0:
        raise ValueError("z is empty")
    return float(np.mean(slope < threshold * SLOPE_AT_ZERO[activation]))


def saturation_bound(activation: str = "sigmoid", threshold: float = 0.1) -> float:
    r""":math:`z^* > 0` with :math:`\phi'(\pm z^*) = t\,\phi'(0)`: the unit is saturated for :math:`|z| > z^*`.

    Sigmoid: :math:`\sigma'(z) = \tfrac14 \operatorname{sech}^2(z/2)`, so
    :math:`z^* = 2 \operatorname{arccosh}(1/\sqrt t)`; tanh:
    :math:`z^* = \operatorname{arccosh}(1/\sqrt t)`.
    """
    if activation not in SLOPE_AT_ZERO:
        raise ValueError(f"activation must be one of {tuple(SLOPE_AT_ZERO)} (got {activation!r})")
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be in (0, 1) (got {threshold})")
    root = float(np.arccosh(1.0 / np.sqrt(threshold)))
    return 2.0 * root if activation == "sigmoid" else root


@dataclass(frozen=True)
class SaturationProfile:
    """What one batch does to each hidden layer :math:`\\ell = 1, \\dots, L` of a network at initialisation.

    The per-layer arrays have one entry per hidden layer, in order.
    """

    #: (N, D_l) arrays, float64, one per hidden layer, :math:`z_\ell`, the input of its nonlinearity
    pre_activations: Tuple[np.ndarray, ...]
    #: (L,) :func:`saturated_fraction` of each :math:`z_\ell`
    saturated: np.ndarray
    #: (L,) mean over the units of each unit's standard deviation over the batch
    unit_std: np.ndarray
    #: (L,) standard deviation over the units of each unit's batch mean
    offset_spread: np.ndarray
    #: (L,) Frobenius norm of :math:`\partial L/\partial W_\ell` for each hidden layer
    grad_norms: np.ndarray
    #: the mean cross-entropy of the batch
    loss: float


def saturation_profile(model: MLP, x, y, threshold: float = 0.1) -> SaturationProfile:
    r"""Forward and backward one batch through ``model`` in training mode; summarize every hidden layer.

    The model is deep-copied first: its gradients, running statistics and mode
    stay as they were. Batch-norm layers normalize with the statistics of
    ``x`` (training mode), as they would at the first training step.

    Parameters
    ----------
    model : MLP
        From :func:`bnkit.experiments.mlp` (or :func:`deep_mlp`), with a
        ``"sigmoid"`` or ``"tanh"`` activation.
    x : Tensor or ndarray of shape (N, sizes[0])
    y : Tensor or ndarray of shape (N,)
        Integer class labels.
    threshold : float, default 0.1
        See :func:`saturated_fraction`.

    Returns
    -------
    SaturationProfile
    """
    activation = model.config.get("activation")
    if activation not in SLOPE_AT_ZERO:
        raise ValueError(f"the model's activation must be one of {tuple(SLOPE_AT_ZERO)} "
                         f"(got {activation!r})")
    net = copy.deepcopy(model).train()
    dtype = next(net.parameters()).dtype
    x = torch.as_tensor(x).to(dtype)
    y = torch.as_tensor(y)
    if x.ndim != 2 or y.shape != (x.shape[0],):
        raise ValueError(f"expected x of shape (N, features) and y of shape (N,) "
                         f"(got {tuple(x.shape)} and {tuple(y.shape)})")
    trace = net.trace(x)
    loss = F.cross_entropy(trace.logits, y)
    weights = [block.linear.weight for block in net.blocks]
    grads = torch.autograd.grad(loss, weights)
    z = tuple(t.detach().double().numpy() for t in trace.pre_activation)
    return SaturationProfile(
        pre_activations=z,
        saturated=np.array([saturated_fraction(zl, activation, threshold) for zl in z]),
        unit_std=np.array([zl.std(axis=0).mean() for zl in z]),
        offset_spread=np.array([zl.mean(axis=0).std() for zl in z]),
        grad_norms=np.array([g.double().norm().item() for g in grads]),
        loss=float(loss.item()),
    )


def deep_mlp(depth: int = 10, width: int = 256, batch_norm: bool = False,
             activation: str = "sigmoid", init_std: float = 0.3, inputs: int = 784,
             classes: int = 10, seed: int = 0) -> MLP:
    r"""``depth`` hidden layers of ``width`` units: :func:`bnkit.experiments.mlp` with these sizes.

    The weights are :math:`\mathcal{N}(0, s^2)` with :math:`s` = ``init_std``,
    drawn from ``seed``; with ``batch_norm=True`` the same weights get a
    batch-norm layer before every nonlinearity (and no hidden biases, which
    are 0 at initialisation anyway).
    """
    if depth < 1 or width < 1:
        raise ValueError(f"depth and width must be >= 1 (got {depth} and {width})")
    return mlp((inputs,) + (width,) * depth + (classes,), batch_norm=batch_norm,
               activation=activation, init_std=init_std, seed=seed)


def profiles_over_seeds(x, y, seeds: Sequence[int] = (0, 1, 2, 3, 4), threshold: float = 0.1,
                        **network) -> Dict[str, list]:
    """:func:`saturation_profile` of :func:`deep_mlp` without and with batch norm, for each seed.

    Parameters
    ----------
    x, y : the batch (see :func:`saturation_profile`)
    seeds : sequence of int
        One network (one draw of the weights) per seed; the two variants of a
        seed share their weights.
    threshold : float, default 0.1
    **network
        Passed to :func:`deep_mlp` (``depth``, ``width``, ``activation``, ``init_std``).

    Returns
    -------
    dict
        ``{"without BN": [profile per seed], "with BN": [profile per seed]}``.
    """
    if "batch_norm" in network or "seed" in network:
        raise TypeError("profiles_over_seeds sets batch_norm and seed itself")
    return {name: [saturation_profile(deep_mlp(batch_norm=bn, seed=s, **network), x, y, threshold)
                   for s in seeds]
            for name, bn in (("without BN", False), ("with BN", True))}
