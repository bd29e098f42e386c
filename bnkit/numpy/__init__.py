"""Batch normalization in NumPy, with PyTorch's semantics.

Pure functions (:func:`batch_norm`, :func:`batch_norm_backward`, ...) and a
thin stateful layer over them (:class:`BatchNorm`). Float32 and float64, any
rank >= 2, channels on axis 1 (PyTorch) or last (``channel_axis=-1``, Keras).
"""

from .functional import (
    batch_norm,
    batch_norm_backward,
    batch_norm_eval_backward,
    batch_statistics,
    normalize,
    update_running_stats,
)
from .layers import BatchNorm
from .norms import GroupNorm, LayerNorm, group_norm, group_norm_backward, layer_norm, layer_norm_backward

__all__ = [
    "batch_norm",
    "batch_norm_backward",
    "batch_norm_eval_backward",
    "batch_statistics",
    "normalize",
    "update_running_stats",
    "BatchNorm",
    "layer_norm",
    "layer_norm_backward",
    "group_norm",
    "group_norm_backward",
    "LayerNorm",
    "GroupNorm",
]
