"""Batch normalization in torch with its own autograd, any device.

:func:`batch_norm` mirrors :func:`torch.nn.functional.batch_norm`;
:class:`BatchNorm1d`, :class:`BatchNorm2d`, :class:`BatchNorm3d` mirror
``torch.nn.BatchNorm*d`` of torch 2.13 (same constructor, parameters, buffers,
state-dict keys and version, empty batches and mixed-precision dtypes);
:class:`~bnkit.torch.sync.SyncBatchNorm` mirrors ``torch.nn.SyncBatchNorm``. Forward and backward
are written out, once, in :mod:`bnkit.torch.kernels`; torch's batch-norm kernels
are never called. The layers run under :func:`torch.compile` without graph breaks.
"""

from .functional import BatchNormFunction, batch_norm, check_input
from .inference import fold_batch_norm
from .modules import BatchNorm1d, BatchNorm2d, BatchNorm3d
from .norms import GroupNorm, GroupNormFunction, LayerNorm, LayerNormFunction, group_norm, layer_norm
from .precise import recompute_batch_norm_stats
from .distributed import run_processes
from .sync import SyncBatchNorm, convert_sync_batchnorm

__all__ = [
    "batch_norm",
    "check_input",
    "BatchNormFunction",
    "BatchNorm1d",
    "BatchNorm2d",
    "BatchNorm3d",
    "fold_batch_norm",
    "recompute_batch_norm_stats",
    "SyncBatchNorm",
    "convert_sync_batchnorm",
    "run_processes",
    "layer_norm",
    "group_norm",
    "LayerNormFunction",
    "GroupNormFunction",
    "LayerNorm",
    "GroupNorm",
]
