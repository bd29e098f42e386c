r"""Noisy batch norm: a covariate shift made on purpose (Santurkar et al. 2018, Section 2.1).

After a BN layer with output :math:`y` of shape ``(N, D)``, at training step
:math:`t`, :class:`BatchNormNoise` draws for every unit :math:`j` a shift and a
scale

.. math::

    m_{t,j} \sim \mathcal U(-a, a), \qquad s_{t,j} \sim \mathcal U(s_{lo}, s_{hi}),

and, optionally, per-sample noise :math:`\xi_{n,j} \sim \mathcal N(0, 1)` of
standard deviation :math:`v_{t,j} \sim \mathcal U(0, \sigma_\xi)`; it returns

.. math::

    y'_{n,j} = s_{t,j}\, y_{n,j} + m_{t,j} + v_{t,j}\, \xi_{n,j}.

So the next layer sees a unit whose mean and standard deviation jump at every
step. In eval mode the noise is replaced by its expectation,
:math:`y' = \bar s\, y` with :math:`\bar s = (s_{lo} + s_{hi})/2`.

* :class:`BatchNormNoise` -- the noise module; :class:`NoisyBatchNorm1d` --
  BN followed by it; :func:`noise_hook` -- one per block of
  :func:`bnkit.experiments.mlp`.
* :func:`frozen_noise` -- a context in which every noise module keeps its
  current draw (measurements use it).
"""

from __future__ import annotations

import contextlib
from typing import Callable, Dict, Iterator, Optional, Tuple

import torch
from torch import nn

from ..torch import BatchNorm1d

__all__ = ["BatchNormNoise", "NoisyBatchNorm1d", "noise_hook", "frozen_noise"]


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


