r"""Where a training step spends its time: batch norm against the convolutions (Chapter 9).

A small residual network in the style of He et al.'s CIFAR ResNets
(:func:`small_resnet`: a 3×3 stem, stages of two basic blocks, each
``conv → norm → ReLU → conv → norm``, plus the shortcut, and a linear head), one
SGD step on it (:func:`training_step`), and two ways to split the step's time:

* :func:`time_by_operator`: :mod:`torch.profiler` records every operator of a few
  steps; each operator's *self* time (its own, without the operators it calls)
  goes to a category by its name (:func:`operator_category`): convolution,
  batch norm, everything else;
* the difference method, done by the caller: time the same network with its
  norm layers replaced by :class:`torch.nn.Identity` (``norm=None``) next to
  the network with them, in one interleaved run; the difference is what the
  norm layers cost, forward and backward, whoever implements them.
"""

from __future__ import annotations

from typing import Callable, Dict, Optional, Sequence

import torch
from torch import nn

__all__ = ["small_resnet", "training_step", "operator_category", "time_by_operator",
           "CATEGORIES"]

#: The categories of :func:`operator_category`, in the order tables list them.
CATEGORIES = ("convolution", "batch norm", "other")


class _BasicBlock(nn.Module):
    """``conv3x3 → norm → ReLU → conv3x3 → norm``, plus the shortcut, then ReLU."""

    def __init__(self, c_in: int, c_out: int, stride: int, norm: Callable[[int], nn.Module]):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = norm(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = norm(c_out)
        self.shortcut = nn.Sequential()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False),
                                          norm(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = torch.relu(self.bn1(self.conv1(x)))
        return torch.relu(self.bn2(self.conv2(y)) + self.shortcut(x))


def small_resnet(norm: Optional[Callable[[int], nn.Module]] = nn.BatchNorm2d,
                 widths: Sequence[int] = (16, 32, 64), blocks_per_stage: int = 2,
                 num_classes: int = 10, seed: int = 0) -> nn.Module:
    """A CIFAR-style residual network: 3×3 stem, stages of basic blocks, global pooling, linear.

    Parameters
    ----------
    norm : callable or None, default :class:`torch.nn.BatchNorm2d`
        Builds the norm layer from a channel count (e.g.
        :class:`bnkit.torch.BatchNorm2d`); ``None`` puts
        :class:`torch.nn.Identity` in every norm's place.
    widths : sequence of int, default (16, 32, 64)
        Channels of each stage; every stage after the first halves the height
        and width.
    blocks_per_stage : int, default 2
    num_classes : int, default 10
    seed : int, default 0
        The weights are drawn after ``torch.manual_seed(seed)``, so networks
        that differ only in ``norm`` start from the same convolutions.

    Returns
    -------
    torch.nn.Module
        Maps ``(N, 3, H, W)`` to ``(N, num_classes)``. With ``widths`` of
        length :math:`S` and ``blocks_per_stage`` :math:`B`, it has
        :math:`1 + 2SB + (S - 1)` convolutions and as many norm layers.
    """
    if blocks_per_stage < 1 or not widths:
        raise ValueError(f"expected at least one stage of at least one block "
                         f"(got widths={tuple(widths)}, blocks_per_stage={blocks_per_stage})")
    make_norm = norm if norm is not None else (lambda c: nn.Identity())
    torch.manual_seed(seed)
    layers = [nn.Conv2d(3, widths[0], 3, 1, 1, bias=False), make_norm(widths[0]), nn.ReLU()]
    c_in = widths[0]
    for i, c_out in enumerate(widths):
        for b in range(blocks_per_stage):
            layers.append(_BasicBlock(c_in, c_out, 2 if (i > 0 and b == 0) else 1, make_norm))
            c_in = c_out
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c_in, num_classes)]
    return nn.Sequential(*layers)


def training_step(model: nn.Module, x: torch.Tensor, target: torch.Tensor,
                  lr: float = 0.01) -> Callable[[], float]:
    """A closure that runs one SGD training step of ``model`` on ``(x, target)``.

    Forward in training mode, cross-entropy loss, backward, and a plain SGD
    update of every parameter (learning rate ``lr``). Returns the loss.
    """
    optimizer = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()

    def step() -> float:
        optimizer.zero_grad(set_to_none=True)
        loss = nn.functional.cross_entropy(model(x), target)
        loss.backward()
        optimizer.step()
        return loss.item()

    return step


def operator_category(name: str) -> str:
    """The category of a torch operator or autograd node, by its name.

    ``"convolution"`` for names containing ``conv`` (``aten::mkldnn_convolution``,
    ``aten::convolution_backward``, ``ConvolutionBackward0``, ...), ``"batch
    norm"`` for ``batch_norm`` or ``BatchNorm`` (``aten::native_batch_norm``,
    ``NativeBatchNormBackward0``, ...), ``"other"`` for everything else.

    Examples
    --------
    >>> operator_category("aten::native_batch_norm_backward")
    'batch norm'
    """
    low = name.lower()
    if "conv" in low:
        return "convolution"
    if "batch_norm" in low or "batchnorm" in low:
        return "batch norm"
    return "other"


def time_by_operator(step: Callable[[], object], steps: int = 3,
                     warmup: int = 1) -> Dict[str, float]:
    """Seconds per step in each of :data:`CATEGORIES`, from :mod:`torch.profiler`'s self times.

    Runs ``warmup`` steps unrecorded, then ``steps`` steps under the profiler
    (CPU activity), and adds up each operator's self CPU time by
    :func:`operator_category`. The profiler adds a little time to every
    operator, so the categories are shares of a slightly slower step; the
    shares, not the absolute times, are the result.

    Returns
    -------
    dict
        ``{category: seconds per step}`` for every category, plus ``"total"``.
    """
    from torch.profiler import ProfilerActivity, profile

    if steps < 1:
        raise ValueError(f"steps must be >= 1 (got {steps})")
    for _ in range(warmup):
        step()
    with profile(activities=[ProfilerActivity.CPU]) as prof:
        for _ in range(steps):
            step()
    seconds = {c: 0.0 for c in CATEGORIES}
    for event in prof.key_averages():
        seconds[operator_category(event.key)] += event.self_cpu_time_total / 1e6 / steps
    seconds["total"] = sum(seconds[c] for c in CATEGORIES)
    return seconds
