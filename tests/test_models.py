"""bnkit.experiments.models: the output layer's own initial scale (head_init_std)."""

import pytest
import torch

from bnkit.experiments import mlp


@pytest.mark.parametrize("batch_norm", [False, True])
def test_head_init_std_rescales_only_the_output_layer(batch_norm):
    ref = mlp(batch_norm=batch_norm, init_std=5.0, seed=3)
    net = mlp(batch_norm=batch_norm, init_std=5.0, seed=3, head_init_std=0.05)
    for a, b in zip(ref.blocks, net.blocks):
        torch.testing.assert_close(b.linear.weight, a.linear.weight, rtol=0, atol=0)
    torch.testing.assert_close(net.head.weight, ref.head.weight * (0.05 / 5.0), rtol=1e-6, atol=0)
    assert net.head.weight.std().item() == pytest.approx(0.05, rel=0.1)
    assert net.config["head_init_std"] == 0.05 and "head_init_std" not in ref.config
    # None is the default: the same network as without the argument
    same = mlp(batch_norm=batch_norm, init_std=5.0, seed=3, head_init_std=None)
    torch.testing.assert_close(same.head.weight, ref.head.weight, rtol=0, atol=0)


@pytest.mark.parametrize("bad", [0.0, -1.0])
def test_head_init_std_must_be_positive(bad):
    with pytest.raises(ValueError, match="head_init_std must be positive"):
        mlp(head_init_std=bad)
