r"""Noisy batch norm: a covariate shift made on purpose (Santurkar et al. 2018, Section 2.1).

A noise module sits after a BN layer (in the ``post_norm`` hook of
:func:`bnkit.experiments.mlp`, or in :class:`NoisyBatchNorm1d`) and perturbs
its output :math:`y` of shape ``(N, D)`` with noise whose *distribution* is
redrawn at every training step :math:`t`. Two kinds:

**i.i.d. noise** (:class:`IIDNoise`, ``kind="iid"``, the default): the
paper's version. At step :math:`t` every unit :math:`j` gets a noise
distribution with its own mean and standard deviation,

.. math::

    \mu_{t,j} \sim \mathcal U(-a, a), \qquad \sigma_{t,j} \sim \mathcal U(\sigma_{lo}, \sigma_{hi}),

and every activation -- every sample :math:`n`, every unit :math:`j` -- gets
its own independent draw from it:

.. math::

    y'_{n,j} = y_{n,j} + \mu_{t,j} + \sigma_{t,j}\, \varepsilon_{n,j}, \qquad
    \varepsilon_{n,j} \sim \mathcal N(0, 1) \text{ i.i.d.}

So the unit the next layer sees has mean :math:`\beta_j + \mu_{t,j}` and
standard deviation :math:`\sqrt{\gamma_j^2 + \sigma_{t,j}^2}`, both new at every
step, and its samples are no longer a deterministic function of the inputs.
Eval mode adds the noise's expectation, 0.

**Shift and scale** (:class:`ShiftScaleNoise`, ``kind="shift-scale"``): a
per-unit affine map shared by the whole batch,

.. math::

    y'_{n,j} = s_{t,j}\, y_{n,j} + m_{t,j} + v_{t,j}\, \varepsilon_{n,j}, \qquad
    m_{t,j} \sim \mathcal U(-a, a),\; s_{t,j} \sim \mathcal U(s_{lo}, s_{hi}),\;
    v_{t,j} \sim \mathcal U(0, \sigma_\xi).

It moves each unit's mean and rescales its spread at every step, but within a
step every sample of a unit is moved the same way (apart from the optional
per-sample term); eval mode multiplies by :math:`\bar s = (s_{lo} + s_{hi})/2`
(or does nothing).

Both draw from the module's own ``torch.Generator`` (never torch's global
RNG). :func:`frozen_noise` keeps the current draw for measurements;
:func:`advance_noise` draws the next step's noise ahead of the step, so a
measurement taken before an update sees exactly the noise the update will use.
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from ..torch import BatchNorm1d

__all__ = ["StepNoise", "IIDNoise", "ShiftScaleNoise", "NOISE_KINDS", "NoisyBatchNorm1d", "noise_hook",
           "frozen_noise", "advance_noise"]


class StepNoise(nn.Module):
    r"""Base of the noise modules: a noise distribution redrawn once per training step.

    Subclasses draw their per-step parameters in :meth:`draw` (from
    ``self.generator``) and apply them in :meth:`perturb` (training) and
    :meth:`expected` (eval).

    Parameters
    ----------
    num_features : D, the number of units.
    seed : seeds the module's own ``torch.Generator`` (None: a seed drawn once
        from torch's global RNG).
    resample_on_forward : draw new noise at every training-mode forward, so
        one step of any training loop is one draw. Not inside
        :func:`frozen_noise`; and a draw made ahead by :meth:`draw_ahead` is
        used by the next forward instead of a new one.

    The standard normal :math:`\varepsilon` of a step (:meth:`standard_normal`)
    is a function of ``(seed, step, shape)`` only, so a measurement that runs
    the frozen module on a batch of another size neither changes nor consumes
    the training's noise.
    """

    def __init__(self, num_features: int, seed: Optional[int] = None, resample_on_forward: bool = True):
        super().__init__()
        self.num_features = int(num_features)
        self.resample_on_forward = bool(resample_on_forward)
        self.frozen = False
        self.pending = False
        if seed is None:
            seed = int(torch.randint(0, 2**62, (1,)))
        self.seed = int(seed)
        self.generator = torch.Generator().manual_seed(self.seed)
        self.steps_drawn = 0
        self._eps: Dict[Tuple[int, ...], torch.Tensor] = {}

    def draw(self) -> None:
        """Draw this step's parameters into the module's buffers (subclasses)."""
        raise NotImplementedError

    def perturb(self, y: torch.Tensor) -> torch.Tensor:
        """The training-mode output for this step's draw (subclasses)."""
        raise NotImplementedError

    def expected(self, y: torch.Tensor) -> torch.Tensor:
        """The eval-mode output (subclasses)."""
        raise NotImplementedError

    @torch.no_grad()
    def resample(self) -> None:
        """Draw the next step's noise now."""
        self.draw()
        self.steps_drawn += 1
        self._eps = {}
        self.pending = False

    def draw_ahead(self) -> None:
        """Draw the next step's noise now and let the next training forward use it instead of drawing."""
        self.resample()
        self.pending = True

    def standard_normal(self, shape) -> torch.Tensor:
        r""":math:`\varepsilon` of this step for a batch of ``shape``: i.i.d. N(0, 1), seeded by (seed, step, shape)."""
        key = tuple(int(s) for s in shape)
        if key not in self._eps:
            g = torch.Generator().manual_seed(hash((self.seed, self.steps_drawn) + key) & (2**63 - 1))
            self._eps[key] = torch.randn(key, generator=g)
        return self._eps[key]

    def forward(self, y: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.expected(y)
        if self.resample_on_forward and not self.frozen:
            if self.pending:
                self.pending = False
            else:
                self.resample()
        return self.perturb(y)


class IIDNoise(StepNoise):
    r"""Santurkar et al.'s noise: :math:`y' = y + \mu_t + \sigma_t \odot \varepsilon`, i.i.d. per sample and unit.

    Parameters
    ----------
    num_features : D.
    mean_range : :math:`a`; the step's mean :math:`\mu_{t,j} \sim \mathcal U(-a, a)`.
    std_range : ``(σ_lo, σ_hi)``; the step's standard deviation
        :math:`\sigma_{t,j} \sim \mathcal U(\sigma_{lo}, \sigma_{hi})`.
    seed, resample_on_forward : see :class:`StepNoise`.

    Shape: input ``(N, D)``, output ``(N, D)``. The current draw is in the
    buffers ``noise_mean`` (:math:`\mu_t`) and ``noise_std``
    (:math:`\sigma_t`), shape ``(D,)``. Eval mode returns :math:`y` (the
    noise has expectation 0).
    """

    def __init__(self, num_features: int, mean_range: float = 1.0, std_range: Tuple[float, float] = (0.5, 1.5),
                 seed: Optional[int] = None, resample_on_forward: bool = True):
        lo, hi = (float(v) for v in std_range)
        if not mean_range >= 0 or not 0 <= lo <= hi:
            raise ValueError(f"need mean_range >= 0 and 0 <= std_range[0] <= std_range[1]; "
                             f"got {mean_range}, {std_range}")
        super().__init__(num_features, seed, resample_on_forward)
        self.mean_range, self.std_range = float(mean_range), (lo, hi)
        self.register_buffer("noise_mean", torch.zeros(self.num_features))
        self.register_buffer("noise_std", torch.zeros(self.num_features))
        self.resample()

    def draw(self) -> None:
        d, g = self.num_features, self.generator
        lo, hi = self.std_range
        self.noise_mean.copy_((torch.rand(d, generator=g) * 2 - 1) * self.mean_range)
        self.noise_std.copy_(lo + (hi - lo) * torch.rand(d, generator=g))

    def perturb(self, y: torch.Tensor) -> torch.Tensor:
        eps = self.standard_normal(y.shape).to(y.dtype)
        return y + self.noise_mean.to(y.dtype) + self.noise_std.to(y.dtype) * eps

    def expected(self, y: torch.Tensor) -> torch.Tensor:
        return y

    def extra_repr(self) -> str:
        return f"{self.num_features}, mean_range={self.mean_range}, std_range={self.std_range}"


class ShiftScaleNoise(StepNoise):
    r"""Per-step random shift and scale of a BN output: :math:`y' = s_t \odot y + m_t (+ v_t \odot \varepsilon)`.

    Parameters
    ----------
    num_features : D.
    mean_range : :math:`a`; the shift :math:`m_{t,j} \sim \mathcal U(-a, a)`.
    scale_range : ``(s_lo, s_hi)``; the scale :math:`s_{t,j} \sim \mathcal U(s_{lo}, s_{hi})`.
    sample_std : :math:`\sigma_\xi`; per-sample Gaussian noise of standard
        deviation :math:`v_{t,j} \sim \mathcal U(0, \sigma_\xi)` (0: none).
    seed, resample_on_forward : see :class:`StepNoise`.
    eval_mode : ``"mean"`` (eval forward is :math:`\bar s\, y`, the noise's
        expectation) or ``"none"`` (eval forward is :math:`y`).

    Shape: input ``(N, D)``, output ``(N, D)``. The current draw is in the
    buffers ``noise_mean``, ``noise_scale`` and ``noise_sample_std``, shape ``(D,)``.
    """

    def __init__(self, num_features: int, mean_range: float = 0.5,
                 scale_range: Tuple[float, float] = (1.0, 2.0), sample_std: float = 0.0,
                 seed: Optional[int] = None, resample_on_forward: bool = True, eval_mode: str = "mean"):
        lo, hi = (float(v) for v in scale_range)
        if not mean_range >= 0 or not sample_std >= 0 or not 0 <= lo <= hi:
            raise ValueError(f"need mean_range >= 0, sample_std >= 0 and 0 <= scale_range[0] <= scale_range[1]; "
                             f"got {mean_range}, {sample_std}, {scale_range}")
        if eval_mode not in ("mean", "none"):
            raise ValueError(f"eval_mode must be 'mean' or 'none', got {eval_mode!r}")
        super().__init__(num_features, seed, resample_on_forward)
        self.mean_range, self.scale_range, self.sample_std = float(mean_range), (lo, hi), float(sample_std)
        self.eval_mode = eval_mode
        self.register_buffer("noise_mean", torch.zeros(self.num_features))
        self.register_buffer("noise_scale", torch.ones(self.num_features))
        self.register_buffer("noise_sample_std", torch.zeros(self.num_features))
        self.resample()

    def draw(self) -> None:
        d, g = self.num_features, self.generator
        lo, hi = self.scale_range
        self.noise_mean.copy_((torch.rand(d, generator=g) * 2 - 1) * self.mean_range)
        self.noise_scale.copy_(lo + (hi - lo) * torch.rand(d, generator=g))
        self.noise_sample_std.copy_(torch.rand(d, generator=g) * self.sample_std)

    def perturb(self, y: torch.Tensor) -> torch.Tensor:
        out = y * self.noise_scale.to(y.dtype) + self.noise_mean.to(y.dtype)
        if self.sample_std > 0:
            out = out + self.noise_sample_std.to(y.dtype) * self.standard_normal(y.shape).to(y.dtype)
        return out

    def expected(self, y: torch.Tensor) -> torch.Tensor:
        if self.eval_mode == "none":
            return y
        return y * (0.5 * (self.scale_range[0] + self.scale_range[1]))

    def extra_repr(self) -> str:
        return (f"{self.num_features}, mean_range={self.mean_range}, scale_range={self.scale_range}, "
                f"sample_std={self.sample_std}, eval_mode={self.eval_mode!r}")


#: The noise modules by the name :func:`noise_hook` and :class:`NoisyBatchNorm1d` take.
NOISE_KINDS = {"iid": IIDNoise, "shift-scale": ShiftScaleNoise}


def _noise_class(kind: str):
    if kind not in NOISE_KINDS:
        raise ValueError(f"kind must be one of {tuple(NOISE_KINDS)}, got {kind!r}")
    return NOISE_KINDS[kind]


class NoisyBatchNorm1d(nn.Module):
    """:class:`bnkit.torch.BatchNorm1d` followed by a noise module (for models built by hand).

    ``bn`` and ``noise`` are the two submodules; ``kind`` picks the noise
    (:data:`NOISE_KINDS`), and keyword arguments other than ``eps`` and
    ``momentum`` go to it. Shape ``(N, D)`` in and out.
    """

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 kind: str = "iid", **noise_kwargs):
        cls = _noise_class(kind)
        super().__init__()
        self.bn = BatchNorm1d(num_features, eps=eps, momentum=momentum)
        self.noise = cls(num_features, **noise_kwargs)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.noise(self.bn(x))


def noise_hook(kind: str = "iid", seed: int = 0, **noise_kwargs) -> Callable[[int, int], StepNoise]:
    """A ``post_norm`` factory for :func:`bnkit.experiments.mlp`: one noise module per block.

    ``kind`` is ``"iid"`` (:class:`IIDNoise`) or ``"shift-scale"``
    (:class:`ShiftScaleNoise`); ``noise_kwargs`` go to its constructor. Block
    ``l`` gets its own generator seeded with ``seed + l``, so the noise is
    reproducible and independent across layers.

    Example: ``mlp(batch_norm=True, post_norm=noise_hook("iid", mean_range=1.0))``.
    """
    cls = _noise_class(kind)
    cls(1, seed=0, **noise_kwargs)  # bad settings fail here, not when the model is built

    def make(layer: int, width: int) -> StepNoise:
        return cls(width, seed=seed + layer, **noise_kwargs)
    return make


def _noise_modules(model: nn.Module):
    return [m for m in model.modules() if isinstance(m, StepNoise)]


@contextlib.contextmanager
def frozen_noise(model: nn.Module) -> Iterator[None]:
    """Within the block, every noise module in ``model`` keeps its current draw."""
    mods = _noise_modules(model)
    old = [m.frozen for m in mods]
    for m in mods:
        m.frozen = True
    try:
        yield
    finally:
        for m, f in zip(mods, old):
            m.frozen = f


def advance_noise(model: nn.Module) -> int:
    """Draw the next training step's noise in every noise module of ``model`` now (:meth:`StepNoise.draw_ahead`).

    A measurement taken after this, inside :func:`frozen_noise`, sees the
    noise the next update will use, and the training's sequence of draws is
    unchanged. Returns the number of noise modules.
    """
    mods = _noise_modules(model)
    for m in mods:
        if m.resample_on_forward and not m.pending:
            m.draw_ahead()
    return len(mods)
