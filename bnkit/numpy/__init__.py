"""Batch normalization in NumPy, with PyTorch's semantics.

Pure functions (:func:`batch_norm`, :func:`batch_norm_backward`, ...) and a
thin stateful layer over them (:class:`BatchNorm`); layer norm and group norm
the same way (:mod:`bnkit.numpy.norms`). Any rank >= 2, channels on axis 1
(PyTorch) or last (``channel_axis=-1``, Keras), any floating dtype.

**Dtype policy.** float16, float32 and float64 inputs (NumPy has no bfloat16):

* *What comes out*: ``y`` and ``grad_x`` have the input's dtype.
* *What the statistics are accumulated in*: each cache-sized block is computed
  in the input's dtype, but at least float32 (a float16 block is promoted to
  float32, like torch's "opmath" type); the per-channel partial sums of the
  blocks are added in float64, and the mean, variance, scale and shift are
  float64. A float16 channel whose sum or sum of squares passes float16's
  largest value, 65504, therefore does not overflow; the result is rounded to
  float16 once, at the end. Layer norm and group norm compute in float64.
* *What the running statistics are stored in*: the layer's ``dtype`` (default
  float64), updated in place from the float64 batch statistics (rounded once);
  :meth:`BatchNorm.load_state_dict` keeps that dtype whatever the loaded
  arrays' dtype. The functions update the arrays they are given in their own dtype.
* *Parameters and their gradients*: the layer's ``dtype``. The functions
  return ``grad_weight`` and ``grad_bias`` in the dtype of ``weight`` (of the
  input without one), as torch gives a gradient its parameter's dtype.

torch lets a float16 or bfloat16 input through a float32 layer (what autocast
produces) and otherwise wants one dtype; bnkit.numpy accepts any pairing, e.g.
a float32 input through the default float64 layer gives float32.
"""

from .functional import (
    batch_norm,
    batch_norm_backward,
    batch_norm_eval_backward,
    batch_norm_training,
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
    "batch_norm_training",
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
