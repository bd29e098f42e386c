"""bnkit.plotting: the book style, and the normalization-set picture against torch's own functions.

The oracle for :func:`normalization_set`: the values a normalized output depends on.
For generic input, y[0, 0, 0] of torch's batch/layer/instance/group norm has a
non-zero derivative with respect to exactly the values that share its statistics.
"""

import matplotlib
import numpy as np
import pytest
import torch
import torch.nn.functional as F

matplotlib.use("Agg")

from bnkit.plotting import NORMALIZATIONS, normalization_set, plot_normalization_sets  # noqa: E402

SHAPE = (4, 6, 5)   # (N, C, S)
GROUPS = 3


def _torch_dependence(norm):
    x = torch.randn(SHAPE, dtype=torch.float64, generator=torch.Generator().manual_seed(0))
    x.requires_grad_()
    if norm == "batch":
        y = F.batch_norm(x, None, None, training=True)
    elif norm == "layer":
        y = F.layer_norm(x, x.shape[1:])
    elif norm == "instance":
        y = F.instance_norm(x)
    else:
        y = F.group_norm(x, GROUPS)
    (grad,) = torch.autograd.grad(y[0, 0, 0], x)
    return (grad.abs() > 1e-12).numpy()


@pytest.mark.parametrize("norm", list(NORMALIZATIONS))
def test_normalization_set_is_what_torch_normalizes_together(norm):
    np.testing.assert_array_equal(normalization_set(norm, SHAPE, GROUPS), _torch_dependence(norm))


def test_normalization_set_refuses_unknown_norms_and_bad_groups():
    with pytest.raises(ValueError, match="norm must be one of"):
        normalization_set("weight", SHAPE)
    with pytest.raises(ValueError, match="groups=4 must divide the 6 channels"):
        normalization_set("group", SHAPE, groups=4)


def test_plot_normalization_sets_draws_one_titled_cube_per_norm():
    fig = plot_normalization_sets()
    titles = [ax.get_title() for ax in fig.axes]
    assert titles == ["Batch norm", "Layer norm", "Instance norm", "Group norm (3 groups)"]
    # matplotlib draws the visible voxels, shaded: some blue (the set), the rest grey
    for ax in fig.axes:
        faces = np.array([p.get_facecolor()[0][:3] for p in ax.collections])
        blue = faces[:, 2] - faces[:, 0] > 0.3
        assert 0 < blue.sum() < len(faces)
