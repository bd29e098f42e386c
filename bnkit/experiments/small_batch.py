r"""Chapter 7's experiment: batch norm, layer norm and group norm as the batch shrinks.

A small convolutional network for 28 x 28 images with one switch for its
normalization layers (:func:`conv_net`), and the sweep over batch sizes that
trains one network per (normalization, batch size) pair (:func:`batch_size_sweep`).

Every run sees the **same examples in the same order** -- the stream of
:class:`~bnkit.experiments.BatchStream`, cut into batches of
:math:`B` -- so a run with batch size :math:`B` takes ``examples / B`` SGD
steps. The learning rate follows the linear scaling rule,
:math:`\eta_B = \eta_{\text{ref}}\,B / B_{\text{ref}}`, as in Wu & He (2018):
for small learning rates, :math:`k` steps of batch :math:`B` then move the
weights about as far as one step of batch :math:`kB`, so a network whose
layers do not depend on the batch gets nearly the same result at every
batch size, and what changes with :math:`B` is the normalization.

For batch norm the sweep also measures the test accuracy in three ways:

* eval mode -- the running (EMA) statistics, as deployed;
* eval mode with *population* statistics recomputed after training
  (:func:`bnkit.torch.recompute_batch_norm_stats`, PreciseBN, over training
  batches of the training batch size);
* with *batch* statistics, i.e. in training mode, over test batches of the
  training batch size -- what the network saw during training
  (:func:`batch_statistics_accuracy`).

Needs torch.
"""

from __future__ import annotations

import copy
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from typing import Dict, Optional, Sequence, Tuple

import numpy as np
import torch
from torch import nn

from ..torch import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, recompute_batch_norm_stats
from .training import as_tensors, evaluate, train

__all__ = [
    "NORMS",
    "BATCH_SIZES",
    "norm_layer",
    "conv_net",
    "mnist_images",
    "batch_statistics_accuracy",
    "precise_accuracy",
    "SweepResult",
    "batch_size_sweep",
]

#: The values of ``norm`` accepted by :func:`conv_net`.
NORMS = ("batch", "layer", "group", "none")
#: The batch sizes of the chapter's sweep.
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)


def norm_layer(norm: str, num_features: int, spatial: bool = True, num_groups: int = 4) -> nn.Module:
    r"""One normalization layer of bnkit for ``num_features`` channels (or features).

    Parameters
    ----------
    norm : {"batch", "layer", "group", "none"}
        ``"batch"``: :class:`bnkit.torch.BatchNorm2d` (``spatial``) or
        :class:`bnkit.torch.BatchNorm1d`. ``"layer"``: layer norm over every
        axis but the batch -- :class:`bnkit.torch.GroupNorm` with one group
        for an (N, C, H, W) input (per-channel :math:`\gamma, \beta`, as in
        Wu & He's comparison), :class:`bnkit.torch.LayerNorm` for an (N, D)
        input. ``"group"``: :class:`bnkit.torch.GroupNorm` with ``num_groups``
        groups. ``"none"``: ``nn.Identity``.
    num_features : int
        :math:`C` (or :math:`D`).
    spatial : bool, default True
        The input is (N, C, H, W) (True) or (N, D) (False).
    num_groups : int, default 4
        Groups of ``"group"``; must divide ``num_features``.

    Returns
    -------
    nn.Module
        With 2 ``num_features`` parameters (:math:`\gamma, \beta`), none for ``"none"``.
    """
    if norm == "batch":
        return BatchNorm2d(num_features) if spatial else BatchNorm1d(num_features)
    if norm == "layer":
        return GroupNorm(1, num_features) if spatial else LayerNorm(num_features)
    if norm == "group":
        return GroupNorm(num_groups, num_features)
    if norm == "none":
        return nn.Identity()
    raise ValueError(f"norm must be one of {NORMS} (got {norm!r})")


def conv_net(norm: str = "batch", channels: Sequence[int] = (8, 16), hidden: int = 32,
             num_groups: int = 4, num_classes: int = 10, image_size: int = 28,
             seed: Optional[int] = 0, fc_norm: Optional[str] = None) -> nn.Sequential:
    r"""A small conv net with a normalization switch.

    For each width :math:`C_i` in ``channels``: a 3 x 3 convolution (padding 1),
    the normalization, ReLU and 2 x 2 max pooling, which halves the image.
    Then a fully connected layer of ``hidden`` units with the normalization
    and ReLU (skipped when ``hidden=0``), and a linear output layer. With the
    defaults, on (N, 1, 28, 28) images:

    .. math::

        28^2 \xrightarrow{\text{conv}, 8} 14^2 \xrightarrow{\text{conv}, 16} 7^2
        \xrightarrow{\text{fc}} 32 \xrightarrow{\text{fc}} 10 .

    A layer followed by a normalization has no bias (the normalization's
    :math:`\beta` replaces it); without one, it has a bias. The
    batch, layer and group variants therefore have exactly the same
    parameters -- they differ only in the axes their statistics run over.

    Parameters
    ----------
    norm : {"batch", "layer", "group", "none"}
        See :func:`norm_layer`.
    channels : sequence of int, default (8, 16)
        Output channels of the convolutions.
    hidden : int, default 32
        Width of the hidden fully connected layer; 0 for none.
    num_groups : int, default 4
        Groups of group norm (must divide every width).
    num_classes : int, default 10
    image_size : int, default 28
        Height and width of the (square) input; must be divisible by
        :math:`2^{\text{len(channels)}}`.
    seed : int or None, default 0
        Seeds the initial weights, without touching torch's global RNG. The
        weights are drawn in the same order for every ``norm``, so the four
        variants start from the same convolution and linear weights.
    fc_norm : {"batch", "layer", "group", "none"} or None, default None
        The normalization of the hidden fully connected layer; None: the same as ``norm``.

    Returns
    -------
    nn.Sequential
        Modules named ``conv1, norm1, relu1, pool1, conv2, ..., flatten, fc,
        norm_fc, relu_fc, head``; input (N, 1, H, W), output (N, num_classes).
    """
    fc_norm = norm if fc_norm is None else fc_norm
    for name, value in (("norm", norm), ("fc_norm", fc_norm)):
        if value not in NORMS:
            raise ValueError(f"{name} must be one of {NORMS} (got {value!r})")
    channels = [int(c) for c in channels]
    if not channels or min(channels) <= 0:
        raise ValueError(f"channels must be a non-empty sequence of positive widths (got {channels})")
    if hidden < 0:
        raise ValueError(f"hidden must be >= 0 (got {hidden})")
    side = image_size // 2 ** len(channels)
    if side < 1 or image_size % 2 ** len(channels):
        raise ValueError(f"image_size={image_size} is not divisible by 2**{len(channels)}")
    grouped = (channels if norm == "group" else []) + ([hidden] if hidden and fc_norm == "group" else [])
    if any(w % num_groups for w in grouped):
        raise ValueError(f"num_groups={num_groups} must divide every group-normalized width {grouped}")
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        if seed is not None:
            torch.manual_seed(int(seed))
        layers = OrderedDict()
        c_in = 1
        for i, c in enumerate(channels, start=1):
            layers[f"conv{i}"] = _drop_bias(nn.Conv2d(c_in, c, 3, padding=1), norm)
            layers[f"norm{i}"] = norm_layer(norm, c, spatial=True, num_groups=num_groups)
            layers[f"relu{i}"] = nn.ReLU()
            layers[f"pool{i}"] = nn.MaxPool2d(2)
            c_in = c
        layers["flatten"] = nn.Flatten()
        features = c_in * side * side
        if hidden:
            layers["fc"] = _drop_bias(nn.Linear(features, hidden), fc_norm)
            layers["norm_fc"] = norm_layer(fc_norm, hidden, spatial=False, num_groups=num_groups)
            layers["relu_fc"] = nn.ReLU()
            features = hidden
        layers["head"] = nn.Linear(features, num_classes)
    return nn.Sequential(layers)


def _drop_bias(layer: nn.Module, norm: str) -> nn.Module:
    """Remove the bias of a layer a normalization follows (after it was drawn, to keep the RNG order)."""
    if norm != "none":
        layer.bias = None
    return layer


def mnist_images() -> Dict[str, np.ndarray]:
    """The embedded MNIST subset (:func:`bnkit.data.load_mnist_5k`) as images.

    Returns
    -------
    dict
        ``x_train`` float32 (4000, 1, 28, 28), ``y_train`` int64 (4000,),
        ``x_test`` float32 (1000, 1, 28, 28), ``y_test`` int64 (1000,); pixels in [0, 1].
    """
    from ..data import load_mnist_5k

    out = {}
    for split in ("train", "test"):
        images, labels = load_mnist_5k(split)
        out[f"x_{split}"] = images.reshape(-1, 1, 28, 28)
        out[f"y_{split}"] = labels
    return out


@torch.no_grad()
def batch_statistics_accuracy(model: nn.Module, x, y, batch_size: int, seed: int = 0) -> float:
    """Accuracy with every normalization in training mode: batch statistics of batches of ``batch_size``.

    The examples are shuffled (``np.random.default_rng(seed)``) and cut into
    consecutive batches of ``batch_size`` (the last one may be smaller, but
    keeps at least 2 examples). The model is deep-copied first, so its running
    statistics, ``num_batches_tracked`` and mode are left untouched.

    Parameters
    ----------
    model : nn.Module
    x : Tensor or ndarray of shape (n, ...)
    y : Tensor or ndarray of shape (n,)
        Integer labels.
    batch_size : int
        At least 2.
    seed : int, default 0

    Returns
    -------
    float
        The fraction of ``x`` classified correctly.
    """
    if batch_size < 2:
        raise ValueError(f"batch_size must be >= 2 (got {batch_size})")
    x, y = torch.as_tensor(x), torch.as_tensor(y)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x)))
    copy_ = copy.deepcopy(model).train()
    correct = 0
    for idx in _batches(order, batch_size):
        correct += int((copy_(x[idx]).argmax(1) == y[idx]).sum())
    return correct / len(x)


def _batches(order: torch.Tensor, batch_size: int):
    """Consecutive slices of ``order``; a last slice of 1 joins the previous one."""
    starts = list(range(0, len(order), batch_size))
    if len(starts) > 1 and len(order) - starts[-1] < 2:
        starts.pop()
    for i, s in enumerate(starts):
        end = starts[i + 1] if i + 1 < len(starts) else len(order)
        yield order[s:end]


@torch.no_grad()
def precise_accuracy(model: nn.Module, x_train, x_test, y_test, batch_size: int,
                     seed: int = 0, aggregation: str = "pooled") -> float:
    """Eval-mode accuracy after replacing the running statistics by population statistics.

    A deep copy of ``model`` gets :func:`bnkit.torch.recompute_batch_norm_stats`
    over the whole of ``x_train`` in shuffled batches of ``batch_size`` (the
    training batch size, so each layer sees inputs distributed as in
    training), then is evaluated on ``(x_test, y_test)`` in eval mode.
    ``model`` itself is not changed.

    Returns
    -------
    float
        The fraction of ``x_test`` classified correctly.
    """
    x_train = torch.as_tensor(x_train)
    order = torch.from_numpy(np.random.default_rng(seed).permutation(len(x_train)))
    copy_ = copy.deepcopy(model)
    recompute_batch_norm_stats(copy_, (x_train[idx] for idx in _batches(order, batch_size)),
                               aggregation=aggregation)
    acc, _ = evaluate(copy_, torch.as_tensor(x_test), torch.as_tensor(y_test))
    return acc


@dataclass
class SweepResult:
    r"""What :func:`batch_size_sweep` measured; every array has one entry per batch size.

    ``batch_sizes`` (int), ``steps`` (SGD steps of each run, ``examples // B``)
    and ``lr`` (learning rate of each run) describe the runs. Per
    normalization (dicts keyed by ``"batch"``, ``"layer"``, ...):
    ``test_accuracy``, the eval-mode test accuracy after training (a
    fraction); ``train_loss``, the mean minibatch loss over the last quarter
    of the steps; ``seconds``, the wall-clock training time.

    For batch norm (None when ``"batch"`` was not in the sweep):
    ``bn_batch_stats_accuracy``, the test accuracy with the batch statistics
    of test batches of the training batch size (:func:`batch_statistics_accuracy`),
    and ``bn_precise_accuracy``, the eval-mode test accuracy with recomputed
    population statistics (:func:`precise_accuracy`).

    ``config`` holds the arguments of the sweep.
    """

    batch_sizes: np.ndarray
    steps: np.ndarray
    lr: np.ndarray
    test_accuracy: Dict[str, np.ndarray] = field(default_factory=dict)
    train_loss: Dict[str, np.ndarray] = field(default_factory=dict)
    bn_batch_stats_accuracy: Optional[np.ndarray] = None
    bn_precise_accuracy: Optional[np.ndarray] = None
    seconds: Dict[str, np.ndarray] = field(default_factory=dict)
    config: Dict[str, object] = field(default_factory=dict)

    @property
    def norms(self) -> Tuple[str, ...]:
        """The normalizations of the sweep, in the order they ran."""
        return tuple(self.test_accuracy)

    def accuracy(self, norm: str, batch_size: int) -> float:
        """Eval-mode test accuracy of ``norm`` at ``batch_size``."""
        return float(self.test_accuracy[norm][self.index(batch_size)])

    def index(self, batch_size: int) -> int:
        """Position of ``batch_size`` in ``batch_sizes``; ``KeyError`` if it is not there."""
        hits = np.flatnonzero(self.batch_sizes == batch_size)
        if not hits.size:
            raise KeyError(f"batch size {batch_size} is not in the sweep {self.batch_sizes.tolist()}")
        return int(hits[0])


def batch_size_sweep(data=None, batch_sizes: Sequence[int] = BATCH_SIZES,
                     norms: Sequence[str] = ("batch", "layer", "group", "none"),
                     examples: int = 8192, lr: float = 0.02, reference_batch_size: int = 32,
                     momentum: float = 0.9, seed: int = 0, num_threads: Optional[int] = 1,
                     progress: bool = False, **net_options) -> SweepResult:
    r"""Train one :func:`conv_net` per (normalization, batch size) and measure it.

    Parameters
    ----------
    data : dict, optional
        ``x_train`` (n, 1, H, W), ``y_train``, ``x_test``, ``y_test`` (NumPy or
        torch); default :func:`mnist_images`.
    batch_sizes : sequence of int, default (2, 4, ..., 256)
        Each at least 2 and at most n.
    norms : sequence of str, default all of :data:`NORMS`
    examples : int, default 8192
        Training examples every run sees (the same ones, in the same order);
        a run with batch size :math:`B` takes ``examples // B`` steps (at least 1).
    lr : float, default 0.02
        :math:`\eta_{\text{ref}}`, the learning rate at ``reference_batch_size``;
        batch size :math:`B` uses :math:`\eta_{\text{ref}} B / B_{\text{ref}}`.
    reference_batch_size : int, default 32
    momentum : float, default 0.9
        Of :class:`torch.optim.SGD`.
    seed : int, default 0
        The weights (the same for every run) and the order of the examples.
    num_threads : int or None, default 1
        torch threads while training (1: results independent of the machine's thread count).
    progress : bool, default False
        Print one line per run.
    **net_options
        Passed to :func:`conv_net` (``channels``, ``hidden``, ``num_groups``).

    Returns
    -------
    SweepResult
    """
    data = as_tensors(mnist_images() if data is None else data)
    batch_sizes = np.array([int(b) for b in batch_sizes])
    n_train = len(data["x_train"])
    if batch_sizes.min() < 2 or batch_sizes.max() > n_train:
        raise ValueError(f"batch sizes must lie in [2, {n_train}] (got {batch_sizes.tolist()})")
    for norm in norms:
        if norm not in NORMS:
            raise ValueError(f"norm must be one of {NORMS} (got {norm!r})")
    if examples < 1:
        raise ValueError(f"examples must be positive (got {examples})")
    steps = np.maximum(examples // batch_sizes, 1)
    rates = lr * batch_sizes / reference_batch_size
    result = SweepResult(batch_sizes=batch_sizes, steps=steps, lr=rates, config={
        "norms": list(norms), "examples": int(examples), "lr": float(lr),
        "reference_batch_size": int(reference_batch_size), "momentum": float(momentum),
        "seed": int(seed), "net": dict(net_options)})
    k = len(batch_sizes)
    if "batch" in norms:
        result.bn_batch_stats_accuracy = np.zeros(k)
        result.bn_precise_accuracy = np.zeros(k)
    for norm in norms:
        result.test_accuracy[norm] = np.zeros(k)
        result.train_loss[norm] = np.zeros(k)
        result.seconds[norm] = np.zeros(k)
        for i, (b, s, rate) in enumerate(zip(batch_sizes, steps, rates)):
            model = conv_net(norm, seed=seed, **net_options)
            start = time.perf_counter()
            history = train(model, data, int(s), batch_size=int(b), lr=float(rate), seed=seed,
                            momentum=momentum, eval_every=max(1, int(s) // 4), record_every=0,
                            num_threads=num_threads)
            result.seconds[norm][i] = time.perf_counter() - start
            result.test_accuracy[norm][i] = history.test_accuracy[-1]
            result.train_loss[norm][i] = history.train_loss[-1]
            if norm == "batch":
                with _threads(num_threads):
                    result.bn_batch_stats_accuracy[i] = batch_statistics_accuracy(
                        model, data["x_test"], data["y_test"], int(b), seed)
                    result.bn_precise_accuracy[i] = precise_accuracy(
                        model, data["x_train"], data["x_test"], data["y_test"], int(b), seed)
            if progress:
                print(f"{norm:5s} B={b:<4d} {s:5d} steps  test accuracy "
                      f"{result.test_accuracy[norm][i]:.3f}  ({result.seconds[norm][i]:.1f} s)",
                      flush=True)
    return result


class _threads:
    """Context manager: torch's intra-op thread count set to ``n`` (None: unchanged), then restored."""

    def __init__(self, n: Optional[int]):
        self.n, self.old = n, None

    def __enter__(self):
        self.old = torch.get_num_threads()
        if self.n is not None:
            torch.set_num_threads(self.n)

    def __exit__(self, *exc):
        torch.set_num_threads(self.old)
        return False
