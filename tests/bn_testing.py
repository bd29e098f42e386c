"""Shared test data and oracles: the shapes the suite covers and torch's own layers.

torch is the oracle everywhere: ``torch.nn.BatchNorm1d/2d/3d`` and
``torch.nn.functional.batch_norm`` in float64.
"""

import numpy as np
import pytest
import torch

# float64 results must agree with torch to round-off.
TOL64 = dict(rtol=1e-10, atol=1e-12)

# One input shape per layer rank: (N, C), (N, C, L), (N, C, H, W), (N, C, D, H, W).
SHAPES = [
    pytest.param((8, 3), id="NC"),
    pytest.param((6, 3, 5), id="NCL"),
    pytest.param((4, 3, 4, 5), id="NCHW"),
    pytest.param((3, 2, 3, 4, 2), id="NCDHW"),
]

# channel_axis=1 is (N, C, *); channel_axis=-1 is channels-last (N, *, C), NHWC for images.
CHANNEL_AXES = [pytest.param(1, id="channels_first"), pytest.param(-1, id="channels_last")]

TORCH_BATCHNORM = {2: torch.nn.BatchNorm1d, 3: torch.nn.BatchNorm1d,
                   4: torch.nn.BatchNorm2d, 5: torch.nn.BatchNorm3d}


def random_batch(rng, shape, dtype=np.float64):
    """A batch in (N, C, *) layout whose channels have different means and spreads."""
    num_channels = shape[1]
    loc = rng.uniform(-3.0, 3.0, num_channels)
    scale = rng.uniform(0.5, 3.0, num_channels)
    per_channel = (1, num_channels) + (1,) * (len(shape) - 2)
    x = loc.reshape(per_channel) + scale.reshape(per_channel) * rng.standard_normal(shape)
    return x.astype(dtype)


def to_layout(a, channel_axis):
    """Move the channel axis of an (N, C, *) array to ``channel_axis`` (a view, not a copy)."""
    return np.moveaxis(a, 1, channel_axis)


def from_layout(a, channel_axis):
    """Inverse of :func:`to_layout`: back to (N, C, *)."""
    return np.moveaxis(a, channel_axis, 1)


def as_numpy(a):
    """A NumPy array from a tensor (on any device) or from anything NumPy takes."""
    return a.detach().cpu().numpy() if torch.is_tensor(a) else np.asarray(a)


def torch_reference(ndim, num_features, device="cpu", **kwargs):
    """torch's own BatchNorm layer for an input of rank ``ndim``, in float64."""
    return TORCH_BATCHNORM[ndim](num_features, device=device, dtype=torch.float64, **kwargs)


def torch_forward_backward(module_or_fn, x, grad_y, params=()):
    """Run torch forward and backward; return y and the gradients of x and of ``params``.

    ``x`` and ``grad_y`` are tensors; ``params`` are leaf tensors that need a gradient.
    """
    x = x.detach().clone().requires_grad_(True)
    y = module_or_fn(x)
    grads = torch.autograd.grad(y, [x, *params], grad_y)
    return y.detach(), grads[0], list(grads[1:])
