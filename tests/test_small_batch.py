"""Chapter 7's experiment code (bnkit.experiments.small_batch) on tiny configurations."""

import json

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnkit.torch as bnt
from bnkit.experiments import evaluate
from bnkit.experiments.small_batch import (BATCH_SIZES, NORMS, VARIANTS, WATCHED_LAYERS, SweepResult,
                                           batch_size_sweep, batch_statistics_accuracy, conv_net, main,
                                           mnist_images, norm_layer, precise_accuracy, variant_net)

# conv1 8*1*9, conv2 16*8*9, fc 16*7*7*32, head 32*10 + 10
WEIGHTS = 8 * 9 + 16 * 8 * 9 + 16 * 49 * 32 + 32 * 10 + 10
EXPECTED_NORM_TYPES = {
    "batch": (bnt.BatchNorm2d, bnt.BatchNorm2d, bnt.BatchNorm1d),
    "layer": (bnt.GroupNorm, bnt.GroupNorm, bnt.LayerNorm),
    "group": (bnt.GroupNorm, bnt.GroupNorm, bnt.GroupNorm),
    "instance": (bnt.GroupNorm, bnt.GroupNorm, nn.Identity),
    "none": (nn.Identity, nn.Identity, nn.Identity),
}


@pytest.fixture(scope="module")
def tiny_data():
    """96 training and 40 test images of the embedded MNIST subset, as (n, 1, 28, 28)."""
    data = mnist_images()
    return {"x_train": data["x_train"][:96], "y_train": data["y_train"][:96],
            "x_test": data["x_test"][::25], "y_test": data["y_test"][::25]}


def test_mnist_images_shapes_and_ranges():
    data = mnist_images()
    assert data["x_train"].shape == (4000, 1, 28, 28) and data["x_train"].dtype == np.float32
    assert data["x_test"].shape == (1000, 1, 28, 28)
    assert data["y_train"].shape == (4000,) and data["y_test"].shape == (1000,)
    assert 0.0 <= data["x_train"].min() and data["x_train"].max() <= 1.0


@pytest.mark.parametrize("norm", NORMS)
def test_builder_uses_the_right_norm_layers(norm):
    net = conv_net(norm)
    got = (type(net.norm1), type(net.norm2), type(net.norm_fc))
    assert got == EXPECTED_NORM_TYPES[norm]
    if norm == "layer":
        assert net.norm1.num_groups == 1 and net.norm2.num_groups == 1
        assert net.norm_fc.normalized_shape == (32,)
    if norm == "group":
        assert (net.norm1.num_groups, net.norm2.num_groups, net.norm_fc.num_groups) == (4, 4, 4)
    if norm == "instance":
        assert (net.norm1.num_groups, net.norm2.num_groups) == (8, 16)
    assert net(torch.zeros(3, 1, 28, 28)).shape == (3, 10)


@pytest.mark.parametrize("norm", NORMS)
def test_parameter_counts(norm):
    net = conv_net(norm)
    count = sum(p.numel() for p in net.parameters())
    if norm == "none":
        assert count == WEIGHTS + 8 + 16 + 32                 # biases of conv1, conv2, fc
        assert all(m.bias is not None for m in (net.conv1, net.conv2, net.fc))
    elif norm == "instance":
        assert count == WEIGHTS + 2 * (8 + 16) + 32           # gamma, beta of the conv norms; fc bias
        assert net.conv1.bias is None and net.conv2.bias is None and net.fc.bias is not None
    else:
        assert count == WEIGHTS + 2 * (8 + 16 + 32)           # gamma and beta of every norm
        assert all(m.bias is None for m in (net.conv1, net.conv2, net.fc))


def test_every_variant_starts_from_the_same_weights_and_leaves_the_global_rng_alone():
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    nets = {norm: conv_net(norm, seed=7) for norm in NORMS}
    torch.testing.assert_close(torch.rand(3), expected_next, rtol=0, atol=0)
    for name in ("conv1", "conv2", "fc", "head"):
        for norm in NORMS:
            torch.testing.assert_close(getattr(nets[norm], name).weight, getattr(nets["batch"], name).weight,
                                       rtol=0, atol=0)
    assert not torch.equal(conv_net("batch", seed=8).conv1.weight, nets["batch"].conv1.weight)


def test_layer_variant_is_layer_norm_over_channels_and_pixels():
    net = conv_net("layer")
    x = torch.randn(4, 8, 28, 28)
    torch.testing.assert_close(net.norm1(x), F.layer_norm(x, (8, 28, 28)), rtol=1e-5, atol=1e-5)


def test_instance_variant_is_instance_norm_per_channel_and_example():
    net = conv_net("instance")
    x = torch.randn(4, 8, 28, 28)
    with torch.no_grad():
        net.norm1.weight.uniform_(0.5, 2.0)
        net.norm1.bias.normal_()
        expected = F.instance_norm(x, weight=net.norm1.weight, bias=net.norm1.bias)
        torch.testing.assert_close(net.norm1(x), expected, rtol=1e-5, atol=1e-5)


def test_instance_norm_is_refused_where_its_sets_hold_one_value():
    with pytest.raises(ValueError, match="m = 1"):
        norm_layer("instance", 32, spatial=False)
    with pytest.raises(ValueError, match="m = 1"):
        conv_net("batch", fc_norm="instance")
    assert not hasattr(conv_net("group", hidden=0, fc_norm="instance"), "fc")   # no fc layer: nothing to refuse


def test_fc_norm_overrides_the_hidden_layers_normalization():
    net = conv_net("batch", fc_norm="none")
    assert isinstance(net.norm1, bnt.BatchNorm2d) and isinstance(net.norm_fc, nn.Identity)
    assert net.conv1.bias is None and net.fc.bias is not None
    assert sum(p.numel() for p in net.parameters()) == WEIGHTS + 2 * (8 + 16) + 32


def test_other_widths_and_no_hidden_layer():
    net = conv_net("group", channels=(4, 8, 12), hidden=0, num_groups=2, image_size=32)
    assert not hasattr(net, "fc")
    assert net.head.in_features == 12 * 4 * 4
    assert net(torch.zeros(2, 1, 32, 32)).shape == (2, 10)


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"norm": "weight"}, "norm must be one of"),
    ({"fc_norm": "weight"}, "fc_norm must be one of"),
    ({"norm": "group", "num_groups": 3}, "must divide"),
    ({"image_size": 30}, "not divisible"),
    ({"channels": ()}, "non-empty"),
    ({"hidden": -1}, "hidden must be"),
])
def test_builder_refuses_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        conv_net(**kwargs)


def test_norm_layer_refuses_an_unknown_name():
    with pytest.raises(ValueError, match="norm must be one of"):
        norm_layer("batchnorm", 8)


@pytest.mark.parametrize("norm", ["batch", "layer", "group"])
def test_a_few_steps_reduce_the_loss(tiny_data, norm):
    from bnkit.experiments import train
    net = conv_net(norm, seed=0)
    x = torch.as_tensor(tiny_data["x_train"])
    y = torch.as_tensor(tiny_data["y_train"])
    before = F.cross_entropy(net.eval()(x), y).item()
    train(net, tiny_data, 30, batch_size=16, lr=0.02, momentum=0.9, eval_every=30, record_every=0)
    after = F.cross_entropy(net.eval()(x), y).item()
    assert after < 0.8 * before


def test_batch_statistics_accuracy_leaves_the_model_untouched(tiny_data):
    net = conv_net("batch").eval()
    x, y = tiny_data["x_test"], tiny_data["y_test"]
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = batch_statistics_accuracy(net, x, y, batch_size=4)
    assert 0.0 <= acc <= 1.0
    assert not net.training
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


@pytest.mark.parametrize("norm", ["layer", "group", "none"])
def test_without_batch_norm_batch_statistics_change_nothing(tiny_data, norm):
    """Layer and group norm have no batch statistics: the accuracy is the eval-mode one."""
    net = conv_net(norm)
    x, y = tiny_data["x_test"], tiny_data["y_test"]
    acc, _ = evaluate(net, torch.as_tensor(x), torch.as_tensor(y))
    assert batch_statistics_accuracy(net, x, y, batch_size=2) == acc


def test_batch_statistics_accuracy_matches_a_manual_loop(tiny_data):
    net = conv_net("batch")
    x, y = torch.as_tensor(tiny_data["x_test"]), torch.as_tensor(tiny_data["y_test"])
    order = torch.from_numpy(np.random.default_rng(3).permutation(len(x)))
    correct = 0
    with torch.no_grad():
        for i in range(0, len(x), 8):
            idx = order[i:i + 8]
            copy_ = conv_net("batch").train()
            copy_.load_state_dict(net.state_dict())
            correct += int((copy_(x[idx]).argmax(1) == y[idx]).sum())
    assert batch_statistics_accuracy(net, x, y, batch_size=8, seed=3) == correct / len(x)


def test_batch_statistics_accuracy_never_makes_a_batch_of_one(tiny_data):
    net = conv_net("batch")
    x, y = tiny_data["x_test"][:9], tiny_data["y_test"][:9]   # 9 = 4 + 4 + 1: the 1 joins the last batch
    assert 0.0 <= batch_statistics_accuracy(net, x, y, batch_size=4) <= 1.0
    with pytest.raises(ValueError, match="batch_size must be >= 2"):
        batch_statistics_accuracy(net, x, y, batch_size=1)


def test_precise_accuracy_recomputes_on_a_copy(tiny_data):
    net = conv_net("batch")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    acc = precise_accuracy(net, tiny_data["x_train"], tiny_data["x_test"], tiny_data["y_test"], batch_size=16)
    assert 0.0 <= acc <= 1.0
    for k, v in net.state_dict().items():
        torch.testing.assert_close(v, before[k], rtol=0, atol=0)


def test_sweep_on_a_tiny_configuration(tiny_data):
    result = batch_size_sweep(tiny_data, batch_sizes=(2, 8), variants=("batch", "group"), examples=32,
                              lr=0.02, reference_batch_size=8, seeds=(0, 1))
    np.testing.assert_array_equal(result.seeds, [0, 1])
    np.testing.assert_array_equal(result.batch_sizes, [2, 8])
    np.testing.assert_array_equal(result.steps, [16, 4])
    np.testing.assert_allclose(result.lr, [0.005, 0.02])
    assert result.variants == ("batch", "group")
    for v in result.variants:
        assert result.test_accuracy[v].shape == (2, 2)
        assert np.all((0 <= result.test_accuracy[v]) & (result.test_accuracy[v] <= 1))
        assert np.all(np.isfinite(result.train_loss[v]))
        assert np.all(result.seconds[v] > 0)
        assert result.weight_change[v].shape == (2, 2, len(WATCHED_LAYERS))
        assert np.all(result.weight_change[v] > 0)
    assert set(result.batch_stats_accuracy) == set(result.precise_accuracy) == {"batch"}
    assert result.batch_stats_accuracy["batch"].shape == (2, 2)
    np.testing.assert_array_equal(result.values("group", 8), result.test_accuracy["group"][:, 1])
    assert result.spread("group", 8).n == 2
    with pytest.raises(KeyError, match="not in the sweep"):
        result.index(4)
    with pytest.raises(KeyError, match="has no variant"):
        result.values("group", 8, "batch_stats_accuracy")
    # a run depends only on its own (variant, batch size, seed): a sub-sweep reproduces the entries exactly
    again = batch_size_sweep(tiny_data, batch_sizes=(8,), variants=("batch",), examples=32,
                             lr=0.02, reference_batch_size=8, seeds=(1,))
    part = result.select(seeds=(1,), batch_sizes=(8,), variants=("batch",))
    for name in ("test_accuracy", "train_loss", "batch_stats_accuracy", "precise_accuracy", "weight_change"):
        np.testing.assert_array_equal(getattr(again, name)["batch"], getattr(part, name)["batch"])


def test_frozen_variant_trains_only_the_fc_norm_and_the_head(tiny_data):
    net = variant_net("batch_frozen", seed=3)
    trainable = [name for name, p in net.named_parameters() if p.requires_grad]
    assert trainable == ["norm_fc.weight", "norm_fc.bias", "head.weight", "head.bias"]
    result = batch_size_sweep(tiny_data, batch_sizes=(8,), variants=("batch_frozen", "batch"), examples=32,
                              seeds=(3,))
    np.testing.assert_array_equal(result.weight_change["batch_frozen"][0, 0, :3], [0, 0, 0])
    assert result.weight_change["batch_frozen"][0, 0, 3] > 0 and np.all(result.weight_change["batch"] > 0)


def test_variants_build_the_documented_networks():
    assert isinstance(variant_net("batch_conv").norm1, bnt.BatchNorm2d)
    assert isinstance(variant_net("batch_conv").norm_fc, nn.Identity)
    assert variant_net("batch_conv").fc.bias is not None
    assert variant_net("instance").norm1.num_groups == 8
    for name, spec in VARIANTS.items():
        net = variant_net(name)
        assert net(torch.zeros(2, 1, 28, 28)).shape == (2, 10)
        assert all(p.requires_grad for p in net.head.parameters())
    with pytest.raises(ValueError, match="variant must be one of"):
        variant_net("batchnorm")
    with pytest.raises(ValueError, match="hidden fc layer"):
        variant_net("batch_frozen", hidden=0)


def test_sweep_result_saves_and_loads_exactly(tiny_data, tmp_path):
    result = batch_size_sweep(tiny_data, batch_sizes=(4, 8), variants=("batch_conv", "layer"), examples=16,
                              seeds=(0, 2))
    path = result.save(tmp_path / "sweep.json")
    back = SweepResult.load(path)
    assert back.variants == result.variants and back.config == json.loads(json.dumps(result.config))
    for name in ("seeds", "batch_sizes", "steps", "lr"):
        np.testing.assert_array_equal(getattr(back, name), getattr(result, name))
    for name in ("test_accuracy", "train_loss", "seconds", "batch_stats_accuracy", "precise_accuracy",
                 "weight_change"):
        assert set(getattr(back, name)) == set(getattr(result, name))
        for v, a in getattr(result, name).items():
            np.testing.assert_array_equal(getattr(back, name)[v], a)
    with pytest.raises(ValueError, match="not a saved SweepResult"):
        SweepResult.from_dict({"format": "something else"})


def test_sweep_without_batch_norm_has_no_batch_norm_measurements(tiny_data):
    result = batch_size_sweep(tiny_data, batch_sizes=(4,), variants=("layer",), examples=8)
    assert result.batch_stats_accuracy == {} and result.precise_accuracy == {}
    assert result.steps.tolist() == [2]


@pytest.mark.parametrize(("kwargs", "match"), [
    ({"batch_sizes": (1, 4)}, "batch sizes must lie"),
    ({"batch_sizes": (4, 1000)}, "batch sizes must lie"),
    ({"batch_sizes": (4,), "variants": ("batch", "weight")}, "variant must be one of"),
    ({"batch_sizes": (4,), "examples": 0}, "examples must be positive"),
    ({"batch_sizes": (4,), "seeds": (1, 1)}, "distinct"),
    ({"batch_sizes": (4,), "seeds": ()}, "distinct"),
])
def test_sweep_refuses_bad_arguments(tiny_data, kwargs, match):
    with pytest.raises(ValueError, match=match):
        batch_size_sweep(tiny_data, **kwargs)


def test_the_chapters_batch_sizes():
    assert BATCH_SIZES == (2, 4, 8, 16, 32, 64, 128, 256)


def test_command_line_writes_a_reproducible_file(tmp_path):
    out = tmp_path / "sweep.json"
    assert main(["--output", str(out), "--seeds", "0", "--variants", "group", "--batch-sizes", "8",
                 "--examples", "16", "--no-progress"]) == 0
    result = SweepResult.load(out)
    assert result.config["command"].endswith("--examples 16 --no-progress")
    assert result.variants == ("group",) and result.steps.tolist() == [2]
    again = batch_size_sweep(None, (8,), ("group",), examples=16, seeds=(0,))
    np.testing.assert_array_equal(again.test_accuracy["group"], result.test_accuracy["group"])
    with pytest.raises(SystemExit, match="--output must end in .json"):
        main(["--output", str(tmp_path / "sweep.csv")])


def test_merging_sweeps_over_disjoint_seeds_equals_one_sweep(tiny_data, tmp_path):
    from bnkit.experiments.small_batch import merge_sweeps
    kwargs = dict(batch_sizes=(4, 8), variants=("batch", "group"), examples=16)
    whole = batch_size_sweep(tiny_data, seeds=(0, 1, 2), **kwargs)
    merged = merge_sweeps([batch_size_sweep(tiny_data, seeds=(0, 1), **kwargs),
                           batch_size_sweep(tiny_data, seeds=(2,), **kwargs)])
    np.testing.assert_array_equal(merged.seeds, [0, 1, 2])
    assert merged.config["seeds"] == [0, 1, 2]
    for name in ("test_accuracy", "train_loss", "batch_stats_accuracy", "precise_accuracy", "weight_change"):
        for v, a in getattr(whole, name).items():
            np.testing.assert_array_equal(getattr(merged, name)[v], a)
    with pytest.raises(ValueError, match="share seeds"):
        merge_sweeps([whole, whole.select(seeds=(1,))])
    with pytest.raises(ValueError, match="more than their seeds"):
        merge_sweeps([whole.select(seeds=(0,)), batch_size_sweep(tiny_data, seeds=(5,), batch_sizes=(4, 8),
                                                                 variants=("batch", "group"), examples=32)])
    # the command line merges files
    whole.select(seeds=(0,)).save(tmp_path / "a.json")
    whole.select(seeds=(1, 2)).save(tmp_path / "b.json")
    assert main(["--output", str(tmp_path / "all.json"), "--merge", str(tmp_path / "a.json"),
                 str(tmp_path / "b.json")]) == 0
    back = SweepResult.load(tmp_path / "all.json")
    np.testing.assert_array_equal(back.test_accuracy["group"], whole.test_accuracy["group"])


def test_the_cli_runs_the_same_sweep_and_records_its_command(tiny_data, tmp_path, monkeypatch):
    from bnkit.experiments import cli

    out = tmp_path / "cli.json"
    argv = ["small-batch", "--output", str(out), "--seeds", "0", "--variants", "group",
            "--batch-sizes", "8", "--examples", "16", "--no-progress"]
    monkeypatch.setattr("sys.argv", ["python -m bnkit.experiments"] + argv)
    assert cli.main(argv) == 0
    result = SweepResult.load(out)
    assert result.config["command"].startswith("python -m bnkit.experiments small-batch --output")
    again = batch_size_sweep(None, (8,), ("group",), examples=16, seeds=(0,))
    np.testing.assert_array_equal(again.test_accuracy["group"], result.test_accuracy["group"])
