r"""The paper's multilayer perceptron, with batch norm optional per layer.

Ioffe & Szegedy (2015), Section 4.1: a 784-100-100-100-10 network of sigmoid
units, weights drawn from a small Gaussian, softmax cross-entropy on top.
Each hidden layer :math:`\ell` here is a :class:`Block`:

.. math::

    u = W_\ell h_{\ell-1} + b_\ell, \qquad
    z = \mathrm{post\_norm}(\mathrm{BN}(u)), \qquad
    h_\ell = g(z)

with ``bn_position="before"`` (the paper's choice: BN on the pre-activation
``u``, then the nonlinearity ``g``), or

.. math::

    u = W_\ell h_{\ell-1} + b_\ell, \qquad z = u, \qquad
    h_\ell = \mathrm{post\_norm}(\mathrm{BN}(g(z)))

with ``bn_position="after"``. Either way ``z`` is *the input to the
nonlinearity* -- the quantity whose distribution Figure 1 of the paper tracks.
``post_norm`` is an identity by default: a hook point where an experiment can
insert a module (e.g. Santurkar et al.'s noise after BN) without rebuilding
the network.

Shapes: input ``(N, sizes[0])``, logits ``(N, sizes[-1])``; block
:math:`\ell` (0-based) maps ``(N, sizes[l])`` to ``(N, sizes[l+1])``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Union

import torch
from torch import nn

from ..torch import BatchNorm1d

__all__ = ["MLP", "Block", "Trace", "mlp", "ACTIVATIONS"]

#: Nonlinearities by name.
ACTIVATIONS: Dict[str, Callable[[], nn.Module]] = {
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "relu": nn.ReLU,
    "identity": nn.Identity,
}


def _make_activation(activation: Union[str, Callable[[], nn.Module]]) -> nn.Module:
    if isinstance(activation, str):
        if activation not in ACTIVATIONS:
            raise ValueError(f"activation must be one of {tuple(ACTIVATIONS)} or a callable, got {activation!r}")
        return ACTIVATIONS[activation]()
    return activation()


@dataclass
class Trace:
    """What one forward pass computed, per hidden block (lists indexed by block).

    Attributes (each a list of tensors of shape ``(N, width)``):

    ``linear``
        :math:`u = W h + b`, the affine output.
    ``pre_activation``
        :math:`z`, the input to the nonlinearity (after BN and ``post_norm``
        when ``bn_position="before"``; equal to ``linear`` when ``"after"``).
    ``hidden``
        The block's output :math:`h` (after the nonlinearity, and after BN
        when ``bn_position="after"``).

    ``logits`` is the network output ``(N, sizes[-1])``.
    """

    linear: List[torch.Tensor] = field(default_factory=list)
    pre_activation: List[torch.Tensor] = field(default_factory=list)
    hidden: List[torch.Tensor] = field(default_factory=list)
    logits: Optional[torch.Tensor] = None


class Block(nn.Module):
    """One hidden layer: ``linear`` -> [``norm`` -> ``post_norm``] -> ``activation`` (or BN after it).

    Attributes
    ----------
    linear : nn.Linear
    norm : BatchNorm1d or nn.Identity
    post_norm : nn.Module
        Identity by default; replace it (``block.post_norm = MyNoise()``) to
        act on BN's output, e.g. to add noise.
    activation : nn.Module
    bn_position : "before" or "after"
    """

    def __init__(self, in_features: int, out_features: int, batch_norm: bool, activation,
                 bn_position: str = "before", bias: bool = True, bn_momentum: Optional[float] = 0.1,
                 bn_eps: float = 1e-5, post_norm: Optional[nn.Module] = None):
        super().__init__()
        if bn_position not in ("before", "after"):
            raise ValueError(f"bn_position must be 'before' or 'after', got {bn_position!r}")
        self.bn_position = bn_position
        self.linear = nn.Linear(in_features, out_features, bias=bias)
        self.norm = BatchNorm1d(out_features, eps=bn_eps, momentum=bn_momentum) if batch_norm else nn.Identity()
        self.post_norm = post_norm if post_norm is not None else nn.Identity()
        self.activation = _make_activation(activation)

    @property
    def has_batch_norm(self) -> bool:
        return isinstance(self.norm, BatchNorm1d)

    def forward(self, x: torch.Tensor, trace: Optional[Trace] = None) -> torch.Tensor:
        u = self.linear(x)
        if self.bn_position == "before":
            z = self.post_norm(self.norm(u))
            h = self.activation(z)
        else:
            z = u
            h = self.post_norm(self.norm(self.activation(z)))
        if trace is not None:
            trace.linear.append(u)
            trace.pre_activation.append(z)
            trace.hidden.append(h)
        return h


class MLP(nn.Module):
    """A stack of :class:`Block` s and a linear output layer ``head``.

    Build it with :func:`mlp`. ``forward(x)`` returns the logits;
    ``trace(x)`` also returns every block's intermediate tensors
    (:class:`Trace`); ``pre_activation(x, layer, unit)`` is the input to one
    chosen nonlinearity, shape ``(N,)``.
    """

    def __init__(self, blocks: Sequence[Block], head: nn.Linear, config: Optional[dict] = None):
        super().__init__()
        self.blocks = nn.ModuleList(blocks)
        self.head = head
        #: The arguments :func:`mlp` was called with (JSON-serialisable).
        self.config = dict(config or {})

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for block in self.blocks:
            x = block(x)
        return self.head(x)

    def trace(self, x: torch.Tensor) -> Trace:
        """Forward pass that keeps every block's ``linear``, ``pre_activation`` and ``hidden``."""
        t = Trace()
        for block in self.blocks:
            x = block(x, t)
        t.logits = self.head(x)
        return t

    def pre_activation(self, x: torch.Tensor, layer: int = -1, unit: int = 0) -> torch.Tensor:
        """Input to the nonlinearity of ``unit`` in hidden ``layer`` (negative counts from the end), shape ``(N,)``."""
        return self.trace(x).pre_activation[layer][:, unit]

    def batch_norms(self) -> List[Optional[BatchNorm1d]]:
        """Each block's BN layer, or None where the block has none."""
        return [b.norm if b.has_batch_norm else None for b in self.blocks]

    @property
    def num_hidden(self) -> int:
        return len(self.blocks)


def mlp(
    sizes: Sequence[int] = (784, 100, 100, 100, 10),
    batch_norm: Union[bool, Sequence[bool]] = False,
    activation: Union[str, Callable[[], nn.Module]] = "sigmoid",
    init_std: float = 0.1,
    bn_position: str = "before",
    bias: Optional[bool] = None,
    bn_momentum: Optional[float] = 0.1,
    bn_eps: float = 1e-5,
    post_norm: Optional[Callable[[int, int], nn.Module]] = None,
    seed: Optional[int] = 0,
    head_init_std: Optional[float] = None,
) -> MLP:
    r"""The paper's MLP: ``len(sizes) - 2`` hidden blocks and a linear output layer.

    Parameters
    ----------
    sizes : widths, input first, classes last. Default 784-100-100-100-10.
    batch_norm : bool, or one bool per hidden block: which blocks get a
        :class:`bnkit.torch.BatchNorm1d` (never the output layer).
    activation : ``"sigmoid"`` (the paper), ``"tanh"``, ``"relu"``,
        ``"identity"``, or a zero-argument callable returning a module.
    init_std : standard deviation :math:`s` of the Gaussian weights,
        :math:`W_{ij} \sim \mathcal{N}(0, s^2)`, of every linear layer
        (the output layer too). Biases start at 0; BN at :math:`\gamma = 1,
        \beta = 0`.
    bn_position : ``"before"`` the nonlinearity (the paper) or ``"after"`` it.
    bias : whether hidden linear layers have a bias. Default: no bias in a
        block whose BN comes before the nonlinearity (BN's :math:`\beta`
        replaces it: subtracting the batch mean cancels any bias), a bias
        everywhere else. The output layer always has one.
    bn_momentum, bn_eps : passed to each BatchNorm1d.
    post_norm : optional factory ``post_norm(layer_index, width) -> nn.Module``
        for the hook after each block's BN (or after each pre-activation in
        a block without BN); default identity.
    seed : seeds a private ``torch.Generator`` for the initial weights, so
        the same seed gives the same network without touching torch's global
        RNG. ``None`` uses the global RNG.
    head_init_std : standard deviation of the output layer's weights
        instead of ``init_std`` (None: ``init_std``). The hidden layers'
        weights are the same draw either way, and the output layer's are that
        draw rescaled, so two networks that differ only here differ only in
        the scale of the output layer.

    Returns
    -------
    MLP
    """
    sizes = [int(s) for s in sizes]
    if len(sizes) < 2:
        raise ValueError(f"sizes needs at least an input and an output width, got {sizes}")
    n_hidden = len(sizes) - 2
    if isinstance(batch_norm, bool):
        bn_flags = [batch_norm] * n_hidden
    else:
        bn_flags = [bool(b) for b in batch_norm]
        if len(bn_flags) != n_hidden:
            raise ValueError(f"batch_norm has {len(bn_flags)} flags for {n_hidden} hidden blocks")
    if not init_std > 0:
        raise ValueError(f"init_std must be positive, got {init_std}")
    if head_init_std is not None and not head_init_std > 0:
        raise ValueError(f"head_init_std must be positive or None, got {head_init_std}")
    generator = None
    if seed is not None:
        generator = torch.Generator().manual_seed(int(seed))

    # nn.Linear draws its default init from the global RNG; with a seed, leave that RNG as it was
    with torch.random.fork_rng(devices=[], enabled=seed is not None):
        blocks = []
        for i, (n_in, n_out, use_bn) in enumerate(zip(sizes[:-2], sizes[1:-1], bn_flags)):
            block_bias = (not (use_bn and bn_position == "before")) if bias is None else bool(bias)
            hook = post_norm(i, n_out) if post_norm is not None else None
            blocks.append(Block(n_in, n_out, use_bn, activation, bn_position, block_bias,
                                bn_momentum, bn_eps, hook))
        head = nn.Linear(sizes[-2], sizes[-1])
    stds = [init_std] * len(blocks) + [init_std if head_init_std is None else head_init_std]
    for lin, std in zip([b.linear for b in blocks] + [head], stds):
        with torch.no_grad():
            lin.weight.normal_(0.0, std, generator=generator)
            if lin.bias is not None:
                lin.bias.zero_()
    config = {
        "sizes": sizes, "batch_norm": bn_flags, "activation": activation if isinstance(activation, str) else repr(activation),
        "init_std": float(init_std), "bn_position": bn_position, "bias": bias, "bn_momentum": bn_momentum,
        "bn_eps": bn_eps, "seed": seed,
    }
    if head_init_std is not None:  # only then, so the configs of earlier runs stay as they were
        config["head_init_std"] = float(head_init_std)
    return MLP(blocks, head, config)
