r"""Batch norm over a batch of two: its exact Jacobian, and the gradient that gets through it.

With :math:`m` values per statistic, batch norm's Jacobian
:math:`\partial\hat x/\partial x` is :math:`1/s` times a projection that removes
two directions, the mean and :math:`\hat x` (:func:`batch_norm_jacobian`). For
:math:`m = 2` nothing is left but an :math:`\varepsilon` term, of norm
:math:`\varepsilon/(d^2+\varepsilon)^{3/2}` (:func:`two_example_jacobian_norm`):
tiny for a typical pair, up to :math:`1/\sqrt\varepsilon` for a near tie.
:func:`gradient_norms` measures, step by step, how much gradient the fully
connected layer's normalization of Chapter 7's network lets through to the
layers below it.

Needs torch.
"""

from __future__ import annotations

from typing import Dict, List, Optional

import numpy as np

from .small_batch import WATCHED_LAYERS, mnist_images, variant_net
from .training import as_tensors, train

__all__ = ["batch_norm_jacobian", "two_example_jacobian_norm", "gradient_norms"]


def batch_norm_jacobian(x, eps: float = 1e-5) -> np.ndarray:
    r"""Exact Jacobian :math:`\partial\hat x/\partial x` of batch norm (training mode) per feature.

    For one feature's :math:`m` values with mean :math:`\mu`, biased variance
    :math:`\sigma^2`, :math:`s = \sqrt{\sigma^2+\varepsilon}` and
    :math:`\hat x = (x-\mu)/s`,

    .. math::

        \frac{\partial \hat x_i}{\partial x_k}
        = \frac{1}{s}\Big(\delta_{ik} - \frac{1}{m} - \frac{\hat x_i \hat x_k}{m}\Big).

    With :math:`\varepsilon = 0` the bracket is the projection that removes the
    directions :math:`\mathbf 1` and :math:`\hat x` (rank :math:`m - 2`); for
    :math:`m = 2` with :math:`d = (x_1 - x_2)/2` it collapses to
    :math:`\frac{\varepsilon}{2(d^2+\varepsilon)^{3/2}}\begin{pmatrix}1&-1\\-1&1\end{pmatrix}`.
    Features do not mix: the full Jacobian is block-diagonal over features.

    Parameters
    ----------
    x : array_like of shape (m, D)
        A batch of ``m >= 1`` examples of ``D`` features (computed in float64).
    eps : float, default 1e-5

    Returns
    -------
    ndarray of shape (D, m, m)
        ``J[j, i, k]`` = :math:`\partial \hat x_{ij} / \partial x_{kj}`.
    """
    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 2 or x.shape[0] < 1:
        raise ValueError(f"x must have shape (m, D) with m >= 1 (got shape {x.shape})")
    if not eps > 0:
        raise ValueError(f"eps must be > 0 (got {eps})")
    m = x.shape[0]
    s = np.sqrt(x.var(axis=0) + eps)                        # (D,)
    xhat = ((x - x.mean(axis=0)) / s).T                     # (D, m)
    eye = np.eye(m)[None]
    return (eye - 1.0 / m - xhat[:, :, None] * xhat[:, None, :] / m) / s[:, None, None]


def two_example_jacobian_norm(d, eps: float = 1e-5) -> np.ndarray:
    r"""Spectral norm of batch norm's Jacobian for a batch of two: :math:`\varepsilon/(d^2+\varepsilon)^{3/2}`.

    For two values :math:`a, b` of a feature, :math:`d = (a-b)/2`; the Jacobian
    (:func:`batch_norm_jacobian`) is
    :math:`\frac{\varepsilon}{2(d^2+\varepsilon)^{3/2}}\begin{pmatrix}1&-1\\-1&1\end{pmatrix}`,
    whose eigenvalues are 0 and twice the prefactor.

    Parameters
    ----------
    d : array_like
        Half the difference of the two values, any shape.
    eps : float, default 1e-5

    Returns
    -------
    ndarray, the shape of ``d``
    """
    d = np.asarray(d, dtype=np.float64)
    return eps / (d ** 2 + eps) ** 1.5


def gradient_norms(variant: str, batch_size: int, data=None, steps: int = 200, lr: float = 0.02,
                   reference_batch_size: int = 32, momentum: float = 0.9, seed: int = 0,
                   num_threads: Optional[int] = 1, **net_options) -> Dict[str, np.ndarray]:
    r"""The gradient that reaches each layer, at every step of the start of a sweep run.

    Trains :func:`~bnkit.experiments.small_batch.variant_net` ``(variant, seed)`` exactly as
    :func:`~bnkit.experiments.small_batch.batch_size_sweep` would (same examples, order and learning rate
    :math:`\eta_{\text{ref}} B / B_{\text{ref}}`), for ``steps`` steps, and
    records at each step, on that step's batch, before its update:

    * ``"conv1"``, ``"conv2"``, ``"fc"``, ``"head"``: the Frobenius norm
      :math:`\lVert\partial L/\partial W\rVert` of the layer's weight gradient;
    * ``"fc_input"`` and ``"fc_output"``: :math:`\lVert\partial L/\partial u\rVert` and
      :math:`\lVert\partial L/\partial y\rVert`, the gradient at the input
      :math:`u` (the fc layer's output) and at the output :math:`y` of the fc
      layer's normalization -- their ratio is how much of the gradient that
      normalization lets through to everything below it.

    Parameters
    ----------
    variant : str
        A key of :data:`~bnkit.experiments.small_batch.VARIANTS` whose network has a hidden fc layer.
    batch_size : int
    data : dict, optional
        As for :func:`~bnkit.experiments.small_batch.batch_size_sweep`; default :func:`~bnkit.experiments.small_batch.mnist_images`.
    steps : int, default 200
    lr, reference_batch_size, momentum, seed, num_threads, **net_options
        As for :func:`~bnkit.experiments.small_batch.batch_size_sweep`.

    Returns
    -------
    dict of str to ndarray of shape (steps,)
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    data = as_tensors(mnist_images() if data is None else data)
    model = variant_net(variant, seed=seed, **net_options)
    if not hasattr(model, "norm_fc"):
        raise ValueError("gradient_norms needs a network with a hidden fc layer (hidden > 0)")
    records: Dict[str, List[float]] = {k: [] for k in WATCHED_LAYERS + ("fc_input", "fc_output")}

    def hook(module, grad_input, grad_output):
        records["fc_input"].append(float(grad_input[0].norm()))
        records["fc_output"].append(float(grad_output[0].norm()))

    def callback(ctx):
        if ctx.step == 0:
            return
        for name in WATCHED_LAYERS:       # the gradients of this step's batch, before the next zero_grad
            records[name].append(float(getattr(ctx.model, name).weight.grad.norm()))

    handle = model.norm_fc.register_full_backward_hook(hook)
    try:
        train(model, data, int(steps), batch_size=int(batch_size),
              lr=lr * batch_size / reference_batch_size, seed=seed, momentum=momentum,
              eval_every=int(steps), record_every=0, callback=callback, callback_every=1,
              num_threads=num_threads)
    finally:
        handle.remove()
    return {k: np.asarray(v) for k, v in records.items()}
