"""Batch normalization in torch with its own autograd, any device.

:func:`batch_norm` mirrors :func:`torch.nn.functional.batch_norm`;
:class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` mirror
``torch.nn.BatchNorm*d`` (same parameters, buffers and state-dict keys).
Forward and backward are written out; torch's batch-norm kernels are never called.
"""

from .functional import BatchNormFunction, batch_norm, check_input
from .inference import fold_batch_norm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .precise import recompute_batch_norm_stats

__all__ = [
    "batch_norm",
    "check_input",
    "BatchNormFunction",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "fold_batch_norm",
    "recompute_batch_norm_stats",
]
