r"""Layer normalization and group normalization in NumPy, with PyTorch's semantics.

Batch norm computes its statistics per channel, over the batch. The two
normalizations here compute them per *example*, so an example's output never
depends on the other examples in the batch, and training and eval mode are the
same computation (there are no running statistics).

Both normalize the rows of a two-dimensional view of the input. For each row
:math:`r` holding :math:`M` values :math:`x_{r1}, \dots, x_{rM}`:

.. math::

    \mu_r = \frac{1}{M}\sum_j x_{rj}, \qquad
    \sigma^2_r = \frac{1}{M}\sum_j (x_{rj} - \mu_r)^2, \qquad
    \hat x_{rj} = \frac{x_{rj} - \mu_r}{\sqrt{\sigma^2_r + \varepsilon}} .

* **Layer norm** (Ba, Kiros & Hinton, 2016): a row is everything an example
  holds in the last :math:`k` axes, the ``normalized_shape``. For an image of
  shape (N, C, H, W) and ``normalized_shape=(C, H, W)`` there are :math:`N`
  rows of :math:`M = CHW` values. :math:`\gamma` and :math:`\beta` have shape
  ``normalized_shape`` (one per element).
* **Group norm** (Wu & He, 2018): the :math:`C` channels are split into
  :math:`G` groups of :math:`C/G` consecutive channels; a row is one group of
  one example: :math:`NG` rows of :math:`M = (C/G)HW` values. :math:`\gamma`
  and :math:`\beta` have shape (C,) (one per channel), as in batch norm.

With :math:`G = 1` group norm is layer norm over (C, H, W) (with per-channel
:math:`\gamma, \beta`); with :math:`G = C` it is instance norm (statistics per
example and channel, over (H, W)).

The backward pass, with :math:`g = \partial L/\partial y` and
:math:`\hat g = g\,\gamma` (``weight`` broadcast to the input's shape), is per row

.. math::

    \frac{\partial L}{\partial x_{rj}} = \frac{1}{\sqrt{\sigma^2_r + \varepsilon}}
    \Big(\hat g_{rj} - \frac{1}{M}\sum_k \hat g_{rk}
         - \hat x_{rj}\,\frac{1}{M}\sum_k \hat g_{rk}\hat x_{rk}\Big),

the same projection as batch norm's, along rows instead of channels; only
:math:`\gamma` now sits inside the sums, because it varies within a row.
:math:`\partial L/\partial \gamma = \sum g\,\hat x` and
:math:`\partial L/\partial \beta = \sum g`, summed over everything that shares
the parameter. Statistics and gradients are computed in float64 and returned
in the input's dtype (float32 stays float32).
"""

from __future__ import annotations

import math
import numbers
from typing import Dict, Sequence, Tuple, Union

import numpy as np

from .. import _checks
from .functional import _as_float_array
from .layers import _to_numpy

__all__ = [
    "layer_norm",
    "layer_norm_backward",
    "group_norm",
    "group_norm_backward",
    "LayerNorm",
    "GroupNorm",
]

ShapeLike = Union[int, Sequence[int]]


# ----------------------------------------------------------------------------- checks
# Pure Python on shapes, shared with bnkit.torch.norms so both raise the same errors.
def _as_normalized_shape(normalized_shape: ShapeLike) -> Tuple[int, ...]:
    """``normalized_shape`` as a tuple of positive ints (an int ``D`` is ``(D,)``)."""
    if isinstance(normalized_shape, numbers.Integral) and not isinstance(normalized_shape, bool):
        normalized_shape = (normalized_shape,)
    try:
        shape = tuple(normalized_shape)
    except TypeError:
        raise TypeError("normalized_shape must be an int or a sequence of ints "
                        f"(got {type(normalized_shape).__name__})") from None
    for d in shape:
        if not isinstance(d, numbers.Integral) or isinstance(d, bool):
            raise TypeError(f"normalized_shape must hold ints (got {shape!r})")
    if len(shape) == 0 or any(d <= 0 for d in shape):
        raise ValueError(f"normalized_shape must be a non-empty shape of positive sizes "
                         f"(got {shape!r})")
    return tuple(int(d) for d in shape)


def _check_layer_norm(input_shape: Sequence[int], normalized_shape: ShapeLike,
                      weight_shape=None, bias_shape=None, eps: float = 1e-5) -> Tuple[int, ...]:
    """Every argument check of layer norm, on shapes; returns ``normalized_shape`` as a tuple."""
    shape = _as_normalized_shape(normalized_shape)
    input_shape = tuple(input_shape)
    k = len(shape)
    if len(input_shape) < k or input_shape[len(input_shape) - k:] != shape:
        raise ValueError(f"normalized_shape={shape} must be the last {k} axes of the input: "
                         f"expected an input of shape (N, ..., {', '.join(map(str, shape))}), "
                         f"got {input_shape}")
    for name, s in (("weight", weight_shape), ("bias", bias_shape)):
        if s is not None and tuple(s) != shape:
            raise ValueError(f"{name} has shape {tuple(s)}, expected normalized_shape {shape}")
    _checks.check_eps(eps)
    return shape


def _check_num_groups(num_groups: int, num_channels: int) -> None:
    if not (isinstance(num_groups, numbers.Integral) and not isinstance(num_groups, bool)):
        raise TypeError(f"num_groups must be an int (got {type(num_groups).__name__})")
    if num_groups <= 0:
        raise ValueError(f"num_groups must be positive (got {num_groups})")
    if num_channels % num_groups:
        raise ValueError(f"num_channels ({num_channels}) must be divisible by "
                         f"num_groups ({num_groups})")


def _check_group_norm(input_shape: Sequence[int], num_groups: int, weight_shape=None,
                      bias_shape=None, eps: float = 1e-5) -> None:
    """Every argument check of group norm, on shapes."""
    input_shape = tuple(input_shape)
    _checks.check_input_rank(len(input_shape))
    num_channels = input_shape[1]
    _check_num_groups(num_groups, num_channels)
    _checks.check_channel_vector("weight", weight_shape, num_channels)
    _checks.check_channel_vector("bias", bias_shape, num_channels)
    _checks.check_eps(eps)


def _check_grad(grad_y, x) -> np.ndarray:
    grad_y = _as_float_array(grad_y, "grad_y")
    if grad_y.shape != x.shape:
        raise ValueError(f"grad_y has shape {grad_y.shape} but x has shape {x.shape}")
    return grad_y


def _shape_of(v):
    return None if v is None else np.shape(v)


# ----------------------------------------------------------------------------- row kernels
def _row_statistics(x2: np.ndarray, eps: float) -> Tuple[np.ndarray, np.ndarray]:
    """float64 mean and ``1/sqrt(var + eps)`` of every row of ``x2`` (shape (R, M)), shape (R, 1).

    Rows of no values (``M = 0``, an empty spatial axis) get mean 0 and
    ``invstd`` 1: they normalize nothing, and every sum over them is 0.
    """
    if x2.shape[1] == 0:
        return np.zeros((x2.shape[0], 1)), np.ones((x2.shape[0], 1))
    mean = x2.mean(axis=1, keepdims=True, dtype=np.float64)
    centered = x2 - mean                                        # float64
    var = np.einsum("rm,rm->r", centered, centered)[:, None] / x2.shape[1]
    return mean, 1.0 / np.sqrt(var + eps)


def _row_input_gradient(g_hat2: np.ndarray, xhat2: np.ndarray, invstd: np.ndarray) -> np.ndarray:
    """Per row: ``invstd * (g_hat - mean(g_hat) - xhat * mean(g_hat * xhat))`` (float64)."""
    m = g_hat2.shape[1]
    if m == 0:                                                  # rows of no values
        return np.zeros(g_hat2.shape)
    mean_g = g_hat2.sum(axis=1, keepdims=True) / m
    mean_gx = np.einsum("rm,rm->r", g_hat2, xhat2)[:, None] / m
    return invstd * (g_hat2 - mean_g - xhat2 * mean_gx)


# ----------------------------------------------------------------------------- layer norm
def layer_norm(x, normalized_shape: ShapeLike, weight=None, bias=None,
               eps: float = 1e-5) -> np.ndarray:
    r"""Layer normalization, the NumPy twin of :func:`torch.nn.functional.layer_norm`.

    Every example is normalized over its last :math:`k` axes (the
    ``normalized_shape``, :math:`M` values), with its own mean and biased variance:

    .. math::

        y = \frac{x - \mu}{\sqrt{\sigma^2 + \varepsilon}}\,\gamma + \beta, \qquad
        \mu = \frac{1}{M}\sum x, \quad \sigma^2 = \frac{1}{M}\sum (x - \mu)^2

    (sums over the normalized axes; :math:`\gamma, \beta` element-wise).

    Parameters
    ----------
    x : ndarray of shape (N, ..., D_1, ..., D_k)
        Floating-point input whose last :math:`k` axes are ``normalized_shape``.
    normalized_shape : int or tuple of ints (D_1, ..., D_k)
        The axes to normalize over, counted from the end. An int ``D`` means ``(D,)``.
    weight, bias : array_like of shape (D_1, ..., D_k), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.
    eps : float > 0, default 1e-5

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Raises
    ------
    TypeError
        ``x`` is not floating point, or ``normalized_shape`` is not made of ints.
    ValueError
        The last axes of ``x`` are not ``normalized_shape``, ``weight`` or
        ``bias`` has another shape, or ``eps <= 0``.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> x = np.array([[1.0, 3.0], [10.0, 30.0]])
    >>> bnp.layer_norm(x, 2, eps=1e-12).round(6)      # each row on its own
    array([[-1.,  1.],
           [-1.,  1.]])
    """
    x = _as_float_array(x)
    shape = _check_layer_norm(x.shape, normalized_shape, _shape_of(weight), _shape_of(bias), eps)
    m = math.prod(shape)
    x2 = x.reshape(-1, m)
    mean, invstd = _row_statistics(x2, eps)
    y = ((x2 - mean) * invstd).reshape(x.shape)
    if weight is not None:
        y *= np.asarray(weight, np.float64)
    if bias is not None:
        y += np.asarray(bias, np.float64)
    return y.astype(x.dtype, copy=False)


def layer_norm_backward(grad_y, x, normalized_shape: ShapeLike, weight=None,
                        eps: float = 1e-5):
    r"""Gradients of :func:`layer_norm`, in closed form.

    With :math:`\hat g = g\,\gamma` and the :math:`M` values of an example's
    normalized axes (its row),

    .. math::

        \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2 + \varepsilon}}
        \Big(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g \hat x}\Big), \qquad
        \frac{\partial L}{\partial \gamma} = \sum_{\text{examples}} g\,\hat x, \qquad
        \frac{\partial L}{\partial \beta} = \sum_{\text{examples}} g,

    where the bars are means over the row and the last two sums run over every
    leading axis (the examples), leaving the shape ``normalized_shape``.

    Parameters
    ----------
    grad_y : ndarray, same shape as ``x``
        :math:`\partial L/\partial y`.
    x : ndarray of shape (N, ..., D_1, ..., D_k)
        The forward input.
    normalized_shape : int or tuple of ints (D_1, ..., D_k)
    weight : array_like of shape (D_1, ..., D_k), optional
        :math:`\gamma` (``None`` means 1).
    eps : float > 0, default 1e-5

    Returns
    -------
    grad_x : ndarray, same shape and dtype as ``x``
    grad_weight, grad_bias : ndarray of shape (D_1, ..., D_k), dtype of ``x``
        Returned even when ``weight`` is ``None``.
    """
    x = _as_float_array(x)
    grad_y = _check_grad(grad_y, x)
    shape = _check_layer_norm(x.shape, normalized_shape, _shape_of(weight), None, eps)
    m = math.prod(shape)
    x2 = x.reshape(-1, m)
    g2 = grad_y.reshape(-1, m).astype(np.float64)
    mean, invstd = _row_statistics(x2, eps)
    xhat2 = (x2 - mean) * invstd
    g_hat2 = g2 if weight is None else g2 * np.asarray(weight, np.float64).reshape(1, m)
    grad_x = _row_input_gradient(g_hat2, xhat2, invstd).reshape(x.shape)
    grad_weight = np.einsum("rm,rm->m", g2, xhat2).reshape(shape)
    grad_bias = g2.sum(axis=0).reshape(shape)
    return (grad_x.astype(x.dtype, copy=False), grad_weight.astype(x.dtype),
            grad_bias.astype(x.dtype))


# ----------------------------------------------------------------------------- group norm
def _group_view(x: np.ndarray) -> np.ndarray:
    """``x`` of shape (N, C, ...) as (N, C, S), S the product of the spatial axes."""
    return x.reshape(x.shape[0], x.shape[1], math.prod(x.shape[2:]))


def _group_rows(x3: np.ndarray, num_groups: int) -> np.ndarray:
    """An (N, C, S) array as (N G, (C/G) S): one row per example and group (sizes explicit,
    so an empty batch reshapes too)."""
    n, c, size = x3.shape
    return x3.reshape(n * num_groups, (c // num_groups) * size)


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5) -> np.ndarray:
    r"""Group normalization, the NumPy twin of :func:`torch.nn.functional.group_norm`.

    The :math:`C` channels form :math:`G` groups of :math:`C/G` consecutive
    channels. Each example's group is normalized with its own mean and biased
    variance over :math:`M = (C/G)\,S` values (:math:`S` = product of the
    spatial sizes, e.g. :math:`HW`); then every channel :math:`c` is scaled
    and shifted:

    .. math::

        y_{ncs} = \frac{x_{ncs} - \mu_{ng}}{\sqrt{\sigma^2_{ng} + \varepsilon}}\,\gamma_c
        + \beta_c, \qquad g = \text{the group of } c .

    ``num_groups=1`` gives layer norm over (C, H, W) with per-channel
    :math:`\gamma, \beta`; ``num_groups=C`` gives instance norm.

    Parameters
    ----------
    x : ndarray of shape (N, C, ...)
        Floating-point input of rank >= 2, channels on axis 1.
    num_groups : int
        :math:`G`, a divisor of :math:`C`.
    weight, bias : array_like of shape (C,), optional
        :math:`\gamma` and :math:`\beta`; ``None`` means 1 and 0.
    eps : float > 0, default 1e-5

    Returns
    -------
    y : ndarray, same shape and dtype as ``x``

    Raises
    ------
    TypeError
        ``x`` is not floating point, or ``num_groups`` is not an int.
    ValueError
        Rank < 2, :math:`C` not divisible by ``num_groups``, ``weight`` or
        ``bias`` not of shape (C,), or ``eps <= 0``.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> x = np.array([[1.0, 3.0, 10.0, 30.0]])        # one example, C = 4
    >>> bnp.group_norm(x, 2, eps=1e-12).round(6)      # groups {0, 1} and {2, 3}
    array([[-1.,  1., -1.,  1.]])
    """
    x = _as_float_array(x)
    _check_group_norm(x.shape, num_groups, _shape_of(weight), _shape_of(bias), eps)
    c = x.shape[1]
    x3 = _group_view(x)
    x2 = _group_rows(x3, num_groups)
    mean, invstd = _row_statistics(x2, eps)
    y3 = ((x2 - mean) * invstd).reshape(x3.shape)
    if weight is not None:
        y3 *= np.asarray(weight, np.float64).reshape(1, c, 1)
    if bias is not None:
        y3 += np.asarray(bias, np.float64).reshape(1, c, 1)
    return y3.reshape(x.shape).astype(x.dtype, copy=False)


def group_norm_backward(grad_y, x, num_groups: int, weight=None, eps: float = 1e-5):
    r"""Gradients of :func:`group_norm`, in closed form.

    With :math:`\hat g_{ncs} = g_{ncs}\gamma_c` and the :math:`M = (C/G)\,S`
    values of group :math:`g` of example :math:`n` (its row):

    .. math::

        \frac{\partial L}{\partial x} = \frac{1}{\sqrt{\sigma^2_{ng} + \varepsilon}}
        \Big(\hat g - \overline{\hat g} - \hat x\,\overline{\hat g \hat x}\Big), \qquad
        \frac{\partial L}{\partial \gamma_c} = \sum_{n,s} g_{ncs}\hat x_{ncs}, \qquad
        \frac{\partial L}{\partial \beta_c} = \sum_{n,s} g_{ncs},

    the bars being means over the row.

    Parameters
    ----------
    grad_y : ndarray, same shape as ``x``
        :math:`\partial L/\partial y`.
    x : ndarray of shape (N, C, ...)
        The forward input.
    num_groups : int
    weight : array_like of shape (C,), optional
        :math:`\gamma` (``None`` means 1).
    eps : float > 0, default 1e-5

    Returns
    -------
    grad_x : ndarray, same shape and dtype as ``x``
    grad_weight, grad_bias : ndarray of shape (C,), dtype of ``x``
        Returned even when ``weight`` is ``None``.
    """
    x = _as_float_array(x)
    grad_y = _check_grad(grad_y, x)
    _check_group_norm(x.shape, num_groups, _shape_of(weight), None, eps)
    c = x.shape[1]
    x3 = _group_view(x)
    g3 = _group_view(grad_y).astype(np.float64)
    x2 = _group_rows(x3, num_groups)
    mean, invstd = _row_statistics(x2, eps)
    xhat3 = ((x2 - mean) * invstd).reshape(x3.shape)
    g_hat3 = g3 if weight is None else g3 * np.asarray(weight, np.float64).reshape(1, c, 1)
    grad_x = _row_input_gradient(_group_rows(g_hat3, num_groups),
                                 _group_rows(xhat3, num_groups), invstd)
    grad_weight = np.einsum("ncs,ncs->c", g3, xhat3)
    grad_bias = g3.sum(axis=(0, 2))
    return (grad_x.reshape(x.shape).astype(x.dtype, copy=False), grad_weight.astype(x.dtype),
            grad_bias.astype(x.dtype))


# ----------------------------------------------------------------------------- layers
class _PerExampleNorm:
    """Shared parts of :class:`LayerNorm` and :class:`GroupNorm`: modes, state dict, backward cache."""

    _param_shape: Tuple[int, ...] = ()

    def __init__(self, affine: bool, bias: bool, dtype):
        self.training = True
        self.weight = np.ones(self._param_shape, dtype) if affine else None
        self.bias = np.zeros(self._param_shape, dtype) if affine and bias else None
        self.grad_weight = None
        self.grad_bias = None
        self._cache = None

    def train(self, mode: bool = True):
        """Set training mode (``mode=True``) or eval mode; returns ``self``.

        The mode changes nothing in the computation (there are no batch or
        running statistics); it is kept so the layer can stand in for
        :class:`bnkit.numpy.BatchNorm`.
        """
        self.training = bool(mode)
        return self

    def eval(self):
        """Set eval mode (the same computation as training mode); returns ``self``."""
        return self.train(False)

    def forward(self, x) -> np.ndarray:
        """Normalize ``x``; see the class docstring for the axes."""
        x = _as_float_array(x)
        y = self._forward(x)
        self._cache = x
        return y

    def __call__(self, x) -> np.ndarray:
        return self.forward(x)

    def backward(self, grad_y) -> np.ndarray:
        r"""Back-propagate :math:`\partial L/\partial y` through the last :meth:`forward`.

        Returns :math:`\partial L/\partial x`; stores ``grad_weight`` and
        ``grad_bias`` (``None`` for a parameter the layer does not have).
        """
        if self._cache is None:
            raise RuntimeError("backward() called before forward()")
        gx, gw, gb = self._backward(grad_y, self._cache)
        self.grad_weight = gw if self.weight is not None else None
        self.grad_bias = gb if self.bias is not None else None
        return gx

    def state_dict(self) -> Dict[str, np.ndarray]:
        """Copies of the parameters, under PyTorch's keys (``weight``, ``bias``)."""
        state = {}
        if self.weight is not None:
            state["weight"] = self.weight.copy()
        if self.bias is not None:
            state["bias"] = self.bias.copy()
        return state

    def load_state_dict(self, state_dict) -> None:
        """Load a state dict (NumPy arrays or torch tensors), checking keys and shapes.

        The keys must be exactly those :meth:`state_dict` gives, so the state
        dict of the matching torch module fits. Nothing changes if a check fails.
        """
        expected, got = set(self.state_dict()), set(state_dict)
        if got != expected:
            raise KeyError(f"state dict keys do not match: missing {sorted(expected - got)}, "
                           f"unexpected {sorted(got - expected)}")
        arrays = {k: np.array(_to_numpy(v), copy=True) for k, v in state_dict.items()}
        for k, v in arrays.items():
            if v.shape != self._param_shape:
                raise ValueError(f"{k} has shape {v.shape}, expected {self._param_shape}")
        for k, v in arrays.items():
            setattr(self, k, v.astype(getattr(self, k).dtype))


class LayerNorm(_PerExampleNorm):
    r"""Layer normalization layer in NumPy, with the semantics of :class:`torch.nn.LayerNorm`.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    with the mean and biased variance taken per example over the last
    ``len(normalized_shape)`` axes. The same in training and eval mode. A thin
    wrapper over :func:`layer_norm` and :func:`layer_norm_backward`; ``train()``,
    ``eval()``, ``state_dict()`` and ``load_state_dict()`` work as in
    :class:`bnkit.numpy.BatchNorm` (the state dict holds ``weight`` and ``bias``).

    Parameters
    ----------
    normalized_shape : int or tuple of ints (D_1, ..., D_k)
        The trailing axes to normalize over.
    eps : float > 0, default 1e-5
    elementwise_affine : bool, default True
        Learn :math:`\gamma` (``weight``, ones of shape ``normalized_shape``) and
        :math:`\beta` (``bias``, zeros).
    bias : bool, default True
        With ``elementwise_affine``, also learn :math:`\beta` (False: ``weight`` only).
    dtype : numpy dtype, default float64
        Of the parameters. Inputs keep their own dtype.

    Shape
    -----
    Input: (N, ..., D_1, ..., D_k); output: same shape.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> ln = bnp.LayerNorm((3, 4, 4))                 # over (C, H, W) of an image
    >>> y = ln(np.random.default_rng(0).normal(5.0, 2.0, size=(2, 3, 4, 4)))
    >>> np.allclose(y.mean(axis=(1, 2, 3)), 0)         # per example
    True
    """

    def __init__(self, normalized_shape: ShapeLike, eps: float = 1e-5,
                 elementwise_affine: bool = True, bias: bool = True, dtype=np.float64):
        self.normalized_shape = _as_normalized_shape(normalized_shape)
        _checks.check_eps(eps)
        self.eps = eps
        self.elementwise_affine = bool(elementwise_affine)
        self._param_shape = self.normalized_shape
        super().__init__(self.elementwise_affine, bias, dtype)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        return layer_norm(x, self.normalized_shape, self.weight, self.bias, self.eps)

    def _backward(self, grad_y, x: np.ndarray):
        return layer_norm_backward(grad_y, x, self.normalized_shape, self.weight, self.eps)

    def __repr__(self) -> str:
        return (f"LayerNorm({self.normalized_shape}, eps={self.eps}, "
                f"elementwise_affine={self.elementwise_affine}, bias={self.bias is not None})")


class GroupNorm(_PerExampleNorm):
    r"""Group normalization layer in NumPy, with the semantics of :class:`torch.nn.GroupNorm`.

    .. math::

        y = \frac{x - \mathrm{E}[x]}{\sqrt{\mathrm{Var}[x] + \varepsilon}} \gamma + \beta

    with the mean and biased variance taken per example and per group of
    :math:`C/G` consecutive channels (over those channels and every spatial
    position); :math:`\gamma, \beta` per channel. The same in training and eval
    mode. A thin wrapper over :func:`group_norm` and :func:`group_norm_backward`;
    ``train()``, ``eval()``, ``state_dict()`` and ``load_state_dict()`` work as in
    :class:`bnkit.numpy.BatchNorm` (the state dict holds ``weight`` and ``bias``).

    Parameters
    ----------
    num_groups : int
        :math:`G`; must divide ``num_channels``.
    num_channels : int
        :math:`C`.
    eps : float > 0, default 1e-5
    affine : bool, default True
        Learn :math:`\gamma` (``weight``, ones of shape (C,)) and :math:`\beta`
        (``bias``, zeros).
    dtype : numpy dtype, default float64
        Of the parameters. Inputs keep their own dtype.
    bias : bool, default True, keyword-only
        With ``affine``, also learn :math:`\beta` (False: ``weight`` only), as
        torch 2.13's ``GroupNorm(..., bias=False)``.

    Shape
    -----
    Input: (N, C, ...); output: same shape.

    Examples
    --------
    >>> import numpy as np, bnkit.numpy as bnp
    >>> gn = bnp.GroupNorm(2, 4)
    >>> y = gn(np.random.default_rng(0).normal(5.0, 2.0, size=(3, 4, 5, 5)))
    >>> np.allclose(y.reshape(3, 2, -1).mean(axis=2), 0)   # per example and group
    True
    """

    def __init__(self, num_groups: int, num_channels: int, eps: float = 1e-5,
                 affine: bool = True, dtype=np.float64, *, bias: bool = True):
        _checks.check_positive_int("num_channels", num_channels)
        _check_num_groups(num_groups, num_channels)
        _checks.check_eps(eps)
        self.num_groups = int(num_groups)
        self.num_channels = int(num_channels)
        self.eps = eps
        self.affine = bool(affine)
        self._param_shape = (self.num_channels,)
        super().__init__(self.affine, bias, dtype)

    def _forward(self, x: np.ndarray) -> np.ndarray:
        if x.ndim >= 2 and x.shape[1] != self.num_channels:
            raise ValueError(f"input has {x.shape[1]} channels (shape {x.shape}) but "
                             f"num_channels={self.num_channels}")
        return group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    def _backward(self, grad_y, x: np.ndarray):
        return group_norm_backward(grad_y, x, self.num_groups, self.weight, self.eps)

    def __repr__(self) -> str:
        return (f"GroupNorm({self.num_groups}, {self.num_channels}, eps={self.eps}, "
                f"affine={self.affine}, bias={self.bias is not None})")

