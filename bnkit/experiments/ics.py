r"""Is it internal covariate shift? Noisy batch norm and ICS measured by gradients.

Two tools from Santurkar et al. (2018), Sections 2.1 and 2.2, for any torch
MLP (the builder :func:`bnkit.experiments.mlp`, or any ``nn.Module`` whose
weight layers are ``nn.Linear`` registered in forward order):

**Noisy BN** (:class:`BatchNormNoise`, :class:`NoisyBatchNorm1d`,
:func:`noise_hook`). After a BN layer with output :math:`y` of shape
``(N, D)``, at training step :math:`t`, draw for every unit :math:`j` a shift
and a scale

.. math::

    m_{t,j} \sim \mathcal U(-a, a), \qquad s_{t,j} \sim \mathcal U(s_{lo}, s_{hi}),

and, optionally, per-sample noise :math:`\xi_{n,j} \sim \mathcal N(0, 1)` of
standard deviation :math:`v_{t,j} \sim \mathcal U(0, \sigma_\xi)`; return

.. math::

    y'_{n,j} = s_{t,j}\, y_{n,j} + m_{t,j} + v_{t,j}\, \xi_{n,j}.

So the next layer sees a unit whose mean and standard deviation jump at every
step: a covariate shift made on purpose, larger than any the weights could
cause. In eval mode the noise is replaced by its expectation,
:math:`y' = \bar s\, y` with :math:`\bar s = (s_{lo} + s_{hi})/2`.

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

import argparse
import contextlib
import json
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..torch import BatchNorm1d

__all__ = [
    "BatchNormNoise",
    "NoisyBatchNorm1d",
    "noise_hook",
    "frozen_noise",
    "preserved_state",
    "weight_layers",
    "fixed_batch",
    "ICSResult",
    "ics",
    "ics_callback",
    "percentile_callback",
    "plot_ics",
    "run_experiment",
    "VARIANTS",
    "plot_train_percentiles",
    "run_ics_command",
    "add_experiment_arguments",
]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]

#: The networks Chapter 6 compares (also their labels in figures).
VARIANTS = ("plain", "BN", "noisy BN")


# --------------------------------------------------------------------------- #
# noisy batch norm
# --------------------------------------------------------------------------- #
class BatchNormNoise(nn.Module):
    r"""Per-step random shift and scale of a BN output: :math:`y' = s_t \odot y + m_t (+ v_t \odot \xi)`.

    Parameters
    ----------
    num_features : D, the number of units.
    mean_range : a; the shift :math:`m_{t,j} \sim \mathcal U(-a, a)`.
    scale_range : ``(s_lo, s_hi)``; the scale :math:`s_{t,j} \sim \mathcal U(s_{lo}, s_{hi})`.
    sample_std : :math:`\sigma_\xi`; per-sample Gaussian noise of standard
        deviation :math:`v_{t,j} \sim \mathcal U(0, \sigma_\xi)` (0: none).
    seed : seeds the module's own ``torch.Generator``, so the noise never
        touches torch's global RNG (None: a seed drawn once from the global RNG).
    resample_on_forward : draw new noise at every training-mode forward (so
        one step of any training loop is one draw). Disabled inside
        :func:`frozen_noise`, which measurements use to see the current draw.
    eval_mode : ``"mean"`` (eval forward is :math:`\bar s\, y`, the noise's
        expectation) or ``"none"`` (eval forward is :math:`y`).

    Shape: input ``(N, D)``, output ``(N, D)``. The current draw is in the
    buffers ``noise_mean``, ``noise_scale`` and ``noise_sample_std`` (shape
    ``(D,)``). The per-sample noise :math:`\xi` of a step is a function of
    ``(seed, step, N)`` only, so a measurement that runs the frozen module on a
    batch of another size neither changes nor consumes the training's noise.
    """

    def __init__(self, num_features: int, mean_range: float = 0.5,
                 scale_range: Tuple[float, float] = (1.0, 2.0), sample_std: float = 0.0,
                 seed: Optional[int] = None, resample_on_forward: bool = True, eval_mode: str = "mean"):
        super().__init__()
        lo, hi = (float(v) for v in scale_range)
        if mean_range < 0 or sample_std < 0 or not 0 <= lo <= hi:
            raise ValueError(f"need mean_range >= 0, sample_std >= 0 and 0 <= scale_range[0] <= scale_range[1]; "
                             f"got {mean_range}, {sample_std}, {scale_range}")
        if eval_mode not in ("mean", "none"):
            raise ValueError(f"eval_mode must be 'mean' or 'none', got {eval_mode!r}")
        self.num_features = int(num_features)
        self.mean_range, self.scale_range, self.sample_std = float(mean_range), (lo, hi), float(sample_std)
        self.resample_on_forward = bool(resample_on_forward)
        self.eval_mode = eval_mode
        self.frozen = False
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.steps_drawn = 0
        self.register_buffer("noise_mean", torch.zeros(num_features))
        self.register_buffer("noise_scale", torch.ones(num_features))
        self.register_buffer("noise_sample_std", torch.zeros(num_features))
        self._xi: Dict[Tuple[int, ...], torch.Tensor] = {}
        self.resample()

    @torch.no_grad()
    def resample(self) -> None:
        """Draw this step's shift, scale and per-sample std; the per-sample noise follows from the step number."""
        d, g = self.num_features, self.generator
        lo, hi = self.scale_range
        self.noise_mean.copy_((torch.rand(d, generator=g) * 2 - 1) * self.mean_range)
        self.noise_scale.copy_(lo + (hi - lo) * torch.rand(d, generator=g))
        self.noise_sample_std.copy_(torch.rand(d, generator=g) * self.sample_std)
        self.steps_drawn += 1
        self._xi = {}

    def _sample_noise(self, shape: torch.Size) -> torch.Tensor:
        r""":math:`\xi` of this step for a batch of ``shape``: N(0, 1), seeded by (seed, step, shape)."""
        key = tuple(shape)
        if key not in self._xi:
            g = torch.Generator().manual_seed(hash((self.seed, self.steps_drawn) + key) & (2**63 - 1))
            self._xi[key] = torch.randn(key, generator=g)
        return self._xi[key]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training:
            if self.eval_mode == "none":
                return y
            return y * (0.5 * (self.scale_range[0] + self.scale_range[1]))
        if self.resample_on_forward and not self.frozen:
            self.resample()
        out = y * self.noise_scale.to(y.dtype) + self.noise_mean.to(y.dtype)
        if self.sample_std > 0:
            out = out + self.noise_sample_std.to(y.dtype) * self._sample_noise(y.shape).to(y.dtype)
        return out

    def extra_repr(self) -> str:
        return (f"{self.num_features}, mean_range={self.mean_range}, scale_range={self.scale_range}, "
                f"sample_std={self.sample_std}, eval_mode={self.eval_mode!r}")


class NoisyBatchNorm1d(nn.Module):
    """:class:`bnkit.torch.BatchNorm1d` followed by :class:`BatchNormNoise` (for models built by hand).

    ``bn`` and ``noise`` are the two submodules; keyword arguments other than
    ``eps`` and ``momentum`` go to :class:`BatchNormNoise`. Shape ``(N, D)`` in and out.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1, **noise_kwargs):
        super().__init__()
        self.bn = BatchNorm1d(num_features, eps=eps, momentum=momentum)
        self.noise = BatchNormNoise(num_features, **noise_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(self.bn(x))


def noise_hook(mean_range: float = 0.5, scale_range: Tuple[float, float] = (1.0, 2.0),
               sample_std: float = 0.0, seed: int = 0) -> Callable[[int, int], BatchNormNoise]:
    """A ``post_norm`` factory for :func:`bnkit.experiments.mlp`: one :class:`BatchNormNoise` per block.

    Block ``l`` gets its own generator seeded with ``seed + l``, so the noise
    is reproducible and independent across layers.

    Example: ``mlp(batch_norm=True, post_norm=noise_hook(0.5, (1, 2)))``.
    """
    def make(layer: int, width: int) -> BatchNormNoise:
        return BatchNormNoise(width, mean_range, scale_range, sample_std, seed=seed + layer)
    return make


@contextlib.contextmanager
def frozen_noise(model: nn.Module) -> Iterator[None]:
    """Within the block, every :class:`BatchNormNoise` in ``model`` keeps its current draw."""
    mods = [m for m in model.modules() if isinstance(m, BatchNormNoise)]
    old = [m.frozen for m in mods]
    for m in mods:
        m.frozen = True
    try:
        yield
    finally:
        for m, f in zip(mods, old):
            m.frozen = f


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


def _loss(model, params, buffers, x, y, loss_fn: LossFn) -> torch.Tensor:
    # Fresh copies of the buffers each call: BN's running statistics are never written.
    bufs = {k: b.clone() for k, b in buffers.items()}
    return loss_fn(functional_call(model, {**params, **bufs}, (x,)), y)


def _grads(model, params, buffers, x, y, loss_fn, wrt: Sequence[str]) -> Tuple[torch.Tensor, List[torch.Tensor]]:
    loss = _loss(model, params, buffers, x, y, loss_fn)
    return loss.detach(), list(torch.autograd.grad(loss, [params[k] for k in wrt]))


# --------------------------------------------------------------------------- #
# ICS by Definition 2.1
# --------------------------------------------------------------------------- #
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
        params = {n: p.detach().clone().requires_grad_(True) for n, p in model.named_parameters()}
        buffers = {n: b.detach() for n, b in model.named_buffers()}
        loss, grads = _grads(model, params, buffers, x, y, loss_fn, names)
        step = dict(zip(names, grads))
        g_norm, d_norm, cos = [], [], []
        for lname, layer in chosen:
            wname = f"{lname}.weight" if lname else "weight"
            below = names[:names.index(wname)]
            moved = dict(params)
            with torch.no_grad():
                for n in below:
                    moved[n] = (params[n] - lr * step[n]).requires_grad_(True)
            _, (g_after,) = _grads(model, moved, buffers, x, y, loss_fn, [wname])
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


def percentile_callback(x: torch.Tensor, layer: int = -1, unit: int = 0,
                        levels: Sequence[float] = (15, 50, 85), key: str = "train_percentiles") -> Callable:
    r"""A callback logging percentiles of one nonlinearity's input :math:`z` *in training mode*.

    :func:`bnkit.experiments.train` records :math:`z` in eval mode, where
    noisy BN shows its noise-free expectation; this one shows what the next
    layer saw during the step: batch statistics of ``x`` and the step's noise
    draw. Needs a model with ``trace`` (an :class:`~bnkit.experiments.MLP`).
    Logs ``key`` with values of shape ``(len(levels),)``.
    """
    def callback(ctx) -> None:
        with preserved_state(ctx.model, training=True), torch.no_grad():
            z = ctx.model.trace(x).pre_activation[layer][:, unit].double().numpy()
        ctx.history.log(key, ctx.step, np.percentile(z, levels))
    return callback


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #
def _net_color(label: str, i: int, colors: Optional[Dict[str, str]]) -> str:
    from .figures import _color

    return colors[label] if colors and label in colors else _color(label, i)


_ICS_ROWS = {
    "diff_norm": r"ICS $\|G - G'\|_2$",
    "relative": r"$\|G - G'\|_2 \,/\, \|G\|_2$",
    "cosine": r"$\cos(G, G')$",
}


def plot_ics(histories: Dict[str, object], layer_labels: Sequence[str], prefix: str = "ics",
             rows: Sequence[str] = ("diff_norm", "cosine"), colors: Optional[Dict[str, str]] = None,
             title: str = ""):
    r"""ICS over training: one row per quantity in ``rows``, one column per measured layer.

    ``rows`` among ``"diff_norm"`` (:math:`\lVert G - G'\rVert`, log scale
    when positive), ``"relative"`` (:math:`\lVert G - G'\rVert / \lVert G\rVert`)
    and ``"cosine"``. ``histories`` maps a label ("plain", "BN", "noisy BN")
    to a History with the series of :func:`ics_callback`. Returns the figure.
    """
    import matplotlib.pyplot as plt

    k = len(layer_labels)
    fig, axes = plt.subplots(len(rows), k, figsize=(3.1 * k, 2.3 * len(rows) + 0.4), sharex=True,
                             squeeze=False, layout="constrained")
    for i, (label, h) in enumerate(histories.items()):
        steps, diff = h.logged(f"{prefix}/diff_norm")
        series = {"diff_norm": diff, "cosine": h.logged(f"{prefix}/cosine")[1]}
        with np.errstate(divide="ignore", invalid="ignore"):
            series["relative"] = diff / h.logged(f"{prefix}/grad_norm")[1]
        for r, row in enumerate(rows):
            for j in range(k):
                axes[r, j].plot(steps, series[row][:, j], color=_net_color(label, i, colors), label=label)
    for j, name in enumerate(layer_labels):
        axes[0, j].set_title(name)
        axes[-1, j].set_xlabel("training step")
        for r, row in enumerate(rows):
            if row == "diff_norm" and all((h.logged(f"{prefix}/diff_norm")[1][:, j] > 0).all()
                                          for h in histories.values()):
                axes[r, j].set_yscale("log")
            if row == "cosine":
                axes[r, j].set_ylim(min(-0.05, axes[r, j].get_ylim()[0]), 1.05)
    for r, row in enumerate(rows):
        axes[r, 0].set_ylabel(_ICS_ROWS[row])
    handles, labels = axes[0, 0].get_legend_handles_labels()
    fig.legend(handles, labels, loc="outside lower center", ncol=len(labels), fontsize="small")
    if title:
        fig.suptitle(title)
    return fig


def plot_train_percentiles(history, ax=None, key: str = "train_percentiles", color: Optional[str] = None,
                           title: str = ""):
    """The percentiles logged by :func:`percentile_callback` against training steps (median thick)."""
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(layout="constrained")
    steps, p = history.logged(key)
    levels = (15, 50, 85) if p.shape[1] == 3 else range(p.shape[1])
    mid = p.shape[1] // 2
    for j, level in enumerate(levels):
        ax.plot(steps, p[:, j], color=color, lw=2.0 if j == mid else 1.0, ls="-" if j == mid else "--",
                alpha=1.0 if j == mid else 0.75, label=f"{level}th percentile")
    ax.set_xlabel("training step")
    ax.set_ylabel("sigmoid input $z$ (training mode)")
    if title:
        ax.set_title(title)
    return ax.figure


# --------------------------------------------------------------------------- #
# experiment and command line
# --------------------------------------------------------------------------- #
def fixed_batch(data: Dict[str, torch.Tensor], size: int, seed: int = 0) -> Tuple[torch.Tensor, torch.Tensor]:
    """``size`` training examples drawn once without replacement (``np.random.default_rng(seed)``).

    The measurements of every step use this same batch. (Not simply the first
    ``size`` images: a data set stored sorted by class would give a batch of
    one digit.) Returns ``(x, y)`` of shapes ``(size, d)`` and ``(size,)``.
    """
    idx = np.random.default_rng(seed).choice(len(data["x_train"]), size=size, replace=False)
    idx = torch.from_numpy(np.sort(idx))
    return data["x_train"][idx], data["y_train"][idx]


def run_experiment(data="mnist-5k", steps: int = 3000, depth: int = 3, width: int = 100, lr: float = 0.5,
                   activation: str = "sigmoid", init_std: float = 0.05, every: int = 200, batch_size: int = 60,
                   measure_size: int = 60, layers: Optional[Sequence[int]] = None, seed: int = 0,
                   noise: Optional[dict] = None, variants: Sequence[str] = ("plain", "BN"),
                   measure: Sequence[str] = ("ics", "percentiles", "landscape"),
                   eta_factors: Optional[Sequence[float]] = None, progress: bool = False,
                   out: Optional[Path] = None, resume: bool = False) -> Dict[str, object]:
    """Train the variants of a ``depth``-hidden-layer MLP and log Chapter 6's measurements every ``every`` steps.

    Parameters
    ----------
    data : a name for :func:`bnkit.data.load_dataset` or a dict of arrays.
    steps, lr, batch_size, seed : training (:func:`bnkit.experiments.train`);
        the same seed gives every variant the same initial weights and minibatches.
    depth, width, activation, init_std : the MLP, ``784-width*depth-10``.
    variants : among ``"plain"`` (no BN), ``"BN"`` and ``"noisy BN"``
        (BN + :func:`noise_hook` with the keyword arguments ``noise``).
    measure : among ``"ics"`` (:func:`ics_callback` on the weight layers
        ``layers``, indices into :func:`weight_layers`; default the second
        hidden layer, a middle one and the output layer -- the first has
        nothing below it, so its ICS is 0), ``"percentiles"``
        (:func:`percentile_callback` of unit 0 of the last hidden layer on the
        first 1,000 test images) and ``"landscape"``
        (:func:`~bnkit.experiments.landscape.landscape_callback` with
        ``eta_factors``); ICS and landscape use the fixed batch
        :func:`fixed_batch` of ``measure_size`` training images.
    out, resume : save each history to ``out/<measures>-<variant>-depth<d>.json``
        (variant in lower case, ``-`` for spaces);
        with ``resume``, reuse a saved one that has every requested series.

    Returns ``{variant: History}``.
    """
    from .landscape import DEFAULT_ETA_FACTORS, landscape_callback
    from .models import mlp
    from .training import History, as_tensors, train

    unknown = set(variants) - set(VARIANTS) | set(measure) - {"ics", "percentiles", "landscape"}
    if unknown:
        raise ValueError(f"unknown variants or measures: {sorted(unknown)}")
    tensors = as_tensors(data)
    xm, ym = fixed_batch(tensors, measure_size, seed)
    if layers is None:
        layers = sorted({1, (depth + 1) // 2, depth}) if depth > 0 else [0]
    sizes = [tensors["x_train"].shape[1]] + [width] * depth + [10]
    wanted = {"ics": "ics/diff_norm", "percentiles": "train_percentiles", "landscape": "landscape/beta"}
    results = {}
    for v in variants:
        slug = v.lower().replace(" ", "-")
        path = None if out is None else Path(out) / f"{'+'.join(sorted(measure))}-{slug}-depth{depth}.json"
        if resume and path is not None and path.is_file():
            h = History.load(path)
            if all(wanted[m] in h.logs for m in measure) and h.steps_done >= steps:
                results[v] = h
                continue
        hook = noise_hook(**(noise or {})) if v == "noisy BN" else None
        model = mlp(sizes, batch_norm=v != "plain", activation=activation, init_std=init_std,
                    post_norm=hook, seed=seed)
        cbs = []
        if "ics" in measure:
            cbs.append(ics_callback(xm, ym, layers))
        if "percentiles" in measure:
            cbs.append(percentile_callback(tensors["x_test"][:1000]))
        if "landscape" in measure:
            cbs.append(landscape_callback(xm, ym, DEFAULT_ETA_FACTORS if eta_factors is None else eta_factors))

        def callback(ctx, cbs=cbs):
            for cb in cbs:
                cb(ctx)

        h = train(model, tensors, steps, batch_size=batch_size, lr=lr, seed=seed, eval_every=every,
                  record_every=every, callback=callback, callback_every=every,
                  progress=progress, description=f"{v}, depth {depth}")
        h.config["ics_layers"] = [weight_layers(model)[i][0] for i in layers]
        h.config["variant"] = v
        results[v] = h
        if path is not None:
            h.save(path)
    return results


def add_experiment_arguments(parser: argparse.ArgumentParser, steps: int = 3000) -> None:
    """Options shared by the ``ics`` and ``landscape`` commands (plus the CLI's common ones)."""
    from .cli import FIGURE1_DEFAULTS, add_common_arguments

    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=steps, help="SGD steps per network")
    parser.add_argument("--depth", type=int, default=3, help="hidden layers (default 3: the paper's MLP)")
    parser.add_argument("--activation", default="sigmoid", choices=("sigmoid", "tanh", "relu"))
    parser.add_argument("--lr", type=float, default=0.5,
                        help="SGD learning rate (default 0.5, Chapter 6's; Chapter 5 uses 0.1 for 50,000 steps)")
    parser.add_argument("--init-std", type=float, default=FIGURE1_DEFAULTS["init_std"],
                        help="std of the Gaussian initial weights")
    parser.add_argument("--every", type=int, default=200, help="steps between measurements")


def _configure_ics(parser: argparse.ArgumentParser) -> None:
    add_experiment_arguments(parser)
    parser.add_argument("--noisy", action="store_true", help="also train noisy BN")
    parser.add_argument("--noise-mean", type=float, default=1.0, help="per-step shift ~ U(-a, a)")
    parser.add_argument("--noise-scale", type=float, default=3.0, help="per-step scale ~ U(1, s)")
    parser.add_argument("--noise-sample-std", type=float, default=0.5,
                        help="per-sample noise, std ~ U(0, this)")


def run_ics_command(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments ics``: ICS over training, standard vs BN (vs noisy BN).

    Writes ``ics+percentiles-<variant>-depth<d>.json`` and ``ics-depth<d>.png`` to ``--out``
    and prints a JSON summary (final accuracy, median ICS and cosine per layer).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from ..plotting import use_book_style
    from .cli import load_data

    use_book_style()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    noise = {"mean_range": args.noise_mean, "scale_range": (1.0, args.noise_scale),
             "sample_std": args.noise_sample_std}
    variants = VARIANTS if args.noisy else VARIANTS[:2]
    res = run_experiment(load_data(args), steps=args.steps, depth=args.depth, lr=args.lr,
                         activation=args.activation, init_std=args.init_std, every=args.every, seed=args.seed,
                         noise=noise, variants=variants, measure=("ics", "percentiles"),
                         progress=args.progress, out=out, resume=args.resume)
    names = next(iter(res.values())).config["ics_layers"]
    fig = plot_ics(res, names, title=f"ICS (Definition 2.1), {args.depth} hidden layers")
    png = out / f"ics-depth{args.depth}.png"
    fig.savefig(png)
    plt.close(fig)
    summary = {v: {"final_accuracy": h.final_accuracy,
                   "median_ics": np.median(h.logged("ics/diff_norm")[1], axis=0).tolist(),
                   "median_cosine": np.median(h.logged("ics/cosine")[1], axis=0).tolist()}
               for v, h in res.items()}
    print(json.dumps({"layers": names, **summary}, indent=1))
    print(f"wrote {png}")
    return 0


def _register_command() -> None:
    from .cli import register as register_command

    register_command("ics", "Santurkar et al.'s internal covariate shift (Definition 2.1) over training",
                     _configure_ics)(run_ics_command)


_register_command()
