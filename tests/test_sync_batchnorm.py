"""bnkit.torch.SyncBatchNorm on 2 and 3 real processes (gloo on 127.0.0.1), and its helpers.

The oracle: one process running ``bnkit.torch.BatchNorm*d`` and ``torch.nn.BatchNorm*d``
on the whole batch, in float64. Starting a process with torch costs 1-2 s, so the
multi-process cases are grouped: one run of 2 processes and one of 3 hold every
equality case (module-scoped fixtures), and each failure mode gets one short run.
Every run is bounded by ``run_processes``' timeouts; ports are fresh (bound to port 0).
"""

import collections
import time

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn

import bnkit.torch as bnt
from bn_testing import TOL64, random_batch, torch_reference
from bnkit.torch.distributed import (
    PeerError,
    WorkerError,
    find_free_port,
    loopback_interface,
    run_processes,
)
from bnkit.torch.communication import collectives_per_step, ring_bytes_sent, sync_payload_bytes
from bnkit.torch.sync import SyncBatchNorm, convert_sync_batchnorm, merge_moments
from sync_testing import (
    assemble,
    run_shard_cases,
    shard_worker,
    sync_batch_norm_on_shards,
    train_steps,
)

BNKIT_BATCHNORM = {2: bnt.BatchNorm1d, 3: bnt.BatchNorm1d, 4: bnt.BatchNorm2d,
                   5: bnt.BatchNorm3d}
RUN_TIMEOUT = 90.0          # seconds for one multi-process run, start-up included
STEPS = 2                   # training steps per case: the running statistics accumulate


# --------------------------------------------------------------------------- cases


def _case(seed, shape, shard_sizes, **options):
    """A multi-step case: batches, output gradients and a non-trivial initial state."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    xs = [torch.tensor(random_batch(rng, shape)) for _ in range(STEPS)]
    gs = [torch.tensor(rng.standard_normal(shape)) for _ in range(STEPS)]
    state = SyncBatchNorm(c, dtype=torch.float64, **options).state_dict()
    for name, value in (("weight", rng.uniform(0.5, 2.0, c)), ("bias", rng.normal(size=c)),
                        ("running_mean", rng.normal(size=c)),
                        ("running_var", rng.uniform(0.5, 2.0, c))):
        if name in state:
            state[name] = torch.tensor(value)
    return {"x": xs, "grad_output": gs, "shard_sizes": shard_sizes, "state_dict": state,
            "options": options}


def _cases(world_size):
    """(id, case) pairs: 2-D and 4-D, equal and unequal shards, momentum 0.1 and None."""
    if world_size == 2:
        shards = {"equal": ([6, 6], [4, 4]), "unequal": ([9, 3], [5, 2])}
    else:
        shards = {"equal": ([4, 4, 4], [3, 3, 3]), "unequal": ([6, 1, 5], [1, 4, 2])}
    cases, seed = [], 100 * world_size
    for kind, (sizes_2d, sizes_4d) in shards.items():
        for momentum in (0.1, None):
            for name, shape, sizes in (("NC", (sum(sizes_2d), 3), sizes_2d),
                                       ("NCHW", (sum(sizes_4d), 3, 3, 2), sizes_4d)):
                seed += 1
                cases.append((f"{name}-{kind}-momentum={momentum}",
                              _case(seed, shape, sizes, momentum=momentum)))
    # A rank with an empty shard, a 3-D and a 5-D input, no affine, no running statistics.
    cases += [
        ("NC-empty-shard", _case(seed + 1, (5, 2), [0, 5] + [0] * (world_size - 2))),
        ("NCL-no-affine", _case(seed + 2, (3 * world_size, 4, 3), [3] * world_size,
                                affine=False)),
        ("NCDHW-no-running-stats", _case(seed + 3, (2 * world_size, 2, 2, 3, 2),
                                         [2] * world_size, track_running_stats=False)),
    ]
    # Every shard empty in the first step (L = 0: no value per channel anywhere), then
    # not: like BatchNorm*d on an empty batch, the running statistics stay and the
    # counter moves on (momentum=None: the next batch's factor is 1/2, not 1).
    case = _case(seed + 5, (world_size, 2, 3), [1] * world_size, momentum=None)
    empty = torch.zeros(world_size, 2, 0, dtype=torch.float64)
    case["x"][0], case["grad_output"][0] = empty, empty.clone()
    cases.append(("NCL-all-empty-then-not", case))
    if world_size == 2:                # channels_last (NHWC) memory on every rank
        case = _case(seed + 4, (7, 3, 4, 3), [4, 3])
        for key in ("x", "grad_output"):
            case[key] = [t.contiguous(memory_format=torch.channels_last) for t in case[key]]
        cases.append(("NCHW-channels-last", case))
    return cases


CASES = {w: _cases(w) for w in (2, 3)}
CASE_IDS = [(w, i) for w in (2, 3) for i in range(len(CASES[w]))]


def _reference(case, layer):
    """``layer`` (bnkit or torch BatchNorm*d) trained on the whole batch, step by step."""
    xs = case["x"]
    bn = layer[xs[0].dim()](xs[0].shape[1], dtype=torch.float64, **case["options"])
    bn.load_state_dict(case["state_dict"])
    return train_steps(bn, xs, case["grad_output"])


# torch's own layers (float64 already), with the bnkit classes' call signature.
TORCH_BATCHNORM = {d: (lambda n, dtype=None, d=d, **kw: torch_reference(d, n, **kw))
                   for d in (2, 3, 4, 5)}


# --------------------------------------------------------------------------- the runs


def _refusals(rank, world_size):
    """Inputs the group must refuse together; each rank records what it raised."""
    c = 3
    scenarios = {
        "wrong_channels": lambda: SyncBatchNorm(c, dtype=torch.float64)(
            torch.randn(4, c + 2 * rank, dtype=torch.float64)),
        "not_a_tensor": lambda: SyncBatchNorm(c)([[1.0] * c] * 4 if rank == 1
                                                 else torch.randn(4, c)),
        "dtype_mismatch": lambda: SyncBatchNorm(c)(
            torch.randn(4, c, dtype=torch.float64 if rank == 0 else torch.float32)),
        "num_features_mismatch": lambda: SyncBatchNorm(c + rank)(torch.randn(4, c + rank)),
        "one_value_in_total": lambda: SyncBatchNorm(c)(torch.randn(1 - rank, c)),
    }
    caught = {}
    for name, call in scenarios.items():
        try:
            call()
            caught[name] = None
        except Exception as exc:        # noqa: BLE001 - the test inspects it
            caught[name] = (type(exc).__name__, str(exc))
    # Refused calls leave no trace: the group still works and the counter did not move.
    bn = SyncBatchNorm(c, dtype=torch.float64)
    try:
        bn(torch.randn(4, c + 1, dtype=torch.float64) if rank == 1 else
           torch.randn(4, c, dtype=torch.float64))
    except Exception:                   # noqa: BLE001
        pass
    untouched = int(bn.num_batches_tracked) == 0 and torch.equal(bn.running_mean,
                                                                 torch.zeros(c, dtype=torch.float64))
    x = torch.arange(8.0, dtype=torch.float64).reshape(4, 2) * (rank + 1)
    y = SyncBatchNorm(2, dtype=torch.float64)(x)
    return caught, untouched, y


COLLECTIVES = ("all_gather", "all_reduce", "all_gather_into_tensor", "all_gather_object",
               "broadcast", "reduce_scatter", "reduce_scatter_tensor", "barrier")


def _count_collectives(rank, world_size, steps=3):
    """Collectives per forward and per backward of a model with 3 SyncBatchNorm layers.

    Every collective of ``torch.distributed`` the layers could call is wrapped
    with a counter for the duration. Returns, per step, (forward, backward) Counters.
    """
    calls = collections.Counter()
    originals = {name: getattr(dist, name) for name in COLLECTIVES}

    def counting(name, fn):
        def wrapper(*args, **kwargs):
            calls[name] += 1
            return fn(*args, **kwargs)
        return wrapper

    for name, fn in originals.items():
        setattr(dist, name, counting(name, fn))
    try:
        torch.manual_seed(0)
        model = bnt.SyncBatchNorm.convert_sync_batchnorm(nn.Sequential(
            nn.Linear(4, 6), nn.BatchNorm1d(6), nn.ReLU(), nn.Linear(6, 5),
            bnt.BatchNorm1d(5, momentum=None), nn.Unflatten(1, (5, 1)), nn.BatchNorm1d(5)))
        per_step = []
        for step in range(steps):
            x = torch.randn(3 + rank, 4)
            calls.clear()
            y = model(x)
            forward = collections.Counter(calls)
            calls.clear()
            y.square().sum().backward()
            per_step.append((forward, collections.Counter(calls)))
        return per_step
    finally:
        for name, fn in originals.items():
            setattr(dist, name, fn)


def _with_refusals(rank, world_size, cases):
    return (shard_worker(rank, world_size, cases), _refusals(rank, world_size),
            _count_collectives(rank, world_size))


def _with_subgroup(rank, world_size, cases):
    """The cases, then a SyncBatchNorm over the subgroup of ranks 0 and 2 only."""
    results = shard_worker(rank, world_size, cases)
    group = dist.new_group([0, 2])      # every rank must create it, members or not
    x = torch.arange(12.0, dtype=torch.float64).reshape(6, 2) ** (rank + 1)
    bn = SyncBatchNorm(2, process_group=group, dtype=torch.float64)
    y = bn(x) if rank in (0, 2) else None
    return results, (x, y, None if y is None else bn.running_var.clone())


@pytest.fixture(scope="module")
def runs():
    """The two equality runs, each started once: {world_size: (per-case results, extra)}."""
    out = {}
    cases2 = [c for _, c in CASES[2]]
    per_rank = run_processes(_with_refusals, 2, (cases2,), timeout=RUN_TIMEOUT)
    out[2] = (assemble(cases2, [r[0] for r in per_rank]), [r[1] for r in per_rank],
              [r[2] for r in per_rank])
    cases3 = [c for _, c in CASES[3]]
    per_rank = run_processes(_with_subgroup, 3, (cases3,), timeout=RUN_TIMEOUT)
    out[3] = (assemble(cases3, [r[0] for r in per_rank]), [r[1] for r in per_rank])
    return out


# --------------------------------------------------------------------------- equality


@pytest.mark.parametrize(("world_size", "index"), CASE_IDS,
                         ids=[f"{w}procs-{CASES[w][i][0]}" for w, i in CASE_IDS])
def test_sync_equals_single_process_on_whole_batch(runs, world_size, index):
    case = CASES[world_size][index][1]
    got = runs[world_size][0][index]
    for layer in (BNKIT_BATCHNORM, TORCH_BATCHNORM):
        want = _reference(case, layer)
        for key in ("output", "grad_input", "grad_weight", "grad_bias"):
            for step in range(STEPS):
                if want[key][step] is None:
                    assert got[key][step] is None
                else:
                    torch.testing.assert_close(got[key][step], want[key][step], **TOL64,
                                               msg=lambda m: f"{key}, step {step}: {m}")
        for sd in got["state_dicts"]:
            assert sd.keys() == want["state_dicts"][0].keys()
            for k in sd:
                torch.testing.assert_close(sd[k], want["state_dicts"][0][k], **TOL64)


@pytest.mark.parametrize(("world_size", "index"), CASE_IDS,
                         ids=[f"{w}procs-{CASES[w][i][0]}" for w, i in CASE_IDS])
def test_running_statistics_identical_on_every_rank(runs, world_size, index):
    first, *others = runs[world_size][0][index]["state_dicts"]
    for sd in others:
        for k in first:
            assert torch.equal(sd[k], first[k]), k


def test_unsynchronized_shards_differ_from_whole_batch():
    # The premise of the chapter, in one process: per-shard statistics are not the batch's.
    case = CASES[2][1][1]
    x = case["x"][0]
    per_shard = torch.cat([bnt.batch_norm(s, None, None, training=True)
                           for s in x.split(case["shard_sizes"])])
    whole = bnt.batch_norm(x, None, None, training=True)
    assert (per_shard - whole).abs().max() > 1e-3


def test_subgroup_synchronizes_only_its_members(runs):
    extras = runs[3][1]
    x0, y0, var0 = extras[0]
    x2, y2, var2 = extras[2]
    assert extras[1][1] is None
    ref = bnt.BatchNorm1d(2, dtype=torch.float64)
    want = ref(torch.cat([x0, x2]))
    torch.testing.assert_close(torch.cat([y0, y2]), want, **TOL64)
    torch.testing.assert_close(var0, ref.running_var, **TOL64)
    assert torch.equal(var0, var2)


# --------------------------------------------------------------------------- refusals


def test_refused_input_on_one_rank_raises_on_every_rank(runs):
    (caught0, untouched0, y0), (caught1, untouched1, y1) = runs[2][1]
    # The rank with the bad input raises its own error, the other a PeerError.
    assert caught1["wrong_channels"][0] == "ValueError"
    assert "channels" in caught1["wrong_channels"][1]
    assert caught0["wrong_channels"][0] == "PeerError"
    assert "rank(s) [1]" in caught0["wrong_channels"][1]
    assert caught1["not_a_tensor"][0] == "TypeError"
    assert caught0["not_a_tensor"][0] == "PeerError"
    # Disagreements between ranks: every rank raises the same error.
    for name, kind, text in (("dtype_mismatch", "TypeError", "differ in dtype"),
                             ("num_features_mismatch", "ValueError", "differ in num_features"),
                             ("one_value_in_total", "ValueError", "more than 1 value")):
        for caught in (caught0, caught1):
            assert caught[name][0] == kind, (name, caught[name])
            assert text in caught[name][1]
    assert untouched0 and untouched1
    # ... and the group still works afterwards: the batch is the union of both shards.
    x = torch.cat([torch.arange(8.0, dtype=torch.float64).reshape(4, 2) * r for r in (1, 2)])
    want = bnt.batch_norm(x, None, None, training=True)
    torch.testing.assert_close(torch.cat([y0, y1]), want, **TOL64)


def test_peer_error_is_a_runtime_error():
    assert issubclass(PeerError, RuntimeError)
    assert issubclass(WorkerError, RuntimeError)


# --------------------------------------------------------------------------- failures


def _fails_before_the_collective(rank, world_size):
    if rank == 1:
        raise KeyError("rank 1 fails before its first collective")
    # Rank 0 waits in the forward's all-gather for a rank that never comes.
    return SyncBatchNorm(3)(torch.randn(4, 3))


def test_rank_that_raises_stops_the_run_with_its_traceback():
    start = time.monotonic()
    with pytest.raises(WorkerError, match="rank 1 of 2 failed with KeyError") as info:
        # The collective timeout is long: it must be the failure that ends the run.
        run_processes(_fails_before_the_collective, 2, timeout=RUN_TIMEOUT,
                      collective_timeout=60.0)
    elapsed = time.monotonic() - start
    assert elapsed < 30.0
    err = info.value
    assert err.rank == 1 and err.world_size == 2
    assert "Traceback" in str(err) and "_fails_before_the_collective" in str(err)
    assert isinstance(err.__cause__, KeyError)
    assert "fails before its first collective" in err.errors[1]


def _waits_for_nobody(rank, world_size):
    if rank == 0:
        dist.all_reduce(torch.ones(1))      # rank 1 never joins in
    else:
        time.sleep(60)


def test_collective_timeout_bounds_a_missing_rank():
    start = time.monotonic()
    with pytest.raises(WorkerError, match="rank 0 of 2 failed"):
        run_processes(_waits_for_nobody, 2, timeout=RUN_TIMEOUT, collective_timeout=1.0,
                      grace_period=0.2)
    assert time.monotonic() - start < 30.0


def _sleeps(rank, world_size):
    time.sleep(60)


def test_run_timeout_stops_every_process():
    start = time.monotonic()
    with pytest.raises(TimeoutError, match="did not finish within 2 s"):
        run_processes(_sleeps, 1, timeout=2.0, grace_period=0.2)
    assert time.monotonic() - start < 20.0


@pytest.mark.parametrize(("kwargs", "match"), [
    (dict(world_size=0), "world_size"),
    (dict(world_size=2, timeout=0), "timeout"),
    (dict(world_size=2, collective_timeout=-1), "collective_timeout"),
])
def test_run_processes_rejects_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        run_processes(_sleeps, **kwargs)


def test_find_free_port_is_bindable_on_loopback():
    import socket
    port = find_free_port()
    with socket.socket() as s:
        s.bind(("127.0.0.1", port))


def test_shard_sizes_must_add_up():
    x = torch.zeros(5, 2)
    with pytest.raises(ValueError, match="add up"):
        sync_batch_norm_on_shards(x, x, [2, 2])
    with pytest.raises(ValueError, match="same number of shards"):
        run_shard_cases([{"x": x, "grad_output": x, "shard_sizes": [5]},
                         {"x": x, "grad_output": x, "shard_sizes": [2, 3]}])


# --------------------------------------------------------------------------- one process


@pytest.mark.parametrize("shape", [(8, 3), (6, 3, 5), (4, 3, 4, 5), (3, 3, 3, 4, 2)],
                         ids=["NC", "NCL", "NCHW", "NCDHW"])
@pytest.mark.parametrize("momentum", [0.1, None])
def test_without_process_group_equals_batchnorm(rng, shape, momentum):
    assert not dist.is_initialized()
    _compare_with_batchnorm(rng, shape, momentum)


def _compare_with_batchnorm(rng, shape, momentum):
    sync = SyncBatchNorm(shape[1], momentum=momentum, dtype=torch.float64)
    ref = BNKIT_BATCHNORM[len(shape)](shape[1], momentum=momentum, dtype=torch.float64)
    for training in (True, True, False):
        sync.train(training)
        ref.train(training)
        x = torch.tensor(random_batch(rng, shape))
        g = torch.tensor(rng.standard_normal(shape))
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = sync(xa), ref(xb)
        ya.backward(g)
        yb.backward(g)
        torch.testing.assert_close(ya, yb, rtol=0, atol=0)
        torch.testing.assert_close(xa.grad, xb.grad, rtol=0, atol=0)
    for k, v in ref.state_dict().items():
        torch.testing.assert_close(sync.state_dict()[k], v, rtol=0, atol=0)


@pytest.fixture
def world_of_one(monkeypatch):
    """A real default process group of one process, in this process (no network)."""
    monkeypatch.setenv("GLOO_SOCKET_IFNAME", loopback_interface() or "lo")
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        yield
    finally:
        dist.destroy_process_group()


def test_world_size_one_equals_batchnorm(rng, world_of_one):
    assert dist.get_world_size() == 1
    for shape in [(8, 3), (4, 3, 4, 5)]:
        for momentum in (0.1, None):
            _compare_with_batchnorm(rng, shape, momentum)


def test_state_dict_matches_batchnorm2d_and_torch():
    sync = SyncBatchNorm(5)
    for other in (bnt.BatchNorm2d(5), nn.BatchNorm2d(5), nn.SyncBatchNorm(5)):
        assert list(sync.state_dict()) == list(other.state_dict())
        sync.load_state_dict(other.state_dict(), strict=True)
        other.load_state_dict(sync.state_dict(), strict=True)
    assert [n for n, _ in sync.named_parameters()] == ["weight", "bias"]


def test_refuses_bad_arguments_like_batchnorm():
    with pytest.raises(ValueError, match="num_features"):
        SyncBatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        SyncBatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="rank >= 2"):
        SyncBatchNorm(3)(torch.randn(3))
    with pytest.raises(ValueError, match="channels"):
        SyncBatchNorm(3)(torch.randn(4, 2))


# --------------------------------------------------------------------------- merging


@pytest.mark.parametrize("sizes", [[5, 7], [1, 1, 1], [0, 4, 0, 9], [12]])
@pytest.mark.parametrize("offset", [0.0, 1e8])
def test_merge_moments_equals_moments_of_concatenation(rng, sizes, offset):
    c = 3
    shards = [torch.tensor(offset + rng.standard_normal((n, c))) for n in sizes]
    moments = [(s.mean(0) if len(s) else torch.zeros(c),
                ((s - s.mean(0)) ** 2).sum(0) if len(s) else torch.zeros(c)) for s in shards]
    n, mean, m2 = merge_moments(torch.tensor(sizes), torch.stack([m for m, _ in moments]),
                                torch.stack([q for _, q in moments]))
    x = torch.cat(shards)
    assert n.item() == sum(sizes)
    # Relative to the spread, not to the offset: the merge loses nothing to cancellation.
    torch.testing.assert_close(mean, x.mean(0), rtol=1e-15, atol=1e-7 if offset else 1e-14)
    torch.testing.assert_close(m2 / n, x.var(0, correction=0), rtol=1e-7 if offset else 1e-12,
                               atol=1e-12)


def test_merge_moments_two_shards_is_chans_pairwise_update(rng):
    a, b = torch.tensor(rng.normal(size=(4, 2))), torch.tensor(rng.normal(3, 2, size=(7, 2)))
    ma, mb = a.mean(0), b.mean(0)
    qa, qb = ((a - ma) ** 2).sum(0), ((b - mb) ** 2).sum(0)
    _, _, m2 = merge_moments(torch.tensor([4, 7]), torch.stack([ma, mb]), torch.stack([qa, qb]))
    torch.testing.assert_close(m2, qa + qb + (mb - ma) ** 2 * 4 * 7 / 11, **TOL64)


def test_merge_moments_checks_shapes():
    with pytest.raises(ValueError, match="means"):
        merge_moments(torch.ones(2), torch.ones(3, 2), torch.ones(3, 2))


# --------------------------------------------------------------------------- conversion


def _net():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), bnt.BatchNorm2d(4), nn.ReLU(),
                         nn.Sequential(nn.Conv2d(4, 4, 1), nn.BatchNorm2d(4, momentum=None)),
                         nn.Flatten(), nn.Linear(4 * 36, 5), bnt.BatchNorm1d(5, affine=False),
                         nn.LayerNorm(5)).double()


def test_convert_sync_batchnorm_replaces_every_batchnorm_and_keeps_state(rng):
    net, ref = _net(), _net()
    x = torch.tensor(rng.standard_normal((6, 2, 8, 8)))
    ref(x)
    net(x)                                   # some running statistics to carry over
    net[3].eval()
    ref[3].eval()
    params = {id(p) for p in net.parameters()}
    before = {k: v.clone() for k, v in net.state_dict().items()}
    converted = convert_sync_batchnorm(net)
    assert converted is net
    assert [type(m).__name__ for m in (net[1], net[3][1], net[6])] == ["SyncBatchNorm"] * 3
    assert isinstance(net[7], nn.LayerNorm)
    assert {id(p) for p in net.parameters()} == params       # the same tensors
    assert net[3][1].momentum is None and net[6].affine is False and not net[3][1].training
    assert net.state_dict().keys() == before.keys()
    for k, v in before.items():
        assert torch.equal(net.state_dict()[k], v)
    # Without a process group the converted network computes what it did (torch's
    # BatchNorm2d became bnkit's: equal to round-off).
    torch.testing.assert_close(net(x), ref(x), **TOL64)
    for a, b in zip(net.state_dict().values(), ref.state_dict().values()):
        torch.testing.assert_close(a, b, **TOL64)


def test_convert_sync_batchnorm_on_a_single_layer_and_lazy_layers():
    bn = nn.BatchNorm1d(3)
    sync = convert_sync_batchnorm(bn)
    assert isinstance(sync, SyncBatchNorm) and sync.weight is bn.weight
    assert sync.running_mean is bn.running_mean
    assert convert_sync_batchnorm(sync) is sync
    with pytest.raises(ValueError, match="lazy"):
        convert_sync_batchnorm(nn.LazyBatchNorm1d())


# --------------------------------------------------------------------------- communication


def test_one_all_gather_per_forward_and_one_all_reduce_per_backward(runs):
    """Counted on 2 real processes, 3 layers: as torch's SyncBatchNorm, 2 collectives per layer.

    The first forward of each layer also all-gathers its num_features once.
    """
    layers = 3
    for per_step in runs[2][2]:                       # every rank
        for step, (forward, backward) in enumerate(per_step):
            assert forward == {"all_gather": layers * (2 if step == 0 else 1)}, (step, forward)
            assert backward == {"all_reduce": layers}, (step, backward)
            total = sum(forward.values()) + sum(backward.values())
            assert total == collectives_per_step(layers, first_step=step == 0)


def test_collectives_per_step_for_resnet50_equals_torchs():
    # 53 batch-norm layers; torch's SyncBatchNorm: one all-gather + one all-reduce each.
    assert collectives_per_step(53) == 106
    assert collectives_per_step(53, first_step=True) == 159
    with pytest.raises(ValueError, match="num_layers"):
        collectives_per_step(-1)


def test_payload_bytes_per_layer():
    fwd, bwd = sync_payload_bytes([64, 256])
    np.testing.assert_array_equal(fwd, [(2 * 64 + 3) * 8, (2 * 256 + 3) * 8])
    np.testing.assert_array_equal(bwd, [2 * 64 * 8, 2 * 256 * 8])
    fwd4, _ = sync_payload_bytes([64], bytes_per_value=4)
    np.testing.assert_array_equal(fwd4, [(2 * 64 + 3) * 4])


def test_ring_bytes_sent():
    assert ring_bytes_sent(100, 4, "all_gather") == 300
    assert ring_bytes_sent(100, 4, "all_reduce") == 150
    assert ring_bytes_sent(100, 1, "all_reduce") == 0
    with pytest.raises(ValueError, match="collective"):
        ring_bytes_sent(100, 4, "broadcast")


# --------------------------------------------------------------------------- helpers


def test_train_steps_single_tensor_and_steps(rng):
    x = torch.tensor(random_batch(rng, (6, 2)))
    g = torch.tensor(rng.standard_normal((6, 2)))
    one = train_steps(bnt.BatchNorm1d(2, dtype=torch.float64), x, g)
    two = train_steps(bnt.BatchNorm1d(2, dtype=torch.float64), [x, x], [g, g])
    assert isinstance(one["output"], torch.Tensor) and len(two["output"]) == 2
    torch.testing.assert_close(one["grad_weight"], two["grad_weight"][1], rtol=0, atol=0)
    assert int(two["state_dicts"][0]["num_batches_tracked"]) == 2
    with pytest.raises(ValueError, match="same number of steps"):
        train_steps(bnt.BatchNorm1d(2), [x, x], [g])


def test_single_tensor_case_returns_tensors():
    # One case through real processes, the way the chapter calls it.
    x = torch.arange(20.0, dtype=torch.float64).reshape(10, 2) ** 1.5
    res = sync_batch_norm_on_shards(x, torch.ones_like(x), [6, 4], momentum=None,
                                    timeout=RUN_TIMEOUT)
    ref = train_steps(bnt.BatchNorm1d(2, momentum=None, dtype=torch.float64), x,
                      torch.ones_like(x))
    torch.testing.assert_close(res["output"], ref["output"], **TOL64)
    torch.testing.assert_close(res["grad_weight"], ref["grad_weight"], **TOL64)
    assert len(res["state_dicts"]) == 2
