"""Replace the batch-norm layers of a model by others, carrying their state over.

The machinery behind :meth:`bnkit.torch.sync.SyncBatchNorm.convert_sync_batchnorm`
(and :func:`bnkit.torch.sync.convert_sync_batchnorm`): walk the module tree, and for
every batch-norm layer build its replacement and hand it the old layer's
parameters and buffers -- the same tensors, so an optimizer built earlier still
updates them -- and its train/eval mode.
"""

from __future__ import annotations

from typing import Callable, Tuple, Type

from torch import nn

from .modules import BatchNormBase

__all__ = ["BATCH_NORMS", "replace_batch_norms"]

#: The layers :func:`replace_batch_norms` replaces: bnkit's and torch's batch norms.
BATCH_NORMS: Tuple[type, ...] = (BatchNormBase, nn.modules.batchnorm._BatchNorm)

_STATE = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")


def replace_batch_norms(module: nn.Module, make_layer: Callable[[nn.Module], nn.Module],
                        keep: Type[nn.Module]) -> nn.Module:
    """Replace, in place, every batch-norm layer of ``module`` that is not a ``keep``.

    Parameters
    ----------
    module : nn.Module
    make_layer : callable
        ``make_layer(old)`` returns the new layer with ``old``'s configuration
        (its tensors may be placeholders, e.g. on the ``meta`` device): they
        are replaced by ``old``'s parameters and buffers.
    keep : type
        Layers of this class are left as they are (already converted).

    Returns
    -------
    nn.Module
        ``module`` with its batch-norm descendants replaced, or the new layer
        when ``module`` itself is one.

    Raises
    ------
    ValueError
        A lazy batch norm (``nn.LazyBatchNorm2d``) that has not yet seen an input.
    """
    if isinstance(module, BATCH_NORMS) and not isinstance(module, keep):
        for name in ("weight", "running_mean"):
            t = getattr(module, name, None)
            if t is not None and nn.parameter.is_lazy(t):
                raise ValueError(f"{type(module).__name__} is not initialized yet (lazy); "
                                 "run one forward pass before converting it")
        new = make_layer(module)
        for name in ("weight", "bias"):
            setattr(new, name, getattr(module, name))
        for name in _STATE[2:]:
            new.register_buffer(name, getattr(module, name))
        new.train(module.training)
        if hasattr(module, "qconfig"):
            new.qconfig = module.qconfig
        return new
    for name, child in module.named_children():
        module.add_module(name, replace_batch_norms(child, make_layer, keep))
    return module
