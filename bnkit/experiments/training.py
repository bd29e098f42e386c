r"""Training loop and recorded history for the Figure-1 experiments.

:func:`train` runs minibatch SGD on softmax cross-entropy and records, as in
Ioffe & Szegedy's Figure 1:

* test accuracy (and test loss, mean training loss) every ``eval_every`` steps;
* every ``record_every`` steps, on a fixed batch of test images in eval mode,
  the distribution of :math:`z`, the input to one watched nonlinearity
  (``watch=(layer, unit)``, default the first unit of the last hidden layer):
  its 15th/50th/85th percentiles, mean and standard deviation, the same
  statistics' mean/std of the affine output :math:`u = W h + b` feeding it,
  and BN's :math:`\beta` and :math:`\gamma` of that unit when the layer has BN.

Everything lands in a :class:`History` that saves to and loads from JSON or
NPZ. A ``callback`` can run every ``callback_every`` steps and log its own
series into the history (:meth:`History.log`). Training can checkpoint and
resume; the minibatch sequence is a pure function of the seed and the step,
so a resumed run continues exactly where it stopped.
"""

from __future__ import annotations

import json
import math
import os
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

__all__ = [
    "History",
    "StepContext",
    "BatchStream",
    "train",
    "evaluate",
    "as_tensors",
    "steps_to_accuracy",
]

#: Arrays every History has, with their shapes in terms of E (evaluations) and R (records).
_ARRAY_FIELDS = (
    "eval_steps", "test_accuracy", "test_loss", "train_loss",
    "record_steps", "percentiles", "unit_mean", "unit_std", "linear_mean", "linear_std",
    "beta", "gamma",
)
_FORMAT = "bnkit.experiments.History"


def _empty(*shape, dtype=np.float64):
    return np.zeros((0,) + shape, dtype=dtype)


@dataclass
class History:
    r"""What :func:`train` measured, as NumPy arrays.

    Evaluations (E of them, at ``eval_steps``; step 0 is before any update):
    ``test_accuracy`` (fraction in [0, 1]), ``test_loss`` (mean
    cross-entropy), ``train_loss`` (mean minibatch loss over the steps since
    the previous evaluation; NaN at step 0).

    Records (R of them, at ``record_steps``), of the watched unit's
    nonlinearity input :math:`z` on the fixed test batch, eval mode:
    ``percentiles`` (R, P) at the levels ``config["percentile_levels"]``
    (``np.percentile``, linear interpolation), ``unit_mean``, ``unit_std``
    (population std), ``linear_mean``, ``linear_std`` of :math:`u = Wh + b`,
    and ``beta``, ``gamma`` of the BN on that layer (NaN without BN).

    ``config`` holds the model's and the run's settings; ``logs`` the series
    a callback logged with :meth:`log`; ``steps_done`` how far training got;
    ``diverged`` whether the loss became non-finite (training then stops);
    ``seconds`` and ``cpu_seconds`` the wall-clock and CPU time spent training.
    """

    config: Dict[str, Any] = field(default_factory=dict)
    eval_steps: np.ndarray = field(default_factory=lambda: _empty(dtype=np.int64))
    test_accuracy: np.ndarray = field(default_factory=_empty)
    test_loss: np.ndarray = field(default_factory=_empty)
    train_loss: np.ndarray = field(default_factory=_empty)
    record_steps: np.ndarray = field(default_factory=lambda: _empty(dtype=np.int64))
    percentiles: np.ndarray = field(default_factory=lambda: _empty(3))
    unit_mean: np.ndarray = field(default_factory=_empty)
    unit_std: np.ndarray = field(default_factory=_empty)
    linear_mean: np.ndarray = field(default_factory=_empty)
    linear_std: np.ndarray = field(default_factory=_empty)
    beta: np.ndarray = field(default_factory=_empty)
    gamma: np.ndarray = field(default_factory=_empty)
    logs: Dict[str, Dict[str, np.ndarray]] = field(default_factory=dict)
    steps_done: int = 0
    diverged: bool = False
    seconds: float = 0.0
    cpu_seconds: float = 0.0

    # ----------------------------------------------------------------- #
    def _append(self, name: str, value) -> None:
        old = getattr(self, name)
        value = np.asarray(value, dtype=old.dtype).reshape((1,) + old.shape[1:])
        setattr(self, name, np.concatenate([old, value]))

    def log(self, key: str, step: int, value) -> None:
        """Append ``value`` (a number or an array of fixed shape) at ``step`` to the series ``key``.

        Read it back with :meth:`logged`. Meant for callbacks (Chapter 6's
        measurements), and saved with the rest of the history.
        """
        value = np.asarray(value, dtype=np.float64)
        entry = self.logs.setdefault(key, {"steps": _empty(dtype=np.int64), "values": _empty(*value.shape)})
        entry["steps"] = np.concatenate([entry["steps"], np.array([step], dtype=np.int64)])
        entry["values"] = np.concatenate([entry["values"], value[None]])

    def logged(self, key: str) -> Tuple[np.ndarray, np.ndarray]:
        """``(steps, values)`` of a series logged with :meth:`log`."""
        entry = self.logs[key]
        return entry["steps"], entry["values"]

    @property
    def final_accuracy(self) -> float:
        """Test accuracy at the last evaluation."""
        return float(self.test_accuracy[-1])

    def steps_to(self, accuracy: float) -> Optional[int]:
        """First evaluated step with test accuracy >= ``accuracy`` (None if never)."""
        return steps_to_accuracy(self, accuracy)

    # ----------------------------------------------------------------- #
    def to_dict(self) -> Dict[str, Any]:
        """JSON-ready dict (NaN written as null)."""
        def clean(a):
            a = np.asarray(a)
            if a.dtype.kind == "f":
                return np.where(np.isnan(a), None, a).tolist()
            return a.tolist()

        return {
            "format": _FORMAT, "version": 1, "config": self.config,
            "arrays": {k: clean(getattr(self, k)) for k in _ARRAY_FIELDS},
            "logs": {k: {"steps": clean(v["steps"]), "values": clean(v["values"])} for k, v in self.logs.items()},
            "steps_done": int(self.steps_done), "diverged": bool(self.diverged), "seconds": float(self.seconds),
            "cpu_seconds": float(self.cpu_seconds),
        }

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "History":
        if d.get("format") != _FORMAT:
            raise ValueError(f"not a saved History (format {d.get('format')!r})")
        h = cls(config=dict(d["config"]), steps_done=int(d["steps_done"]),
                diverged=bool(d["diverged"]), seconds=float(d["seconds"]),
                cpu_seconds=float(d.get("cpu_seconds", 0.0)))

        def load(a, like):
            a = np.array(a, dtype=object)
            if like.dtype.kind == "f":
                a = np.where(a == None, np.nan, a)  # noqa: E711  (null -> NaN)
            return a.astype(like.dtype).reshape((-1,) + like.shape[1:]) if a.size else like.copy()

        for k in _ARRAY_FIELDS:
            like = getattr(h, k)
            if k == "percentiles":
                like = _empty(len(h.config.get("percentile_levels", (15, 50, 85))))
            setattr(h, k, load(d["arrays"][k], like))
        for k, v in d.get("logs", {}).items():
            steps = np.asarray(v["steps"], dtype=np.int64)
            values = np.array(v["values"], dtype=object)
            values = np.where(values == None, np.nan, values).astype(np.float64)  # noqa: E711
            h.logs[k] = {"steps": steps, "values": values}
        return h

    def save(self, path: Union[str, os.PathLike]) -> Path:
        """Write to ``path``: ``.json`` (text) or ``.npz`` (binary, exact). Returns the path."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        if path.suffix == ".json":
            tmp.write_text(json.dumps(self.to_dict(), allow_nan=False))
        elif path.suffix == ".npz":
            meta = {"format": _FORMAT, "version": 1, "config": self.config, "steps_done": int(self.steps_done),
                    "diverged": bool(self.diverged), "seconds": float(self.seconds),
                    "cpu_seconds": float(self.cpu_seconds), "logs": sorted(self.logs)}
            arrays = {k: getattr(self, k) for k in _ARRAY_FIELDS}
            for k, v in self.logs.items():
                arrays[f"log:{k}:steps"] = v["steps"]
                arrays[f"log:{k}:values"] = v["values"]
            with open(tmp, "wb") as f:
                np.savez_compressed(f, meta=np.array(json.dumps(meta)), **arrays)
        else:
            raise ValueError(f"save to .json or .npz, got {path.name!r}")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: Union[str, os.PathLike]) -> "History":
        """Read a history written by :meth:`save`."""
        path = Path(path)
        if path.suffix == ".json":
            return cls.from_dict(json.loads(path.read_text()))
        if path.suffix == ".npz":
            with np.load(path) as f:
                meta = json.loads(str(f["meta"]))
                if meta.get("format") != _FORMAT:
                    raise ValueError(f"{path}: not a saved History")
                h = cls(config=meta["config"], steps_done=meta["steps_done"], diverged=meta["diverged"],
                        seconds=meta["seconds"], cpu_seconds=meta.get("cpu_seconds", 0.0))
                for k in _ARRAY_FIELDS:
                    setattr(h, k, f[k].copy())
                for k in meta["logs"]:
                    h.logs[k] = {"steps": f[f"log:{k}:steps"].copy(), "values": f[f"log:{k}:values"].copy()}
            return h
        raise ValueError(f"load from .json or .npz, got {path.name!r}")


def steps_to_accuracy(history: History, accuracy: float) -> Optional[int]:
    """First step in ``history.eval_steps`` whose test accuracy is >= ``accuracy``; None if never reached."""
    hit = np.flatnonzero(history.test_accuracy >= accuracy)
    return int(history.eval_steps[hit[0]]) if hit.size else None


# --------------------------------------------------------------------------- #
# data and minibatches
# --------------------------------------------------------------------------- #
def as_tensors(data) -> Dict[str, torch.Tensor]:
    """``{"x_train", "y_train", "x_test", "y_test"}`` as float32 / int64 CPU tensors.

    ``data`` is such a dict (NumPy arrays or tensors, e.g. from
    :func:`bnkit.data.load_dataset`) or a data-set name for it.
    """
    if isinstance(data, str):
        from ..data import load_dataset
        data = load_dataset(data)
    out = {}
    for k in ("x_train", "y_train", "x_test", "y_test"):
        if k not in data:
            raise ValueError(f"data needs x_train, y_train, x_test, y_test; {k!r} is missing")
        v = torch.as_tensor(np.asarray(data[k]) if not isinstance(data[k], torch.Tensor) else data[k])
        out[k] = v.to(torch.float32) if k.startswith("x") else v.to(torch.int64)
    return out


class BatchStream:
    """Minibatch indices as a pure function of ``(seed, step)``.

    The training set is visited in epochs; epoch e is the permutation
    ``np.random.default_rng([seed, e]).permutation(n)``, and the epochs are
    concatenated into one endless sequence, cut into batches of
    ``batch_size``. So batch t is the same whether a run got there directly
    or resumed from a checkpoint.
    """

    def __init__(self, n: int, batch_size: int, seed: int):
        if not 0 < batch_size <= n:
            raise ValueError(f"batch_size must be in [1, {n}], got {batch_size}")
        self.n, self.batch_size, self.seed = n, batch_size, int(seed)
        self._epoch, self._perm = None, None

    def _permutation(self, epoch: int) -> np.ndarray:
        if epoch != self._epoch:
            self._epoch, self._perm = epoch, np.random.default_rng([self.seed, epoch]).permutation(self.n)
        return self._perm

    def indices(self, step: int) -> np.ndarray:
        """Indices of batch ``step`` (0-based), shape ``(batch_size,)``."""
        start = step * self.batch_size
        out, pos = [], start
        while pos < start + self.batch_size:
            epoch, offset = divmod(pos, self.n)
            take = min(self.n - offset, start + self.batch_size - pos)
            out.append(self._permutation(epoch)[offset:offset + take])
            pos += take
        return out[0] if len(out) == 1 else np.concatenate(out)


# --------------------------------------------------------------------------- #
# evaluation and recording
# --------------------------------------------------------------------------- #
@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor, chunk: int = 10000) -> Tuple[float, float]:
    """``(accuracy, mean cross-entropy)`` of ``model`` in eval mode on ``(x, y)``; restores the mode."""
    was_training = model.training
    model.eval()
    try:
        correct, loss = 0, 0.0
        for i in range(0, len(x), chunk):
            logits = model(x[i:i + chunk])
            correct += int((logits.argmax(1) == y[i:i + chunk]).sum())
            loss += float(F.cross_entropy(logits, y[i:i + chunk], reduction="sum"))
    finally:
        model.train(was_training)
    return correct / len(x), loss / len(x)


@torch.no_grad()
def _record(model, history: History, step: int, x_fixed: torch.Tensor, layer: int, unit: int, levels) -> None:
    was_training = model.training
    model.eval()
    try:
        t = model.trace(x_fixed)
    finally:
        model.train(was_training)
    z = t.pre_activation[layer][:, unit].double().numpy()
    u = t.linear[layer][:, unit].double().numpy()
    history._append("record_steps", step)
    history._append("percentiles", np.percentile(z, levels))
    history._append("unit_mean", z.mean())
    history._append("unit_std", z.std())
    history._append("linear_mean", u.mean())
    history._append("linear_std", u.std())
    norm = model.blocks[layer].norm
    has_bn = getattr(model.blocks[layer], "has_batch_norm", False) and norm.weight is not None
    history._append("beta", float(norm.bias[unit]) if has_bn else math.nan)
    history._append("gamma", float(norm.weight[unit]) if has_bn else math.nan)


@dataclass
class StepContext:
    """Handed to a ``callback`` after the update of step ``step`` (``step`` updates done).

    ``batch`` is the minibatch ``(x, y)`` of that update (None at step 0);
    ``optimizer`` the SGD optimizer; ``data`` the tensors of :func:`as_tensors`.
    """

    step: int
    model: nn.Module
    history: History
    optimizer: torch.optim.Optimizer
    batch: Optional[Tuple[torch.Tensor, torch.Tensor]]
    data: Dict[str, torch.Tensor]
    lr: float


def _save_checkpoint(path: Path, model, optimizer, history: History, running: Tuple[float, int]) -> None:
    tmp = path.with_name(path.name + ".tmp")
    torch.save({"model": model.state_dict(), "optimizer": optimizer.state_dict(),
                "history": history.to_dict(), "running_loss": running}, tmp)
    os.replace(tmp, path)


def _same_run(a: Mapping[str, Any], b: Mapping[str, Any]) -> bool:
    """Whether two History configs describe the same run, up to the number of steps."""
    def strip(c):
        c = json.loads(json.dumps(c, default=repr))
        c.get("train", {}).pop("steps", None)
        c.pop("key", None)
        return c
    return strip(a) == strip(b)


# --------------------------------------------------------------------------- #
# the loop
# --------------------------------------------------------------------------- #
def train(
    model: nn.Module,
    data,
    steps: int,
    batch_size: int = 60,
    lr: float = 0.5,
    seed: int = 0,
    momentum: float = 0.0,
    eval_every: int = 500,
    record_every: int = 100,
    watch: Tuple[int, int] = (-1, 0),
    record_size: int = 1000,
    percentile_levels: Sequence[float] = (15, 50, 85),
    callback: Optional[Callable[[StepContext], None]] = None,
    callback_every: int = 0,
    checkpoint: Optional[Union[str, os.PathLike]] = None,
    checkpoint_every: int = 5000,
    resume: bool = False,
    stop_on_divergence: bool = True,
    num_threads: Optional[int] = 1,
    progress: bool = False,
    description: str = "train",
) -> History:
    r"""Train ``model`` with minibatch SGD on softmax cross-entropy; return its :class:`History`.

    Parameters
    ----------
    model : an :class:`~bnkit.experiments.models.MLP` (anything with
        ``blocks`` and ``trace`` for the records; set ``record_every=0``
        for other modules). Trained in place.
    data : dict with ``x_train (n, d)``, ``y_train (n,)``, ``x_test``,
        ``y_test`` (NumPy or torch), or a name for :func:`bnkit.data.load_dataset`.
    steps : total number of SGD updates (a resumed run counts the ones done).
    batch_size : examples per update (60 in the paper).
    lr, momentum : of :class:`torch.optim.SGD`.
    seed : the minibatch order (:class:`BatchStream`); the weights are
        seeded by the model builder.
    eval_every : test accuracy and loss at step 0, every ``eval_every``
        steps and at the end.
    record_every : watched-unit records at step 0, every ``record_every``
        steps and at the end (0: never).
    watch : ``(layer, unit)`` of the watched nonlinearity (default: unit 0 of
        the last hidden layer).
    record_size : the first ``record_size`` test images form the fixed batch.
    callback, callback_every : ``callback(ctx: StepContext)`` at step 0 and
        after every ``callback_every``-th update.
    checkpoint, checkpoint_every, resume : save model, optimizer and history
        to ``checkpoint`` every ``checkpoint_every`` steps; with ``resume``
        and an existing checkpoint, continue from it.
    stop_on_divergence : stop (``history.diverged = True``) when the
        training loss is not finite.
    num_threads : torch threads during training (1: fastest for this small
        MLP, and results independent of the machine's thread count);
        restored afterwards. None leaves torch's setting alone.
    progress : show a tqdm progress bar.
    """
    if steps < 0:
        raise ValueError(f"steps must be >= 0, got {steps}")
    tensors = as_tensors(data)
    x_train, y_train = tensors["x_train"], tensors["y_train"]
    x_test, y_test = tensors["x_test"], tensors["y_test"]
    x_fixed = x_test[:record_size]
    layer, unit = watch
    levels = tuple(float(p) for p in percentile_levels)
    stream = BatchStream(len(x_train), batch_size, seed)
    optimizer = torch.optim.SGD(model.parameters(), lr=lr, momentum=momentum)

    run_config = {
        "steps": int(steps), "batch_size": int(batch_size), "lr": float(lr), "momentum": float(momentum),
        "seed": int(seed), "eval_every": int(eval_every), "record_every": int(record_every),
        "watch": [int(layer), int(unit)], "record_size": int(min(record_size, len(x_test))),
        "percentile_levels": list(levels), "n_train": int(len(x_train)), "n_test": int(len(x_test)),
    }
    history = History(config={"model": dict(getattr(model, "config", {})), "train": run_config},
                      percentiles=_empty(len(levels)))
    history.config["percentile_levels"] = list(levels)
    ckpt_path = Path(checkpoint) if checkpoint is not None else None
    start = 0
    running_loss, running_n = 0.0, 0
    if resume and ckpt_path is not None and ckpt_path.is_file():
        state = torch.load(ckpt_path, weights_only=False)
        saved = History.from_dict(state["history"])
        if _same_run(saved.config, history.config):
            model.load_state_dict(state["model"])
            optimizer.load_state_dict(state["optimizer"])
            history = saved
            history.config["train"]["steps"] = int(steps)
            start = history.steps_done
            running_loss, running_n = state.get("running_loss", (0.0, 0))
        else:
            warnings.warn(f"{ckpt_path} was written by a run with other settings; starting from step 0")

    old_threads = torch.get_num_threads()
    if num_threads is not None:
        torch.set_num_threads(num_threads)
    bar = None
    if progress:
        from tqdm.auto import tqdm
        bar = tqdm(total=steps, initial=start, desc=description, unit="step", mininterval=0.5, smoothing=0.05)
    t0, c0 = time.perf_counter(), time.process_time()
    model.train()

    def evaluate_now(step):
        acc, loss = evaluate(model, x_test, y_test)
        history._append("eval_steps", step)
        history._append("test_accuracy", acc)
        history._append("test_loss", loss)
        history._append("train_loss", running_loss / running_n if running_n else math.nan)
        if bar is not None:
            bar.set_postfix(test_acc=f"{acc:.3f}", refresh=False)

    try:
        if start == 0:
            evaluate_now(0)
            if record_every:
                _record(model, history, 0, x_fixed, layer, unit, levels)
            if callback is not None and callback_every:
                callback(StepContext(0, model, history, optimizer, None, tensors, lr))
        step = start
        for step in range(start + 1, steps + 1):
            idx = torch.from_numpy(stream.indices(step - 1))
            xb, yb = x_train[idx], y_train[idx]
            loss = F.cross_entropy(model(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            loss_value = float(loss.detach())
            if not math.isfinite(loss_value) and stop_on_divergence:
                history.diverged = True
                history.steps_done = step
                running_loss, running_n = loss_value, 1
                evaluate_now(step)
                break
            running_loss += loss_value
            running_n += 1
            if bar is not None:
                bar.update(1)
            if step % eval_every == 0 or step == steps:
                evaluate_now(step)
                running_loss, running_n = 0.0, 0
            if record_every and (step % record_every == 0 or step == steps):
                _record(model, history, step, x_fixed, layer, unit, levels)
            if callback is not None and callback_every and step % callback_every == 0:
                callback(StepContext(step, model, history, optimizer, (xb, yb), tensors, lr))
            history.steps_done = step
            if ckpt_path is not None and checkpoint_every and step % checkpoint_every == 0 and step < steps:
                history.seconds += time.perf_counter() - t0
                history.cpu_seconds += time.process_time() - c0
                t0, c0 = time.perf_counter(), time.process_time()
                _save_checkpoint(ckpt_path, model, optimizer, history, (running_loss, running_n))
    finally:
        history.seconds += time.perf_counter() - t0
        history.cpu_seconds += time.process_time() - c0
        if bar is not None:
            bar.close()
        if num_threads is not None:
            torch.set_num_threads(old_threads)
    if ckpt_path is not None and not history.diverged and history.steps_done >= steps and ckpt_path.exists():
        ckpt_path.unlink()  # finished: the history is the result, the checkpoint is no longer needed
    return history
