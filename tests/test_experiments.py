"""bnkit.experiments on tiny configurations: model, training loop, history, figures, CLI."""

import math
import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

import bnkit.torch as bnt
from bnkit.experiments import BatchStream, History, mlp, steps_to_accuracy, train
from bnkit.experiments import cli
from bnkit.experiments.training import as_tensors

SIZES = (784, 16, 12, 10)


def manual_forward(model, x, training):
    """The MLP written out in float64 from its parameters: u = W h + b, BN, sigmoid; logits."""
    h = x.double()
    pre = []
    for block in model.blocks:
        W = block.linear.weight.double()
        u = h @ W.T
        if block.linear.bias is not None:
            u = u + block.linear.bias.double()
        if block.has_batch_norm:
            bn = block.norm
            if training:
                mean, var = u.mean(0), u.var(0, unbiased=False)
            else:
                mean, var = bn.running_mean.double(), bn.running_var.double()
            z = (u - mean) / torch.sqrt(var + bn.eps) * bn.weight.double() + bn.bias.double()
        else:
            z = u
        pre.append(z)
        h = torch.sigmoid(z)
    return h @ model.head.weight.double().T + model.head.bias.double(), pre


# --------------------------------------------------------------------------- #
# models
# --------------------------------------------------------------------------- #
@pytest.mark.parametrize("batch_norm", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_forward_equals_manual_computation(batch_norm, training, rng):
    model = mlp(SIZES, batch_norm=batch_norm, init_std=0.3, seed=1)
    if batch_norm:  # non-trivial BN state
        with torch.no_grad():
            for b in model.blocks:
                b.norm.weight.uniform_(0.5, 2.0)
                b.norm.bias.uniform_(-1, 1)
                b.norm.running_mean.uniform_(-1, 1)
                b.norm.running_var.uniform_(0.5, 2.0)
    x = torch.as_tensor(rng.random((32, 784)), dtype=torch.float32)
    expected, expected_pre = manual_forward(model, x, training)
    model.train(training)
    with torch.no_grad():
        trace = model.trace(x)
        logits = model(x)
    torch.testing.assert_close(logits.double(), expected, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(trace.logits, logits)
    for got, want in zip(trace.pre_activation, expected_pre):
        torch.testing.assert_close(got.double(), want, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(model.pre_activation(x, -1, 3), trace.pre_activation[-1][:, 3])


def test_architecture_and_initialisation():
    model = mlp(batch_norm=True, init_std=0.05, seed=0)
    assert [b.linear.weight.shape for b in model.blocks] == [(100, 784), (100, 100), (100, 100)]
    assert model.head.weight.shape == (10, 100)
    assert all(isinstance(b.norm, bnt.BatchNorm1d) for b in model.blocks)
    assert all(isinstance(b.activation, nn.Sigmoid) for b in model.blocks)
    # BN before the sigmoid makes the linear bias redundant: none is created
    assert all(b.linear.bias is None for b in model.blocks) and model.head.bias is not None
    w = model.blocks[0].linear.weight.detach().numpy()
    assert abs(w.std() - 0.05) < 0.001 and abs(w.mean()) < 0.001
    plain = mlp(init_std=0.05, seed=0)
    assert all(isinstance(b.norm, nn.Identity) for b in plain.blocks)
    assert all(float(b.linear.bias.detach().abs().max()) == 0.0 for b in plain.blocks)
    # same seed, same weights; global RNG untouched
    state = torch.random.get_rng_state()
    torch.testing.assert_close(mlp(seed=3).blocks[1].linear.weight, mlp(seed=3).blocks[1].linear.weight)
    assert torch.equal(state, torch.random.get_rng_state())
    assert not torch.equal(mlp(seed=3).head.weight, mlp(seed=4).head.weight)


def test_per_layer_flags_position_and_errors():
    model = mlp(SIZES, batch_norm=[True, False])
    assert model.blocks[0].has_batch_norm and not model.blocks[1].has_batch_norm
    assert model.batch_norms()[1] is None
    after = mlp(SIZES, batch_norm=True, bn_position="after", activation="relu")
    assert after.blocks[0].linear.bias is not None
    x = torch.rand(8, 784)
    t = after.trace(x)
    torch.testing.assert_close(t.pre_activation[0], t.linear[0])
    # after: the block output is BN(relu(u)), normalized over the batch
    torch.testing.assert_close(t.hidden[0].mean(0), torch.zeros(16), atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="flags"):
        mlp(SIZES, batch_norm=[True])
    with pytest.raises(ValueError, match="bn_position"):
        mlp(SIZES, batch_norm=True, bn_position="middle")
    with pytest.raises(ValueError, match="activation"):
        mlp(SIZES, activation="swish")


class AddConstant(nn.Module):
    def __init__(self, c):
        super().__init__()
        self.c = c

    def forward(self, x):
        return x + self.c


def test_post_norm_hook_acts_after_bn():
    base = mlp(SIZES, batch_norm=True, seed=2)
    hooked = mlp(SIZES, batch_norm=True, seed=2, post_norm=lambda i, width: AddConstant(float(i + 1)))
    x = torch.rand(10, 784)
    with torch.no_grad():
        z0 = base.trace(x).pre_activation[0]
        z1 = hooked.trace(x).pre_activation[0]
    torch.testing.assert_close(z1, z0 + 1.0)
    # and it can be swapped in afterwards
    base.blocks[1].post_norm = AddConstant(5.0)
    with torch.no_grad():
        t = base.trace(x)
    bn_out = base.blocks[1].norm(t.linear[1].detach())
    torch.testing.assert_close(t.pre_activation[1], bn_out + 5.0)


# --------------------------------------------------------------------------- #
# batches and training
# --------------------------------------------------------------------------- #
def test_batch_stream_is_a_pure_function_of_seed_and_step():
    s = BatchStream(n=10, batch_size=4, seed=7)
    first = [s.indices(t) for t in range(5)]  # 20 indices: two full epochs
    flat = np.concatenate(first)
    np.testing.assert_array_equal(np.sort(flat[:10]), np.arange(10))
    np.testing.assert_array_equal(np.sort(flat[10:]), np.arange(10))
    fresh = BatchStream(n=10, batch_size=4, seed=7)
    np.testing.assert_array_equal(fresh.indices(3), first[3])  # random access, no history needed
    assert not np.array_equal(BatchStream(10, 4, seed=8).indices(0), first[0])
    with pytest.raises(ValueError, match="batch_size"):
        BatchStream(10, 11, 0)


def test_a_few_steps_reduce_the_loss_on_a_fixed_batch(tiny_data):
    t = as_tensors(tiny_data)
    x, y = t["x_train"][:60], t["y_train"][:60]
    data = dict(tiny_data, x_train=tiny_data["x_train"][:60], y_train=tiny_data["y_train"][:60])
    for batch_norm in (False, True):
        model = mlp(SIZES, batch_norm=batch_norm, init_std=0.1, seed=0)
        model.train()
        with torch.no_grad():
            before = float(F.cross_entropy(model(x), y))
        train(model, data, steps=10, batch_size=60, lr=0.5, record_every=0)
        model.train()
        with torch.no_grad():
            after = float(F.cross_entropy(model(x), y))
        assert after < before - 0.05, (batch_norm, before, after)


def test_training_step_is_plain_sgd(tiny_data):
    """One step of train() equals w - lr * grad computed by hand on the same batch."""
    model = mlp(SIZES, batch_norm=True, seed=5)
    ref = mlp(SIZES, batch_norm=True, seed=5)
    idx = torch.from_numpy(BatchStream(300, 30, seed=9).indices(0))
    t = as_tensors(tiny_data)
    loss = F.cross_entropy(ref(t["x_train"][idx]), t["y_train"][idx])
    grads = torch.autograd.grad(loss, list(ref.parameters()))
    train(model, tiny_data, steps=1, batch_size=30, lr=0.3, seed=9, record_every=0)
    for p, q, g in zip(model.parameters(), ref.parameters(), grads):
        torch.testing.assert_close(p, q - 0.3 * g)


def test_history_contents_and_percentiles(tiny_data):
    model = mlp(SIZES, batch_norm=True, seed=0)
    h = train(model, tiny_data, steps=25, batch_size=20, lr=0.5, eval_every=10, record_every=5,
              watch=(1, 4), record_size=64)
    np.testing.assert_array_equal(h.eval_steps, [0, 10, 20, 25])
    np.testing.assert_array_equal(h.record_steps, [0, 5, 10, 15, 20, 25])
    assert h.percentiles.shape == (6, 3) and h.steps_done == 25 and not h.diverged
    assert math.isnan(h.train_loss[0]) and np.all(np.isfinite(h.train_loss[1:]))
    assert np.all((0 <= h.test_accuracy) & (h.test_accuracy <= 1))
    # the last record equals np.percentile etc. of the pre-activations measured now
    model.eval()
    x_fixed = torch.as_tensor(tiny_data["x_test"][:64])
    with torch.no_grad():
        tr = model.trace(x_fixed)
    z = tr.pre_activation[1][:, 4].double().numpy()
    u = tr.linear[1][:, 4].double().numpy()
    np.testing.assert_allclose(h.percentiles[-1], np.percentile(z, [15, 50, 85]), rtol=0, atol=1e-12)
    np.testing.assert_allclose([h.unit_mean[-1], h.unit_std[-1]], [z.mean(), z.std()], atol=1e-12)
    np.testing.assert_allclose([h.linear_mean[-1], h.linear_std[-1]], [u.mean(), u.std()], atol=1e-12)
    bn = model.blocks[1].norm
    assert h.beta[-1] == float(bn.bias[4].detach()) and h.gamma[-1] == float(bn.weight[4].detach())
    assert h.beta[0] == 0.0 and h.gamma[0] == 1.0
    # test accuracy equals a direct evaluation
    with torch.no_grad():
        acc = float((model(torch.as_tensor(tiny_data["x_test"])).argmax(1).numpy() == tiny_data["y_test"]).mean())
    assert h.test_accuracy[-1] == acc
    plain = train(mlp(SIZES, seed=0), tiny_data, steps=5, record_every=5)
    assert np.all(np.isnan(plain.beta)) and np.all(np.isnan(plain.gamma))


def test_runs_are_deterministic_and_restore_threads(tiny_data):
    threads = torch.get_num_threads()
    a = train(mlp(SIZES, batch_norm=True, seed=1), tiny_data, steps=15, batch_size=20, seed=3, eval_every=5)
    assert torch.get_num_threads() == threads
    b = train(mlp(SIZES, batch_norm=True, seed=1), tiny_data, steps=15, batch_size=20, seed=3, eval_every=5)
    np.testing.assert_array_equal(a.test_loss, b.test_loss)
    np.testing.assert_array_equal(a.percentiles, b.percentiles)


def test_callback_every_k_steps_and_logs(tiny_data):
    seen = []

    def cb(ctx):
        seen.append((ctx.step, None if ctx.batch is None else tuple(ctx.batch[0].shape)))
        ctx.history.log("weight_norm", ctx.step, float(ctx.model.head.weight.detach().norm()))
        ctx.history.log("pair", ctx.step, [ctx.step, 2 * ctx.step])

    h = train(mlp(SIZES, seed=0), tiny_data, steps=12, batch_size=20, callback=cb, callback_every=4)
    assert seen == [(0, None), (4, (20, 784)), (8, (20, 784)), (12, (20, 784))]
    steps, values = h.logged("weight_norm")
    np.testing.assert_array_equal(steps, [0, 4, 8, 12])
    assert values.shape == (4,)
    assert h.logged("pair")[1].shape == (4, 2)


def test_history_round_trips_through_json_and_npz(tiny_data, tmp_path):
    h = train(mlp(SIZES, seed=0), tiny_data, steps=12, batch_size=20, eval_every=5, record_every=4,
              callback=lambda c: c.history.log("v", c.step, [c.step, 0.5]), callback_every=6)
    h.config["note"] = "round trip"
    for suffix in (".json", ".npz"):
        path = h.save(tmp_path / f"h{suffix}")
        g = History.load(path)
        assert g.config == h.config
        for name in ("eval_steps", "test_accuracy", "test_loss", "train_loss", "record_steps", "percentiles",
                     "unit_mean", "unit_std", "linear_mean", "linear_std", "beta", "gamma"):
            a, b = getattr(h, name), getattr(g, name)
            assert a.dtype == b.dtype and a.shape == b.shape, name
            np.testing.assert_array_equal(a, b)  # NaN == NaN here, and exact (JSON keeps float64 repr)
        np.testing.assert_array_equal(g.logged("v")[1], h.logged("v")[1])
        assert (g.steps_done, g.diverged, g.seconds, g.cpu_seconds) == (h.steps_done, h.diverged, h.seconds, h.cpu_seconds)
    with pytest.raises(ValueError, match="json or .npz"):
        h.save(tmp_path / "h.txt")


def test_divergence_stops_training(tiny_data):
    model = mlp(SIZES, activation="identity", init_std=1.0, seed=0)
    h = train(model, tiny_data, steps=200, lr=1e4, batch_size=20)
    assert h.diverged and h.steps_done < 200
    assert not math.isfinite(h.train_loss[-1])


def test_steps_to_accuracy():
    h = History(eval_steps=np.array([0, 100, 200, 300]), test_accuracy=np.array([0.1, 0.85, 0.91, 0.95]))
    assert steps_to_accuracy(h, 0.9) == 200 and h.steps_to(0.95) == 300 and h.steps_to(0.99) is None
    assert h.final_accuracy == 0.95


class Interrupt(Exception):
    pass


def test_resume_from_checkpoint_continues_exactly(tiny_data, tmp_path):
    kw = dict(steps=40, batch_size=20, lr=0.5, seed=2, eval_every=10, record_every=5)
    straight_model = mlp(SIZES, batch_norm=True, seed=0)
    straight = train(straight_model, tiny_data, **kw)

    def stop_at_30(ctx):
        if ctx.step == 30:
            raise Interrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupt):
        train(mlp(SIZES, batch_norm=True, seed=0), tiny_data, checkpoint=ckpt, checkpoint_every=20,
              callback=stop_at_30, callback_every=10, **kw)
    assert ckpt.is_file()
    resumed_model = mlp(SIZES, batch_norm=True, seed=0)
    with torch.no_grad():  # the weights must come from the checkpoint
        for p in resumed_model.parameters():
            p.zero_()
    resumed = train(resumed_model, tiny_data, checkpoint=ckpt, resume=True, **kw)
    assert not ckpt.exists()  # a finished run removes its checkpoint
    for name in ("eval_steps", "test_accuracy", "test_loss", "record_steps", "percentiles", "beta", "gamma"):
        np.testing.assert_array_equal(getattr(resumed, name), getattr(straight, name), err_msg=name)
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-12)
    for p, q in zip(resumed_model.state_dict().values(), straight_model.state_dict().values()):
        torch.testing.assert_close(p, q, rtol=0, atol=0)


def test_resume_between_evaluations_and_refuses_other_settings(tiny_data, tmp_path):
    kw = dict(steps=30, batch_size=20, lr=0.5, seed=2, eval_every=10, record_every=0)
    straight = train(mlp(SIZES, seed=0), tiny_data, **kw)

    def stop_at_25(ctx):
        if ctx.step == 25:
            raise Interrupt

    ckpt = tmp_path / "run.ckpt"
    with pytest.raises(Interrupt):  # checkpoint at step 15, between two evaluations
        train(mlp(SIZES, seed=0), tiny_data, checkpoint=ckpt, checkpoint_every=15, callback=stop_at_25,
              callback_every=5, **kw)
    resumed = train(mlp(SIZES, seed=0), tiny_data, checkpoint=ckpt, resume=True, **kw)
    np.testing.assert_allclose(resumed.train_loss, straight.train_loss, rtol=1e-12)
    np.testing.assert_array_equal(resumed.test_loss, straight.test_loss)

    with pytest.raises(Interrupt):
        train(mlp(SIZES, seed=0), tiny_data, checkpoint=ckpt, checkpoint_every=15, callback=stop_at_25,
              callback_every=5, **kw)
    with pytest.warns(UserWarning, match="other settings"):
        other = train(mlp(SIZES, seed=0), tiny_data, checkpoint=ckpt, resume=True, **dict(kw, lr=0.1))
    assert other.eval_steps[0] == 0 and other.config["train"]["lr"] == 0.1


# --------------------------------------------------------------------------- #
# figures
# --------------------------------------------------------------------------- #
def test_figures_draw_the_panels(tiny_data):
    import matplotlib.pyplot as plt

    from bnkit.experiments import figures

    plain = train(mlp(SIZES, seed=0), tiny_data, steps=10, eval_every=5, record_every=5)
    bn = train(mlp(SIZES, batch_norm=True, seed=0), tiny_data, steps=10, eval_every=5, record_every=5)
    fig = figures.plot_figure1(plain, bn)
    axes = fig.axes
    assert len(axes) == 3
    assert [a.get_title()[:3] for a in axes] == ["(a)", "(b)", "(c)"]
    assert axes[1].get_ylim() == axes[2].get_ylim()
    assert all(a.get_xlabel() == "training step" for a in axes)
    np.testing.assert_array_equal(axes[1].lines[1].get_ydata(), plain.percentiles[:, 1])
    fig2 = figures.plot_beta_gamma(bn, plain)
    np.testing.assert_array_equal(fig2.axes[0].lines[0].get_ydata(), bn.beta)
    fig3 = figures.plot_sweep([0.1, 1.0], {"plain": [0.5, 0.6], "BN": [0.7, 0.8]}, xlabel="lr", percent=True)
    np.testing.assert_allclose(fig3.axes[0].lines[1].get_ydata(), [70, 80])
    plt.close("all")


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
def test_cli_figure1_end_to_end(tmp_path, capsys):
    args = ["figure1", "--steps", "20", "--out", str(tmp_path), "--eval-every", "10", "--record-every", "5"]
    assert cli.main(args) == 0
    captured = capsys.readouterr()
    assert "figure1 plain" in captured.err and "20/20" in captured.err  # the tqdm bars
    assert "final test accuracy" in captured.out
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted([
        "figure1-mnist-5k-plain.json", "figure1-mnist-5k-plain.npz", "figure1-mnist-5k-bn.json",
        "figure1-mnist-5k-bn.npz", "figure1-mnist-5k.png", "figure1-mnist-5k-beta-gamma.png"])
    h = History.load(tmp_path / "figure1-mnist-5k-bn.npz")
    assert h.steps_done == 20 and h.config["key"]["model"]["batch_norm"] is True
    assert (tmp_path / "figure1-mnist-5k.png").read_bytes()[:4] == b"\x89PNG"
    # --resume reuses both results without training
    assert cli.main(args + ["--resume", "--no-progress"]) == 0
    out = capsys.readouterr().out
    assert out.count("reusing") == 2
    # other settings: trained again
    assert cli.main(["figure1", "--steps", "10", "--out", str(tmp_path), "--resume", "--no-progress"]) == 0
    assert "other settings" in capsys.readouterr().out


def test_cli_table_runs_a_command_with_defaults_from_its_experiment():
    from bnkit.experiments.arguments import add_data_arguments, defaults

    def experiment(data="mnist-5k", data_dir=None, depth=10):
        return depth + (0 if data == "mnist-5k" else 100)

    def configure(parser):
        add_data_arguments(parser, experiment)
        parser.add_argument("--depth", type=int, default=defaults(experiment)["depth"])

    table = {"dummy": cli.Command("a test command", configure,
                                  lambda args: experiment(args.data, args.data_dir, args.depth))}
    assert cli.main(["dummy", "--depth", "3"], commands=table) == 3
    assert cli.main(["dummy"], commands=table) == 10
    assert cli.main(["dummy", "--data", "fashion-mnist"], commands=table) == 110
    assert "dummy" not in cli.COMMANDS  # the table is explicit: nothing registered itself


def test_figure1_options_default_to_the_experiment_function():
    from bnkit.experiments import figure1
    from bnkit.experiments.arguments import defaults

    d = defaults(figure1.run_figure1)
    args = cli.build_parser().parse_args(["figure1"])
    for name in ("steps", "batch_size", "lr", "init_std", "eval_every", "record_every", "seed", "seeds",
                 "data", "resume", "progress"):
        assert getattr(args, name) == d[name], name
    assert str(args.out) == str(d["out"]) and d["steps"] == 50000 and d["seeds"] is None
    with pytest.raises(SystemExit):  # one seed or several, not both
        cli.build_parser().parse_args(["figure1", "--seed", "1", "--seeds", "0", "1"])


def test_cli_figure1_with_seeds_writes_one_run_per_seed_and_a_summary(tmp_path, capsys):
    import json

    args = ["figure1", "--steps", "20", "--out", str(tmp_path), "--eval-every", "10", "--record-every", "10",
            "--seeds", "0", "1", "2", "--no-progress"]
    assert cli.main(args) == 0
    names = {p.name for p in tmp_path.iterdir()}
    for s in (0, 1, 2):
        for net in ("plain", "bn"):
            assert {f"figure1-mnist-5k-seed{s}-{net}.json", f"figure1-mnist-5k-seed{s}-{net}.npz"} <= names
        assert f"figure1-mnist-5k-seed{s}.png" in names
    assert {"figure1-mnist-5k-seeds.json", "figure1-mnist-5k-seeds.png"} <= names
    summary = json.loads((tmp_path / "figure1-mnist-5k-seeds.json").read_text())
    assert summary["settings"]["seeds"] == [0, 1, 2] and summary["settings"]["steps"] == 20
    acc = {net: [] for net in ("plain", "bn")}
    for s in (0, 1, 2):
        for net in acc:
            h = History.load(tmp_path / f"figure1-mnist-5k-seed{s}-{net}.npz")
            assert h.config["train"]["seed"] == s and h.config["model"]["seed"] == s
            run = summary["runs"][str(s)][net]
            assert run["final_test_accuracy"] == h.final_accuracy
            assert run["steps_to_90"] == h.steps_to(0.9) and run["steps_done"] == 20
            acc[net].append(h.final_accuracy)
    for net in acc:
        stats = summary["summary"][net]["final_test_accuracy"]
        np.testing.assert_allclose(stats["mean"], np.mean(acc[net]), rtol=1e-12)
        np.testing.assert_allclose(stats["std"], np.std(acc[net], ddof=1), rtol=1e-12)
        assert stats["min"] == min(acc[net]) and stats["max"] == max(acc[net])
    assert len(set(acc["bn"])) > 1  # the seeds really differ
    out = capsys.readouterr().out
    assert "over 3 seeds" in out
    # --resume: every seed's pair reused, the summary written again from them
    assert cli.main(args + ["--resume"]) == 0
    assert capsys.readouterr().out.count("reusing") == 6
    assert json.loads((tmp_path / "figure1-mnist-5k-seeds.json").read_text()) == summary


def test_figure1_seeds_must_be_distinct(tmp_path):
    from bnkit.experiments.figure1 import run_figure1

    with pytest.raises(ValueError, match="distinct"):
        run_figure1(steps=1, seeds=[0, 0], out=tmp_path, progress=False)


def test_python_dash_m_help():
    r = subprocess.run([sys.executable, "-m", "bnkit.experiments", "figure1", "--help"],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and "--steps" in r.stdout and "--resume" in r.stdout and "--seeds" in r.stdout


def test_histories_round_trip_through_one_compact_file(tiny_data, tmp_path):
    import json

    from bnkit.experiments.runs import load_histories, save_histories

    def cb(ctx):
        ctx.history.log("probe/value", ctx.step, [1.0 / 3.0, float(ctx.step), float("nan")])
        ctx.history.log("probe/other", ctx.step, 2.0)

    hs = [train(mlp(SIZES, batch_norm=True, seed=s), tiny_data, steps=4, eval_every=2, record_every=2,
                callback=cb, callback_every=2, seed=s) for s in (0, 1)]
    path = save_histories({"BN": hs}, tmp_path / "runs.json", keys=["probe/value"], digits=4, meta={"note": 1})
    back = load_histories(path)
    assert list(back) == ["BN"] and len(back["BN"]) == 2
    for h, b in zip(hs, back["BN"]):
        np.testing.assert_allclose(b.test_accuracy, h.test_accuracy, rtol=5e-4)
        np.testing.assert_allclose(b.percentiles, h.percentiles, rtol=5e-4)
        np.testing.assert_array_equal(b.eval_steps, h.eval_steps)
        steps, values = b.logged("probe/value")
        np.testing.assert_array_equal(steps, [0, 2, 4])
        np.testing.assert_array_equal(values[:, 0], 0.3333)  # four significant digits
        assert np.isnan(values[:, 2]).all() and "probe/other" not in b.logs
        assert b.config == json.loads(json.dumps(h.config))
    assert json.loads(path.read_text())["meta"] == {"note": 1}
    gz = save_histories({"BN": hs}, tmp_path / "runs.json.gz", keys=["probe/value"], digits=4, meta={"note": 1})
    assert gz.read_bytes()[:2] == b"\x1f\x8b" and gz.stat().st_size < path.stat().st_size
    assert save_histories({"BN": hs}, tmp_path / "again.json.gz", keys=["probe/value"], digits=4,
                          meta={"note": 1}).read_bytes() == gz.read_bytes()  # reproducible bytes
    np.testing.assert_array_equal(load_histories(gz)["BN"][1].test_accuracy, back["BN"][1].test_accuracy)
    (tmp_path / "x.json").write_text("{}")
    with pytest.raises(ValueError, match="not a file"):
        load_histories(tmp_path / "x.json")
