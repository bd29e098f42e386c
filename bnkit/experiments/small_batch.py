r"""Chapter 7's experiment: batch, layer, group and instance norm as the batch shrinks.

A small convolutional network for 28 x 28 images with one switch for its
normalization layers (:func:`conv_net`; the named variants of the chapter in
:data:`VARIANTS`, built by :func:`variant_net`), and the sweep that trains one
network per (variant, batch size, seed) (:func:`batch_size_sweep`, result
:class:`SweepResult`, saved to and loaded from JSON).

Every run of one seed sees the **same examples in the same order** -- the
stream of :class:`~bnkit.experiments.BatchStream`, cut into batches of
:math:`B` -- so a run with batch size :math:`B` takes ``examples / B`` SGD
steps. The learning rate follows the linear scaling rule,
:math:`\eta_B = \eta_{\text{ref}}\,B / B_{\text{ref}}`, as in Wu & He (2018):
for small learning rates, :math:`k` steps of batch :math:`B` then move the
weights about as far as one step of batch :math:`kB`, so a network whose
layers do not depend on the batch gets nearly the same result at every
batch size, and what changes with :math:`B` is the normalization.

For the variants with batch norm the sweep also measures the test accuracy in
two more ways than eval mode with the running (EMA) statistics:

* eval mode with *population* statistics recomputed after training
  (:func:`precise_accuracy`, PreciseBN, over training batches of the
  training batch size);
* with *batch* statistics, i.e. in training mode, over test batches of the
  training batch size -- what the network saw during training
  (:func:`batch_statistics_accuracy`).

Why batch norm of the fully connected layer fails at :math:`B = 2` is
measured by :mod:`bnkit.experiments.batch_of_two`.

Command line (the full sweep of the chapter, with a progress bar)::

    python -m bnkit.experiments.small_batch --seeds 0 1 2 3 4 \
        --output bnkit/_data/results/small_batch_sweep.json

Needs torch.
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import shlex
import sys
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterator, NamedTuple, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn

from ..stats import Spread, spread
from ..torch import BatchNorm1d, BatchNorm2d, GroupNorm, LayerNorm, recompute_batch_norm_stats
from .arguments import defaults
from .training import as_tensors, evaluate, train

__all__ = [
    "NORMS",
    "Variant",
    "VARIANTS",
    "BATCH_SIZES",
    "WATCHED_LAYERS",
    "norm_layer",
    "conv_net",
    "variant_net",
    "mnist_images",
    "batch_statistics_accuracy",
    "precise_accuracy",
    "SweepResult",
    "batch_size_sweep",
    "configure",
    "run",
    "merge_sweeps",
    "main",
]

#: The values of ``norm`` (and ``fc_norm``) accepted by :func:`conv_net`.
NORMS = ("batch", "layer", "group", "instance", "none")
class Variant(NamedTuple):
    r"""One network of the chapter: the normalization of the convolutions and of the hidden fc layer.

    ``train_below_fc=False`` freezes every parameter below the fc layer's
    normalization at its initial value (only that normalization's
    :math:`\gamma, \beta` and the output layer learn): a control that shows
    what training the lower layers adds.
    """

    norm: str
    fc_norm: str
    train_below_fc: bool = True


#: The chapter's networks by name (see :func:`variant_net`).
VARIANTS: Dict[str, Variant] = {
    "batch": Variant("batch", "batch"),
    "layer": Variant("layer", "layer"),
    "group": Variant("group", "group"),
    "instance": Variant("instance", "none"),
    "batch_conv": Variant("batch", "none"),
    "batch_frozen": Variant("batch", "batch", train_below_fc=False),
    "none": Variant("none", "none"),
}
#: The batch sizes of the chapter's sweep.
BATCH_SIZES = (2, 4, 8, 16, 32, 64, 128, 256)
#: The weight layers of :func:`conv_net` whose gradients and weight changes are measured.
WATCHED_LAYERS = ("conv1", "conv2", "fc", "head")


def norm_layer(norm: str, num_features: int, spatial: bool = True, num_groups: int = 4) -> nn.Module:
    r"""One normalization layer of bnkit for ``num_features`` channels (or features).

    Parameters
    ----------
    norm : {"batch", "layer", "group", "instance", "none"}
        ``"batch"``: :class:`bnkit.torch.BatchNorm2d` (``spatial``) or
        :class:`bnkit.torch.BatchNorm1d`. ``"layer"``: layer norm over every
        axis but the batch -- :class:`bnkit.torch.GroupNorm` with one group
        for an (N, C, H, W) input (per-channel :math:`\gamma, \beta`, as in
        Wu & He's comparison), :class:`bnkit.torch.LayerNorm` for an (N, D)
        input. ``"group"``: :class:`bnkit.torch.GroupNorm` with ``num_groups``
        groups. ``"instance"``: :class:`bnkit.torch.GroupNorm` with one group
        per channel (each channel of each example over its :math:`H W`
        positions); only for a spatial input. ``"none"``: ``nn.Identity``.
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

    Raises
    ------
    ValueError
        For an unknown ``norm``, and for ``"instance"`` on an (N, D) input: each
        of its sets would hold one value (:math:`m = 1`), so every output would be :math:`\beta`.
    """
    if norm == "batch":
        return BatchNorm2d(num_features) if spatial else BatchNorm1d(num_features)
    if norm == "layer":
        return GroupNorm(1, num_features) if spatial else LayerNorm(num_features)
    if norm == "group":
        return GroupNorm(num_groups, num_features)
    if norm == "instance":
        if not spatial:
            raise ValueError("instance norm of an (N, D) input normalizes single values (m = 1): "
                             "every output would be beta; use it on (N, C, H, W) inputs only")
        return GroupNorm(num_features, num_features)
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
    ``fc_norm`` and ReLU (skipped when ``hidden=0``), and a linear output
    layer. With the defaults, on (N, 1, 28, 28) images:

    .. math::

        28^2 \xrightarrow{\text{conv}, 8} 14^2 \xrightarrow{\text{conv}, 16} 7^2
        \xrightarrow{\text{fc}} 32 \xrightarrow{\text{fc}} 10 .

    A layer followed by a normalization has no bias (the normalization's
    :math:`\beta` replaces it); without one, it has a bias. The
    batch, layer and group variants therefore have exactly the same
    parameters -- they differ only in the axes their statistics run over.

    Parameters
    ----------
    norm : {"batch", "layer", "group", "instance", "none"}
        The normalization of the convolutions; see :func:`norm_layer`.
    channels : sequence of int, default (8, 16)
        Output channels of the convolutions.
    hidden : int, default 32
        Width of the hidden fully connected layer; 0 for none.
    num_groups : int, default 4
        Groups of group norm (must divide every group-normalized width).
    num_classes : int, default 10
    image_size : int, default 28
        Height and width of the (square) input; must be divisible by
        :math:`2^{\text{len(channels)}}`.
    seed : int or None, default 0
        Seeds the initial weights, without touching torch's global RNG. The
        weights are drawn in the same order for every ``norm``, so all
        variants start from the same convolution and linear weights.
    fc_norm : {"batch", "layer", "group", "none"} or None, default None
        The normalization of the hidden fully connected layer. None: the same
        as ``norm``, except for ``norm="instance"``, where it is ``"none"``
        (instance norm is not defined on an (N, D) input, see :func:`norm_layer`).

    Returns
    -------
    nn.Sequential
        Modules named ``conv1, norm1, relu1, pool1, conv2, ..., flatten, fc,
        norm_fc, relu_fc, head``; input (N, 1, H, W), output (N, num_classes).
    """
    if fc_norm is None:
        fc_norm = "none" if norm == "instance" else norm
    for name, value in (("norm", norm), ("fc_norm", fc_norm)):
        if value not in NORMS:
            raise ValueError(f"{name} must be one of {NORMS} (got {value!r})")
    if fc_norm == "instance" and hidden:
        raise ValueError("fc_norm='instance' is not defined: the fc layer's (N, D) output has no "
                         "positions to normalize over (m = 1)")
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


def variant_net(variant: str, seed: Optional[int] = 0, **net_options) -> nn.Sequential:
    """The :func:`conv_net` of one of the chapter's :data:`VARIANTS`.

    ``"batch"``, ``"layer"``, ``"group"``: that normalization in every layer.
    ``"instance"``: instance norm in the convolutions, a plain fully connected
    layer (with bias). ``"batch_conv"``: batch norm in the convolutions only,
    a plain fully connected layer. ``"batch_frozen"``: batch norm everywhere,
    with every parameter below the fc layer's batch norm frozen at its
    initial value (``requires_grad=False``). ``"none"``: no normalization.

    Raises
    ------
    ValueError
        For a name not in :data:`VARIANTS`.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {tuple(VARIANTS)} (got {variant!r})")
    spec = VARIANTS[variant]
    net = conv_net(spec.norm, seed=seed, fc_norm=spec.fc_norm, **net_options)
    if not spec.train_below_fc:
        if not hasattr(net, "norm_fc"):
            raise ValueError(f"variant {variant!r} needs a hidden fc layer (hidden > 0)")
        for name, module in net.named_children():
            if name == "norm_fc":
                break
            for p in module.parameters():
                p.requires_grad_(False)
    return net


def _has_batch_norm(variant: str) -> bool:
    return "batch" in (VARIANTS[variant].norm, VARIANTS[variant].fc_norm)


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


def _batches(order: torch.Tensor, batch_size: int) -> Iterator[torch.Tensor]:
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


# --------------------------------------------------------------------------- #
# the sweep
# --------------------------------------------------------------------------- #
_PER_VARIANT = ("test_accuracy", "train_loss", "seconds", "batch_stats_accuracy", "precise_accuracy",
                "weight_change")
_FORMAT = "bnkit.experiments.small_batch.SweepResult"


@dataclass
class SweepResult:
    r"""What :func:`batch_size_sweep` measured.

    ``seeds`` (S,), ``batch_sizes`` (K,), ``steps`` (SGD steps of each run,
    ``examples // B``) and ``lr`` (learning rate of each run), both (K,),
    describe the runs. Per variant (dicts keyed by the names of
    :data:`VARIANTS`), arrays of shape (S, K):
    ``test_accuracy``, the eval-mode test accuracy after training (a
    fraction, running statistics for batch norm); ``train_loss``, the mean
    minibatch loss over the last quarter of the steps; ``seconds``, the
    wall-clock training time; and ``weight_change``, of shape (S, K, 4): the
    relative change :math:`\lVert W_\text{end} - W_0\rVert / \lVert W_0\rVert`
    of the weights of each of :data:`WATCHED_LAYERS`.

    For the variants with batch norm only (``"batch"``, ``"batch_conv"``):
    ``batch_stats_accuracy``, the test accuracy with the batch statistics
    of test batches of the training batch size (:func:`batch_statistics_accuracy`),
    and ``precise_accuracy``, the eval-mode test accuracy with recomputed
    population statistics (:func:`precise_accuracy`).

    ``config`` holds the arguments of the sweep (and, from the command line,
    the command that produced it).
    """

    seeds: np.ndarray
    batch_sizes: np.ndarray
    steps: np.ndarray
    lr: np.ndarray
    test_accuracy: Dict[str, np.ndarray] = field(default_factory=dict)
    train_loss: Dict[str, np.ndarray] = field(default_factory=dict)
    seconds: Dict[str, np.ndarray] = field(default_factory=dict)
    batch_stats_accuracy: Dict[str, np.ndarray] = field(default_factory=dict)
    precise_accuracy: Dict[str, np.ndarray] = field(default_factory=dict)
    weight_change: Dict[str, np.ndarray] = field(default_factory=dict)
    config: Dict[str, object] = field(default_factory=dict)

    @property
    def variants(self) -> Tuple[str, ...]:
        """The variants of the sweep, in the order they ran."""
        return tuple(self.test_accuracy)

    def index(self, batch_size: int) -> int:
        """Position of ``batch_size`` in ``batch_sizes``; ``KeyError`` if it is not there."""
        hits = np.flatnonzero(self.batch_sizes == batch_size)
        if not hits.size:
            raise KeyError(f"batch size {batch_size} is not in the sweep {self.batch_sizes.tolist()}")
        return int(hits[0])

    def values(self, variant: str, batch_size: int, what: str = "test_accuracy") -> np.ndarray:
        """One value per seed, shape (S,), of the measurement ``what`` (a field name) of one run setting."""
        if what not in _PER_VARIANT or what == "weight_change":
            raise ValueError(f"what must be one of {_PER_VARIANT[:-1]} (got {what!r})")
        table = getattr(self, what)
        if variant not in table:
            raise KeyError(f"{what} has no variant {variant!r} (it has {tuple(table)})")
        return table[variant][:, self.index(batch_size)].copy()

    def spread(self, variant: str, batch_size: int, what: str = "test_accuracy") -> Spread:
        """:func:`bnkit.stats.spread` over the seeds of :meth:`values`."""
        return spread(self.values(variant, batch_size, what))

    def select(self, seeds: Optional[Sequence[int]] = None, batch_sizes: Optional[Sequence[int]] = None,
               variants: Optional[Sequence[str]] = None) -> "SweepResult":
        """The sub-sweep of some seeds, batch sizes and variants (all by default), as a new result."""
        seeds = self.seeds.tolist() if seeds is None else list(seeds)
        batch_sizes = self.batch_sizes.tolist() if batch_sizes is None else list(batch_sizes)
        variants = self.variants if variants is None else tuple(variants)
        missing = [s for s in seeds if s not in self.seeds.tolist()]
        if missing:
            raise KeyError(f"seeds {missing} are not in the sweep {self.seeds.tolist()}")
        si = [self.seeds.tolist().index(s) for s in seeds]
        ki = [self.index(b) for b in batch_sizes]
        out = SweepResult(seeds=self.seeds[si], batch_sizes=self.batch_sizes[ki], steps=self.steps[ki],
                          lr=self.lr[ki], config=copy.deepcopy(self.config))
        for name in _PER_VARIANT:
            table = getattr(self, name)
            for v in variants:
                if v not in self.test_accuracy:
                    raise KeyError(f"variant {v!r} is not in the sweep {self.variants}")
                if v in table:
                    getattr(out, name)[v] = table[v][np.ix_(si, ki)].copy()
        return out

    def to_dict(self) -> Dict[str, object]:
        """A JSON-ready dict (every array as nested lists)."""
        return {"format": _FORMAT, "version": 1, "config": self.config,
                "seeds": self.seeds.tolist(), "batch_sizes": self.batch_sizes.tolist(),
                "steps": self.steps.tolist(), "lr": self.lr.tolist(),
                **{name: {v: a.tolist() for v, a in getattr(self, name).items()} for name in _PER_VARIANT}}

    @classmethod
    def from_dict(cls, d) -> "SweepResult":
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a saved SweepResult (format {d.get('format')!r})")
        out = cls(seeds=np.asarray(d["seeds"], dtype=np.int64),
                  batch_sizes=np.asarray(d["batch_sizes"], dtype=np.int64),
                  steps=np.asarray(d["steps"], dtype=np.int64), lr=np.asarray(d["lr"], dtype=np.float64),
                  config=dict(d["config"]))
        for name in _PER_VARIANT:
            getattr(out, name).update({v: np.asarray(a, dtype=np.float64) for v, a in d[name].items()})
        return out

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write the result to ``path`` as JSON (floats round-trip exactly). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(_json_two_levels(self.to_dict()))
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "SweepResult":
        """Read a result written by :meth:`save`."""
        return cls.from_dict(json.loads(Path(path).read_text()))


def _json_two_levels(d: Dict[str, object]) -> str:
    """JSON with one line per top-level key and per entry of a dict value: compact, and diffable."""
    def block(obj, indent):
        if not isinstance(obj, dict) or not obj:
            return json.dumps(obj, allow_nan=False)
        pad = " " * indent
        inner = [f"{pad} {json.dumps(k)}: {json.dumps(v, allow_nan=False)}" for k, v in obj.items()]
        return "{\n" + ",\n".join(inner) + f"\n{pad}}}"

    return "{\n" + ",\n".join(f" {json.dumps(k)}: {block(v, 1)}" for k, v in d.items()) + "\n}\n"


def batch_size_sweep(data=None, batch_sizes: Sequence[int] = BATCH_SIZES,
                     variants: Sequence[str] = ("batch", "layer", "group", "instance"),
                     examples: int = 8192, lr: float = 0.02, reference_batch_size: int = 32,
                     momentum: float = 0.9, seeds: Sequence[int] = (0,), num_threads: Optional[int] = 1,
                     progress: bool = False, **net_options) -> SweepResult:
    r"""Train one :func:`variant_net` per (variant, batch size, seed) and measure it.

    Parameters
    ----------
    data : dict, optional
        ``x_train`` (n, 1, H, W), ``y_train``, ``x_test``, ``y_test`` (NumPy or
        torch); default :func:`mnist_images`.
    batch_sizes : sequence of int, default (2, 4, ..., 256)
        Each at least 2 and at most n.
    variants : sequence of str, default ("batch", "layer", "group", "instance")
        Keys of :data:`VARIANTS`.
    examples : int, default 8192
        Training examples every run sees (for one seed, the same ones, in the
        same order); a run with batch size :math:`B` takes ``examples // B``
        steps (at least 1).
    lr : float, default 0.02
        :math:`\eta_{\text{ref}}`, the learning rate at ``reference_batch_size``;
        batch size :math:`B` uses :math:`\eta_{\text{ref}} B / B_{\text{ref}}`.
    reference_batch_size : int, default 32
    momentum : float, default 0.9
        Of :class:`torch.optim.SGD`.
    seeds : sequence of int, default (0,)
        Each seed sets the initial weights (the same for every variant and
        batch size) and the order of the examples. A run depends only on its
        own (variant, batch size, seed), so any sub-sweep reproduces the
        corresponding entries of a larger one.
    num_threads : int or None, default 1
        torch threads while training (1: results independent of the machine's thread count).
    progress : bool, default False
        Show a progress bar over the runs.
    **net_options
        Passed to :func:`conv_net` (``channels``, ``hidden``, ``num_groups``).

    Returns
    -------
    SweepResult
    """
    data = as_tensors(mnist_images() if data is None else data)
    batch_sizes = np.array([int(b) for b in batch_sizes])
    seeds = np.array([int(s) for s in seeds])
    n_train = len(data["x_train"])
    if not batch_sizes.size or batch_sizes.min() < 2 or batch_sizes.max() > n_train:
        raise ValueError(f"batch sizes must lie in [2, {n_train}] (got {batch_sizes.tolist()})")
    if not seeds.size or len(set(seeds.tolist())) != seeds.size:
        raise ValueError(f"seeds must be a non-empty sequence of distinct ints (got {seeds.tolist()})")
    for v in variants:
        if v not in VARIANTS:
            raise ValueError(f"variant must be one of {tuple(VARIANTS)} (got {v!r})")
    if examples < 1:
        raise ValueError(f"examples must be positive (got {examples})")
    steps = np.maximum(examples // batch_sizes, 1)
    rates = lr * batch_sizes / reference_batch_size
    result = SweepResult(seeds=seeds, batch_sizes=batch_sizes, steps=steps, lr=rates, config={
        "variants": list(variants), "examples": int(examples), "lr": float(lr),
        "reference_batch_size": int(reference_batch_size), "momentum": float(momentum),
        "seeds": seeds.tolist(), "net": dict(net_options), "n_train": int(n_train),
        "n_test": int(len(data["x_test"])), "torch": torch.__version__.split("+")[0]})
    shape = (len(seeds), len(batch_sizes))
    for v in variants:
        for name in ("test_accuracy", "train_loss", "seconds"):
            getattr(result, name)[v] = np.zeros(shape)
        result.weight_change[v] = np.zeros(shape + (len(WATCHED_LAYERS),))
        if _has_batch_norm(v):
            result.batch_stats_accuracy[v] = np.zeros(shape)
            result.precise_accuracy[v] = np.zeros(shape)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=len(variants) * int(np.prod(shape)), desc="small-batch sweep", unit="run")
    try:
        for j, seed in enumerate(seeds.tolist()):
            for v in variants:
                for i, (b, s, rate) in enumerate(zip(batch_sizes.tolist(), steps.tolist(), rates.tolist())):
                    _one_run(result, data, v, j, i, seed, b, s, rate, momentum, num_threads, net_options)
                    if bar is not None:
                        bar.set_postfix_str(f"{v} B={b} seed={seed}: "
                                            f"{result.test_accuracy[v][j, i]:.3f}", refresh=False)
                        bar.update(1)
    finally:
        if bar is not None:
            bar.close()
    return result


def _one_run(result: SweepResult, data, variant: str, j: int, i: int, seed: int, batch_size: int,
             steps: int, lr: float, momentum: float, num_threads, net_options) -> None:
    """Train and measure run (variant, seed j, batch size i); write its entries of ``result``."""
    model = variant_net(variant, seed=seed, **net_options)
    start_weights = [getattr(model, name).weight.detach().clone() for name in WATCHED_LAYERS]
    start = time.perf_counter()
    history = train(model, data, steps, batch_size=batch_size, lr=lr, seed=seed, momentum=momentum,
                    eval_every=max(1, steps // 4), record_every=0, num_threads=num_threads)
    result.seconds[variant][j, i] = time.perf_counter() - start
    result.test_accuracy[variant][j, i] = history.test_accuracy[-1]
    result.train_loss[variant][j, i] = history.train_loss[-1]
    for k, (name, w0) in enumerate(zip(WATCHED_LAYERS, start_weights)):
        w = getattr(model, name).weight.detach()
        result.weight_change[variant][j, i, k] = float((w - w0).norm() / w0.norm())
    if _has_batch_norm(variant):
        with _threads(num_threads):
            result.batch_stats_accuracy[variant][j, i] = batch_statistics_accuracy(
                model, data["x_test"], data["y_test"], batch_size, seed)
            result.precise_accuracy[variant][j, i] = precise_accuracy(
                model, data["x_train"], data["x_test"], data["y_test"], batch_size, seed)


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


def merge_sweeps(parts: Sequence[SweepResult]) -> SweepResult:
    """One result from sweeps that differ only in their seeds (e.g. run as separate processes).

    Every run depends only on its own (variant, batch size, seed), so the
    merge equals the sweep over all the seeds at once. The seeds are
    concatenated in the order of ``parts``.

    Raises
    ------
    ValueError
        When the parts differ in anything but their seeds (and the command that
        produced them), or share a seed.
    """
    parts = list(parts)
    if not parts:
        raise ValueError("merge_sweeps needs at least one result")

    def setting(r):
        c = {k: v for k, v in r.config.items() if k not in ("seeds", "command")}
        return c, r.batch_sizes.tolist(), r.variants, {n: tuple(getattr(r, n)) for n in _PER_VARIANT}

    first = setting(parts[0])
    for r in parts[1:]:
        if setting(r) != first:
            raise ValueError("the results differ in more than their seeds: cannot merge them")
    seeds = np.concatenate([r.seeds for r in parts])
    if len(set(seeds.tolist())) != len(seeds):
        raise ValueError(f"the results share seeds ({seeds.tolist()}): cannot merge them")
    out = SweepResult(seeds=seeds, batch_sizes=parts[0].batch_sizes.copy(), steps=parts[0].steps.copy(),
                      lr=parts[0].lr.copy(), config=copy.deepcopy(parts[0].config))
    out.config["seeds"] = seeds.tolist()
    commands = [r.config.get("command") for r in parts]
    if any(commands):
        out.config["parts"] = commands
        out.config.pop("command", None)
    for name in _PER_VARIANT:
        for v in getattr(parts[0], name):
            getattr(out, name)[v] = np.concatenate([getattr(r, name)[v] for r in parts])
    return out


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
def configure(parser: argparse.ArgumentParser) -> None:
    """Options of the sweep's command; every default is :func:`batch_size_sweep`'s."""
    d = defaults(batch_size_sweep)
    parser.add_argument("--output", required=True, help="the result file (.json)")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4],
                        help="one network per seed (default: 0 1 2 3 4, the book's five)")
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS),
                        help="default: all of them")
    parser.add_argument("--batch-sizes", type=int, nargs="+", default=list(d["batch_sizes"]))
    parser.add_argument("--examples", type=int, default=d["examples"])
    parser.add_argument("--lr", type=float, default=d["lr"])
    parser.add_argument("--reference-batch-size", type=int, default=d["reference_batch_size"])
    parser.add_argument("--momentum", type=float, default=d["momentum"])
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--merge", nargs="+", metavar="PART",
                        help="instead of running: merge result files that differ only in their seeds "
                             "(e.g. written by parallel processes) into --output")


def run(args: argparse.Namespace, prog: str = "python -m bnkit.experiments") -> int:
    """Run the sweep (or merge parts of it) as ``args`` say; save it as JSON.

    The saved ``config["command"]`` is the command line that produced the file.
    """
    if not args.output.endswith(".json"):
        raise SystemExit(f"error: --output must end in .json (got {args.output!r})")
    command = prog + " " + " ".join(shlex.quote(a) for a in getattr(args, "argv", sys.argv[1:]))
    if args.merge:
        result = merge_sweeps([SweepResult.load(p) for p in args.merge])
        result.config["command"] = command
        print(f"wrote {result.save(args.output)} (seeds {result.seeds.tolist()})")
        return 0
    result = batch_size_sweep(None, args.batch_sizes, args.variants, examples=args.examples, lr=args.lr,
                              reference_batch_size=args.reference_batch_size, momentum=args.momentum,
                              seeds=args.seeds, progress=not args.no_progress)
    result.config["command"] = command
    path = result.save(args.output)
    print(f"wrote {path}")
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m bnkit.experiments.small_batch``: the same command as ``small-batch`` of the CLI."""
    prog = "python -m bnkit.experiments.small_batch"
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Chapter 7's sweep: test accuracy of the conv net's normalization variants "
                    "against batch size, over several seeds, on the embedded MNIST subset.")
    configure(parser)
    argv = sys.argv[1:] if argv is None else list(argv)
    args = parser.parse_args(argv)
    args.argv = argv
    return run(args, prog)


if __name__ == "__main__":
    raise SystemExit(main())
