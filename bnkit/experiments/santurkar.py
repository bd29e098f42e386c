r"""Santurkar et al.'s tests on the book's MLP (Chapter 6): plain, BN and noisy BN, measured over training.

:func:`run_experiment` trains the variants of one MLP from the same initial
weights and minibatches and, every ``every`` steps, measures them the way
Santurkar et al. (2018) do: on **the step's own batch, before its update**
(:func:`~bnkit.experiments.probes.next_training_batch`, with the noise of
noisy BN drawn ahead so the measurement sees the update's noise), and, as a
check, on a fresh batch of held-out test images
(:func:`~bnkit.experiments.probes.heldout_batch`, logged under ``heldout/``):

* ``"ics"`` -- :func:`~bnkit.experiments.ics.ics` (Definition 2.1);
* ``"landscape"`` -- :func:`~bnkit.experiments.landscape.landscape`
  (loss variation, gradient change, effective :math:`\beta`-smoothness);
* ``"gains"`` -- BN's :math:`\gamma^2/\sigma^2` and the norms of the weights
  feeding BN (:mod:`bnkit.experiments.gains`);
* ``"percentiles"`` -- one sigmoid input as the network saw it in training
  (:func:`percentile_callback`);
* ``"sharpness"`` -- the top Hessian eigenvalue on a fixed sample of training
  images (:func:`~bnkit.experiments.landscape.sharpness`), less often.

:func:`run_seeds` repeats it over seeds. The summaries run over a window:
the steps after every compared network has left its initial plateau
(:func:`plateau_end`, :func:`window_start`), summarised per run by the median
over the window (:func:`window_median`) and over seeds by a
:class:`~bnkit.stats.Spread`.

``python -m bnkit.experiments santurkar`` (everything), ``... ics`` and
``... landscape`` run :func:`study` from the command line; their defaults are
the functions'.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple

import numpy as np
import torch

from ..data import load_dataset
from ..stats import compare, spread
from .arguments import add_data_arguments, add_run_arguments, defaults
from .gains import gains_callback
from .ics import ics_callback
from .landscape import DEFAULT_ETA_FACTORS, landscape_callback, sharpness_callback
from .models import mlp
from .noise import advance_noise, noise_hook
from .probes import Batch, fixed_batch, heldout_batch, next_training_batch, preserved_state, weight_layers
from .runs import RESULTS_DIR, save_histories
from .training import History, as_tensors, train

__all__ = [
    "VARIANTS",
    "MEASURES",
    "DEFAULT_MEASURES",
    "DEFAULT_NOISE",
    "SHIFT_SCALE_NOISE",
    "PLATEAU_LEVEL",
    "percentile_callback",
    "measurement_callback",
    "run_experiment",
    "run_seeds",
    "plateau_end",
    "window_start",
    "series",
    "series_available",
    "window_median",
    "window_table",
    "median_jump",
    "format_table",
    "study",
    "configure_ics",
    "run_ics",
    "configure_landscape",
    "run_landscape",
    "configure_santurkar",
    "run_santurkar",
]

#: The networks Chapter 6 compares (also their labels in figures).
VARIANTS = ("plain", "BN", "noisy BN")

#: What :func:`run_experiment` can measure.
MEASURES = ("ics", "landscape", "gains", "percentiles", "sharpness")

#: What it measures unless told otherwise (the sharpness costs as much as the rest together).
DEFAULT_MEASURES = ("ics", "landscape", "gains", "percentiles")

#: Noisy BN as Santurkar et al. define it, as keyword arguments of :func:`~bnkit.experiments.noise.noise_hook`
#: (i.i.d. noise per sample and unit, mean ~ U(-1, 1) and std ~ U(0.5, 1.5) redrawn per unit at every step).
DEFAULT_NOISE = {"kind": "iid", "mean_range": 1.0, "std_range": (0.5, 1.5)}

#: The book's first noisy BN, a per-unit shift ~ U(-1, 1) and scale ~ U(1, 3) shared by the batch, plus
#: per-sample noise of std ~ U(0, 0.5).
SHIFT_SCALE_NOISE = {"kind": "shift-scale", "mean_range": 1.0, "scale_range": (1.0, 3.0), "sample_std": 0.5}

#: A network has left its initial plateau once its test accuracy reaches this.
PLATEAU_LEVEL = 0.8


def percentile_callback(x: torch.Tensor, layer: int = -1, unit: int = 0,
                        levels: Sequence[float] = (15, 50, 85), key: str = "train_percentiles") -> Callable:
    r"""A callback logging percentiles of one nonlinearity's input :math:`z` *in training mode*.

    :func:`bnkit.experiments.train` records :math:`z` in eval mode, where
    noisy BN shows its noise-free expectation; this one shows what the next
    layer saw during the step: batch statistics of ``x`` and the step's noise
    draw. Needs a model with ``trace`` (an :class:`~bnkit.experiments.MLP`).
    Logs ``key`` with values of shape ``(len(levels),)``.
    """
    def callback(ctx) -> None:
        with preserved_state(ctx.model, training=True), torch.no_grad():
            z = ctx.model.trace(x).pre_activation[layer][:, unit].double().numpy()
        ctx.history.log(key, ctx.step, np.percentile(z, levels))
    return callback


def measurement_callback(measure: Sequence[str], layers: Sequence[int],
                         eta_factors: Sequence[float] = DEFAULT_ETA_FACTORS, heldout_size: int = 60,
                         seed: int = 0, percentile_x: Optional[torch.Tensor] = None,
                         sharpness_batch: Optional[Batch] = None, sharpness_every: int = 500) -> Callable:
    """One :func:`bnkit.experiments.train` callback for the measurements named in ``measure`` (:data:`MEASURES`).

    At every call it first draws the next step's noise
    (:func:`~bnkit.experiments.noise.advance_noise`), then measures ICS
    (weight layers ``layers``) and the landscape (step sizes ``eta_factors``
    times the learning rate) on the next update's batch and, when
    ``heldout_size`` > 0, on a held-out batch of that size (keys prefixed
    ``heldout/``); BN's gains on the next update's batch; the percentiles on
    ``percentile_x``; the sharpness on ``sharpness_batch`` every
    ``sharpness_every`` steps.
    """
    unknown = set(measure) - set(MEASURES)
    if unknown:
        raise ValueError(f"unknown measures {sorted(unknown)}; choose from {MEASURES}")
    sources = {"": next_training_batch}
    if heldout_size:
        sources["heldout/"] = heldout_batch(heldout_size, seed)
    cbs = []
    for prefix, source in sources.items():
        if "ics" in measure:
            cbs.append(ics_callback(source, layers, prefix=f"{prefix}ics"))
        if "landscape" in measure:
            cbs.append(landscape_callback(source, eta_factors, prefix=f"{prefix}landscape"))
    if "gains" in measure:
        cbs.append(gains_callback(next_training_batch))
    if "percentiles" in measure:
        if percentile_x is None:
            raise ValueError("the percentiles need percentile_x")
        cbs.append(percentile_callback(percentile_x))
    if "sharpness" in measure:
        if sharpness_batch is None:
            raise ValueError("the sharpness needs sharpness_batch")
        cbs.append(sharpness_callback(sharpness_batch, sharpness_every))

    def callback(ctx) -> None:
        advance_noise(ctx.model)
        for cb in cbs:
            cb(ctx)
    return callback


def run_experiment(data="mnist-5k", steps: int = 3000, depth: int = 3, width: int = 100, lr: float = 0.5,
                   activation: str = "sigmoid", init_std: float = 0.05, every: int = 100, batch_size: int = 60,
                   layers: Optional[Sequence[int]] = None, seed: int = 0, noise: Optional[Mapping] = None,
                   variants: Sequence[str] = ("plain", "BN"), measure: Sequence[str] = DEFAULT_MEASURES,
                   eta_factors: Sequence[float] = DEFAULT_ETA_FACTORS, heldout_size: int = 60,
                   sharpness_every: int = 500, sharpness_size: int = 1000, progress: bool = False,
                   out: Optional[Path] = None, resume: bool = False) -> Dict[str, History]:
    """Train the variants of a ``depth``-hidden-layer MLP and log Chapter 6's measurements every ``every`` steps.

    Parameters
    ----------
    data : a name for :func:`bnkit.data.load_dataset` or a dict of arrays.
    steps, lr, batch_size, seed : training (:func:`bnkit.experiments.train`);
        the same seed gives every variant the same initial weights and
        minibatches (and noisy BN its noise, seeded ``1000 * seed + layer``).
    depth, width, activation, init_std : the MLP, ``784-width*depth-10``.
    variants : among :data:`VARIANTS`: ``"plain"`` (no BN), ``"BN"`` and
        ``"noisy BN"`` (BN + :func:`~bnkit.experiments.noise.noise_hook` with
        the keyword arguments ``noise``, default :data:`DEFAULT_NOISE`).
    measure : among :data:`MEASURES` (see :func:`measurement_callback`).
        ``layers``: the weight layers whose ICS is measured, indices into
        :func:`~bnkit.experiments.probes.weight_layers`; default the second
        hidden layer, a middle one and the output layer (the first has
        nothing below it, so its ICS is 0). The percentiles are those of unit
        0 of the last hidden layer on the first 1,000 test images.
    eta_factors : the landscape's step sizes, in multiples of ``lr``.
    heldout_size : size of the held-out check batch (0: no check).
    sharpness_every, sharpness_size : the sharpness is measured every
        ``sharpness_every`` steps on ``sharpness_size`` training images drawn
        once (:func:`~bnkit.experiments.probes.fixed_batch` with the seed).
    out, resume : save each history to
        ``out/run-<variant>-depth<d>-init<s>-seed<k>.json`` (variant in
        lower case, ``-`` for spaces, noisy BN followed by the noise's kind);
        with ``resume``, reuse a saved one whose settings equal these.

    Returns ``{variant: History}``; each history's ``config["experiment"]``
    holds the settings, ``config["ics_layers"]`` the measured layers' names.
    """
    unknown = (set(variants) - set(VARIANTS)) | (set(measure) - set(MEASURES))
    if unknown:
        raise ValueError(f"unknown variants or measures: {sorted(unknown)}")
    tensors = as_tensors(data)
    if layers is None:
        layers = sorted({1, (depth + 1) // 2, depth}) if depth > 0 else [0]
    layers = [int(i) for i in layers]
    noise = dict(DEFAULT_NOISE if noise is None else noise)
    sizes = [tensors["x_train"].shape[1]] + [width] * depth + [10]
    settings = {"data": data if isinstance(data, str) else "custom", "steps": int(steps), "depth": int(depth),
                "width": int(width), "lr": float(lr), "activation": activation, "init_std": float(init_std),
                "every": int(every), "batch_size": int(batch_size), "layers": layers, "seed": int(seed),
                "measure": sorted(measure), "eta_factors": [float(f) for f in eta_factors],
                "heldout_size": int(heldout_size)}
    sharp = None
    if "sharpness" in measure:
        settings.update(sharpness_every=int(sharpness_every), sharpness_size=int(sharpness_size))
        sharp = fixed_batch(tensors, sharpness_size, seed)
    results = {}
    for v in variants:
        key = json.loads(json.dumps({**settings, "variant": v, "noise": noise if v == "noisy BN" else None}))
        path = None
        if out is not None:
            slug = v.lower().replace(" ", "-") + (f"-{noise['kind']}" if v == "noisy BN" else "")
            path = Path(out) / f"run-{slug}-depth{depth}-init{init_std:g}-seed{seed}.json"
        if resume and path is not None and path.is_file():
            h = History.load(path)
            if h.config.get("experiment") == key:
                results[v] = h
                continue
        hook = noise_hook(seed=1000 * seed, **noise) if v == "noisy BN" else None
        model = mlp(sizes, batch_norm=v != "plain", activation=activation, init_std=init_std,
                    post_norm=hook, seed=seed)
        callback = measurement_callback(measure, layers, eta_factors, heldout_size, seed,
                                        tensors["x_test"][:1000], sharp, sharpness_every)
        h = train(model, tensors, steps, batch_size=batch_size, lr=lr, seed=seed, eval_every=every,
                  record_every=every, callback=callback, callback_every=every,
                  progress=progress, description=f"{v}, depth {depth}, init {init_std:g}, seed {seed}")
        h.config["ics_layers"] = [weight_layers(model)[i][0] for i in layers]
        h.config["variant"] = v
        h.config["experiment"] = key
        results[v] = h
        if path is not None:
            h.save(path)
    return results


def run_seeds(seeds: Sequence[int] = (0, 1, 2), **kwargs) -> Dict[str, List[History]]:
    """:func:`run_experiment` once per seed; returns ``{variant: [History per seed]}``."""
    seeds = [int(s) for s in seeds]
    if not seeds or len(set(seeds)) != len(seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {seeds}")
    if "seed" in kwargs:
        raise TypeError("run_seeds takes seeds, not seed")
    runs: Dict[str, List[History]] = {}
    for s in seeds:
        for v, h in run_experiment(seed=s, **kwargs).items():
            runs.setdefault(v, []).append(h)
    return runs


# --------------------------------------------------------------------------- #
# summaries
# --------------------------------------------------------------------------- #
def plateau_end(history: History, level: float = PLATEAU_LEVEL) -> Optional[int]:
    """The first evaluated step at which the test accuracy reaches ``level`` (None if never)."""
    return history.steps_to(level)


def window_start(histories: Iterable[History], level: float = PLATEAU_LEVEL) -> Optional[int]:
    """The first step at which every one of ``histories`` is past its plateau; None if one never is."""
    ends = [plateau_end(h, level) for h in histories]
    if not ends or any(e is None for e in ends):
        return None
    return max(ends)


def series(history: History, name: str) -> Tuple[np.ndarray, np.ndarray]:
    r"""``(steps, values)`` of a logged series, or of one derived from them.

    Besides every logged key (``"ics/diff_norm"``, ``"landscape/beta"``,
    ``"bn/gain_ratio"``, ...), with or without the ``heldout/`` prefix:

    * ``".../ics/relative"``: :math:`\lVert G - G'\rVert / \lVert G\rVert`;
    * ``".../landscape/loss_range"``: max minus min of the loss over the step sizes;
    * ``".../landscape/grad_change"``: the largest gradient change over the step sizes.
    """
    prefix, _, last = name.rpartition("/")
    if last == "relative":
        steps, diff = history.logged(f"{prefix}/diff_norm")
        with np.errstate(divide="ignore", invalid="ignore"):
            return steps, diff / history.logged(f"{prefix}/grad_norm")[1]
    if last == "loss_range":
        steps, loss = history.logged(f"{prefix}/loss")
        return steps, loss.max(1) - loss.min(1)
    if last == "grad_change":
        steps, diff = history.logged(f"{prefix}/grad_diff")
        return steps, diff.max(1)
    return history.logged(name)


def series_available(history: History, name: str) -> bool:
    """Whether :func:`series` can give ``name`` for ``history``."""
    try:
        series(history, name)
    except KeyError:
        return False
    return True


def window_median(history: History, name: str, start: int = 0, stop: Optional[int] = None) -> np.ndarray:
    """Median over the logged steps in ``[start, stop]`` of :func:`series` ``name`` (per column; NaNs ignored)."""
    steps, values = series(history, name)
    keep = (steps >= start) & (steps <= (steps.max() if stop is None else stop))
    if not keep.any():
        raise ValueError(f"no step of {name!r} in [{start}, {stop}]")
    return np.nanmedian(values[keep], axis=0)


def window_table(runs: Mapping[str, Sequence[History]], names: Sequence[str], start: int = 0,
                 stop: Optional[int] = None, column: Optional[int] = None) -> Dict[str, Dict[str, np.ndarray]]:
    """``{variant: {name: per-seed window medians}}`` (shape ``(seeds,)``, or ``(seeds, k)`` per layer).

    ``column`` picks one column (a layer) of multi-column series.
    """
    table = {}
    for v, hs in runs.items():
        row = {}
        for name in names:
            vals = np.array([window_median(h, name, start, stop) for h in hs])
            row[name] = vals[:, column] if column is not None and vals.ndim == 2 else vals
        table[v] = row
    return table


def median_jump(history: History, start: int = 0, key: str = "train_percentiles") -> float:
    """Mean absolute change of the recorded median (column 1 of ``key``) between consecutive records from ``start`` on.

    How far, on average, the centre of the watched unit's distribution moves
    from one record to the next: a number for "the distribution is stable".
    """
    steps, p = history.logged(key)
    mid = p[steps >= start, p.shape[1] // 2]
    if len(mid) < 2:
        raise ValueError(f"fewer than two records of {key!r} from step {start} on")
    return float(np.abs(np.diff(mid)).mean())


def format_table(rows: Mapping[str, Mapping[str, Any]], fmt: str = ".3g", width: int = 0) -> str:
    """A text table: one line per row, one column per key; sequences shown as ``mean ± std`` over seeds.

    Values may be a sequence of numbers (one per seed, shown with
    :class:`~bnkit.stats.Spread` and ``fmt``), a 2-D array (seeds x layers:
    one ``mean ± std`` per layer, separated by ``|``) or anything else (shown
    with ``str``). ``width``: the minimum width of a column.
    """
    def cell(v) -> str:
        if isinstance(v, str) or v is None:
            return str(v)
        a = np.asarray(v, dtype=np.float64)
        if a.ndim == 1:
            return format(spread(a), fmt)
        if a.ndim == 2:
            return " | ".join(format(spread(a[:, j]), fmt) for j in range(a.shape[1]))
        return str(v)

    cols = list(dict.fromkeys(c for r in rows.values() for c in r))
    cells = {r: [cell(rows[r].get(c, "")) for c in cols] for r in rows}
    w0 = max([len(r) for r in rows] + [0])
    ws = [max([len(c), width] + [len(cells[r][j]) for r in rows]) for j, c in enumerate(cols)]
    lines = ["  ".join([" " * w0] + [c.rjust(w) for c, w in zip(cols, ws)])]
    lines += ["  ".join([r.ljust(w0)] + [x.rjust(w) for x, w in zip(cells[r], ws)]) for r in rows]
    return "\n".join(lines)


# --------------------------------------------------------------------------- #
# the study and the command line
# --------------------------------------------------------------------------- #
#: The series each command summarises and plots, by measure.
_SUMMARY_SERIES = {
    "ics": ("ics/diff_norm", "ics/relative", "ics/cosine", "heldout/ics/diff_norm", "heldout/ics/cosine"),
    "landscape": ("landscape/loss_range", "landscape/grad_change", "landscape/beta",
                  "heldout/landscape/loss_range", "heldout/landscape/grad_change", "heldout/landscape/beta"),
    "gains": ("bn/gain_ratio", "bn/weight_norm"),
    "sharpness": ("sharpness/top",),
}


def _stats(values) -> Dict[str, Any]:
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 2:
        return {"per_layer": [_stats(values[:, j]) for j in range(values.shape[1])]}
    s = spread(values)
    return {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max, "values": list(s.values)}


def study(data: str = "mnist-5k", data_dir: Optional[Path] = None, seeds: Sequence[int] = (0, 1, 2),
          variants: Sequence[str] = ("plain", "BN"), measure: Sequence[str] = ("ics", "landscape", "gains"),
          level: float = PLATEAU_LEVEL, out: Path = RESULTS_DIR, resume: bool = False, progress: bool = True,
          name: str = "santurkar", log: Callable[[str], None] = print, **experiment) -> Dict[str, Any]:
    """:func:`run_seeds`, then a figure and a JSON summary over the window past every network's plateau.

    ``experiment`` goes to :func:`run_experiment` (steps, depth, lr,
    init_std, noise, ...). Writes the histories, ``<name>-runs.json.gz`` (all of
    them in one compact file, :func:`~bnkit.experiments.runs.save_histories`),
    ``<name>.png`` (each summarised series over training: mean over seeds and
    min--max band, the window shaded) and ``<name>.json``: the settings, the window's first step,
    per variant the final test accuracy and, for every summarised series,
    the per-seed medians over the window with mean, std, min and max; and for
    each pair of variants how they compare (:func:`bnkit.stats.compare`).
    Returns that summary.
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import use_book_style
    from .figures import plot_seed_bands

    use_book_style()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    arrays = load_dataset(data, data_dir)
    runs = run_seeds(seeds, data=arrays, variants=variants, measure=measure, progress=progress, out=out,
                     resume=resume, **experiment)
    start = window_start([h for hs in runs.values() for h in hs], level)
    names = [n for m in measure for n in _SUMMARY_SERIES.get(m, ())]
    names = [n for n in names if all(series_available(h, n) for hs in runs.values() for h in hs)]
    first = next(iter(runs.values()))[0]
    summary: Dict[str, Any] = {"settings": {**first.config["experiment"], "seeds": [int(s) for s in seeds],
                                            "variants": list(variants), "plateau_level": level},
                               "window_start": start, "variants": {}, "compare": {}}
    table = window_table(runs, names, start or 0)
    for v, hs in runs.items():
        summary["variants"][v] = {"final_test_accuracy": _stats([h.final_accuracy for h in hs]),
                                  "plateau_end": [plateau_end(h, level) for h in hs],
                                  **{n: _stats(table[v][n]) for n in names}}
    keys = list(runs)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            row = {}
            for n in names:
                va, vb = table[a][n], table[b][n]
                row[n] = (compare(va, vb) if va.ndim == 1
                          else [compare(va[:, j], vb[:, j]) for j in range(va.shape[1])])
            summary["compare"][f"{a} vs {b}"] = row
    (out / f"{name}.json").write_text(json.dumps(summary, indent=1) + "\n")
    save_histories(runs, out / f"{name}-runs.json.gz", meta={"summary": summary})
    if names:
        cols = min(4, len(names))
        rows = -(-len(names) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(3.6 * cols, 3.0 * rows), layout="constrained", squeeze=False)
        for ax, n in zip(axes.flat, names):
            curves = {}
            for v, hs in runs.items():
                steps, _ = series(hs[0], n)
                vals = np.stack([series(h, n)[1] for h in hs])
                curves[v] = (steps, vals if vals.ndim == 2 else vals[..., -1])
            last = "" if all(np.ndim(series(hs[0], n)[1]) == 1 for hs in runs.values()) else " (last layer)"
            plot_seed_bands(curves, ax=ax, window=start, title=n + last, logy="cosine" not in n)
        for ax in list(axes.flat)[len(names):]:
            ax.set_visible(False)
        fig.savefig(out / f"{name}.png")
        plt.close(fig)
    for v in runs:
        acc = summary["variants"][v]["final_test_accuracy"]
        log(f"{v:8s}: final test accuracy {100 * acc['mean']:.1f} ± {100 * acc['std']:.1f}% over "
            f"{len(seeds)} seeds")
    log(f"window past every plateau (test accuracy >= {level:.0%}): "
        f"{'none' if start is None else f'steps {start}-{first.steps_done}'}")
    log(f"wrote {out}/{name}.{{json,png}} and the histories")
    return summary


def _configure_study(parser: argparse.ArgumentParser) -> None:
    d, e = defaults(study), defaults(run_experiment)
    add_data_arguments(parser, study)
    add_run_arguments(parser, study)
    parser.add_argument("--seeds", type=int, nargs="+", default=list(d["seeds"]), metavar="SEED",
                        help=f"one run per seed (default: {' '.join(map(str, d['seeds']))})")
    parser.add_argument("--steps", type=int, default=e["steps"], help=f"SGD steps per network (default: {e['steps']})")
    parser.add_argument("--depth", type=int, default=e["depth"],
                        help=f"hidden layers (default: {e['depth']}, the paper's MLP)")
    parser.add_argument("--activation", default=e["activation"], choices=("sigmoid", "tanh", "relu"))
    parser.add_argument("--lr", type=float, default=e["lr"], help=f"SGD learning rate (default: {e['lr']})")
    parser.add_argument("--init-std", type=float, default=e["init_std"],
                        help=f"std of the Gaussian initial weights (default: {e['init_std']})")
    parser.add_argument("--every", type=int, default=e["every"],
                        help=f"steps between measurements (default: {e['every']})")
    parser.add_argument("--plateau-level", type=float, default=d["level"],
                        help="summaries run over the steps after every network's test accuracy reached this "
                             f"(default: {d['level']})")


def _study_kwargs(args: argparse.Namespace) -> Dict[str, Any]:
    return {"data": args.data, "data_dir": args.data_dir, "seeds": args.seeds, "level": args.plateau_level,
            "out": Path(args.out), "resume": args.resume, "progress": args.progress, "steps": args.steps,
            "depth": args.depth, "activation": args.activation, "lr": args.lr, "init_std": args.init_std,
            "every": args.every}


def configure_ics(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments ics`` (defaults: :func:`study`'s and :func:`run_experiment`'s)."""
    _configure_study(parser)
    parser.add_argument("--noisy", action="store_true", help="also train noisy BN")
    parser.add_argument("--noise", choices=("iid", "shift-scale"), default=DEFAULT_NOISE["kind"],
                        help="iid: Santurkar et al.'s i.i.d. noise per sample and unit (default); "
                             "shift-scale: a per-unit shift and scale shared by the batch")


def _slug(args: argparse.Namespace) -> str:
    return f"depth{args.depth}-init{args.init_std:g}"


def run_ics(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments ics``: ICS over training, plain vs BN (vs noisy BN), over seeds.

    Writes the histories, ``ics-depth<d>-init<s>.png`` and ``.json`` (:func:`study`) to ``--out``.
    """
    noise = DEFAULT_NOISE if args.noise == "iid" else SHIFT_SCALE_NOISE
    study(variants=VARIANTS if args.noisy else VARIANTS[:2], measure=("ics", "percentiles"), noise=noise,
          name=f"ics-{_slug(args)}" + (f"-{args.noise}" if args.noisy else ""), **_study_kwargs(args))
    return 0


def configure_landscape(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments landscape``.

    Defaults: those of :func:`study` and :func:`run_experiment`.
    """
    _configure_study(parser)
    parser.add_argument("--eta-factors", type=float, nargs="+", default=list(defaults(run_experiment)["eta_factors"]),
                        help="step sizes along the gradient, in multiples of --lr")


def run_landscape(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments landscape``: the landscape along the gradient and BN's gains, plain vs BN.

    Writes the histories, ``landscape-depth<d>-init<s>.png`` and ``.json`` (:func:`study`) to ``--out``.
    """
    study(variants=("plain", "BN"), measure=("landscape", "gains"), eta_factors=tuple(args.eta_factors),
          name=f"landscape-{_slug(args)}", **_study_kwargs(args))
    return 0


def configure_santurkar(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments santurkar``.

    Defaults: those of :func:`study` and :func:`run_experiment`.
    """
    _configure_study(parser)
    parser.add_argument("--noise", choices=("iid", "shift-scale"), default=DEFAULT_NOISE["kind"],
                        help="noisy BN's noise: iid, Santurkar et al.'s (default), or shift-scale")
    parser.add_argument("--variants", nargs="+", type=lambda v: v.replace("-", " "), choices=VARIANTS,
                        default=list(VARIANTS), help="the networks to train: plain, BN, noisy-BN (default: all three)")


def run_santurkar(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments santurkar``: every measurement on plain, BN and noisy BN, over seeds.

    Writes the histories, ``santurkar-depth<d>-init<s>-<noise>.png`` and ``.json`` (:func:`study`) to ``--out``.
    """
    noise = DEFAULT_NOISE if args.noise == "iid" else SHIFT_SCALE_NOISE
    study(variants=args.variants, measure=MEASURES, noise=noise, name=f"santurkar-{_slug(args)}-{args.noise}",
          **_study_kwargs(args))
    return 0
