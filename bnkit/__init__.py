"""bnkit: batch normalization, exactly.

Two implementations with PyTorch's semantics, plus what the book's chapters need:

* :mod:`bnkit.numpy` -- NumPy, float16, float32 and float64 (sums in float32 or wider,
  the output in the input's dtype), any rank >= 2, any channel axis.
* :mod:`bnkit.torch` -- torch, any device, its own :class:`torch.autograd.Function`.
* :mod:`bnkit.plotting` -- the book's figure style.

``import bnkit`` imports neither NumPy-heavy nor torch code: import the
submodule you need (``import bnkit.numpy as bnp``; ``import bnkit.torch as bnt``).
"""

__version__ = "0.1.0"
__all__ = ["__version__"]
