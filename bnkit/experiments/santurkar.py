r"""Santurkar et al.'s tests on the book's MLP (Chapter 6): plain, BN and noisy BN, measured over training.

:func:`run_experiment` trains the variants of one MLP from the same initial
weights and minibatches and logs, every few steps, the measurements of
:mod:`bnkit.experiments.ics` and :mod:`bnkit.experiments.landscape` and the
percentiles of one sigmoid input as the network saw it in training
(:func:`percentile_callback`).

``python -m bnkit.experiments ics`` and ``... landscape`` run it from the
command line (:func:`configure_ics`, :func:`run_ics`,
:func:`configure_landscape`, :func:`run_landscape`); their defaults are
:func:`run_experiment`'s.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

import numpy as np
import torch

from .arguments import add_data_arguments, add_run_arguments, defaults, load_data
from .ics import ics_callback
from .landscape import DEFAULT_ETA_FACTORS, landscape_callback
from .models import mlp
from .noise import noise_hook
from .probes import fixed_batch, preserved_state, weight_layers
from .runs import RESULTS_DIR
from .training import History, as_tensors, train

__all__ = [
    "VARIANTS",
    "DEFAULT_NOISE",
    "percentile_callback",
    "run_experiment",
    "configure_ics",
    "run_ics",
    "configure_landscape",
    "run_landscape",
]

#: The networks Chapter 6 compares (also their labels in figures).
VARIANTS = ("plain", "BN", "noisy BN")

#: The noise of "noisy BN" when :func:`run_experiment` is given none (keyword arguments of :func:`noise_hook`).
DEFAULT_NOISE = {"mean_range": 1.0, "scale_range": (1.0, 3.0), "sample_std": 0.5}


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


def run_experiment(data="mnist-5k", steps: int = 3000, depth: int = 3, width: int = 100, lr: float = 0.5,
                   activation: str = "sigmoid", init_std: float = 0.05, every: int = 200, batch_size: int = 60,
                   measure_size: int = 60, layers: Optional[Sequence[int]] = None, seed: int = 0,
                   noise: Optional[dict] = None, variants: Sequence[str] = ("plain", "BN"),
                   measure: Sequence[str] = ("ics", "percentiles", "landscape"),
                   eta_factors: Sequence[float] = DEFAULT_ETA_FACTORS, progress: bool = False,
                   out: Optional[Path] = None, resume: bool = False) -> Dict[str, History]:
    """Train the variants of a ``depth``-hidden-layer MLP and log Chapter 6's measurements every ``every`` steps.

    Parameters
    ----------
    data : a name for :func:`bnkit.data.load_dataset` or a dict of arrays.
    steps, lr, batch_size, seed : training (:func:`bnkit.experiments.train`);
        the same seed gives every variant the same initial weights and minibatches.
    depth, width, activation, init_std : the MLP, ``784-width*depth-10``.
    variants : among ``"plain"`` (no BN), ``"BN"`` and ``"noisy BN"``
        (BN + :func:`~bnkit.experiments.noise.noise_hook` with the keyword
        arguments ``noise``, default :data:`DEFAULT_NOISE`).
    measure : among ``"ics"`` (:func:`~bnkit.experiments.ics.ics_callback` on the weight layers
        ``layers``, indices into :func:`~bnkit.experiments.probes.weight_layers`; default the second
        hidden layer, a middle one and the output layer -- the first has
        nothing below it, so its ICS is 0), ``"percentiles"``
        (:func:`percentile_callback` of unit 0 of the last hidden layer on the
        first 1,000 test images) and ``"landscape"``
        (:func:`~bnkit.experiments.landscape.landscape_callback` with
        ``eta_factors``); ICS and landscape use the fixed batch
        :func:`~bnkit.experiments.probes.fixed_batch` of ``measure_size`` training images.
    out, resume : save each history to ``out/<measures>-<variant>-depth<d>.json``
        (variant in lower case, ``-`` for spaces);
        with ``resume``, reuse a saved one that has every requested series.

    Returns ``{variant: History}``.
    """
    unknown = set(variants) - set(VARIANTS) | set(measure) - {"ics", "percentiles", "landscape"}
    if unknown:
        raise ValueError(f"unknown variants or measures: {sorted(unknown)}")
    tensors = as_tensors(data)
    xm, ym = fixed_batch(tensors, measure_size, seed)
    if layers is None:
        layers = sorted({1, (depth + 1) // 2, depth}) if depth > 0 else [0]
    sizes = [tensors["x_train"].shape[1]] + [width] * depth + [10]
    wanted = {"ics": "ics/diff_norm", "percentiles": "train_percentiles", "landscape": "landscape/beta"}
    results = {}
    for v in variants:
        slug = v.lower().replace(" ", "-")
        path = None if out is None else Path(out) / f"{'+'.join(sorted(measure))}-{slug}-depth{depth}.json"
        if resume and path is not None and path.is_file():
            h = History.load(path)
            if all(wanted[m] in h.logs for m in measure) and h.steps_done >= steps:
                results[v] = h
                continue
        hook = noise_hook(**(DEFAULT_NOISE if noise is None else noise)) if v == "noisy BN" else None
        model = mlp(sizes, batch_norm=v != "plain", activation=activation, init_std=init_std,
                    post_norm=hook, seed=seed)
        cbs = []
        if "ics" in measure:
            cbs.append(ics_callback(xm, ym, layers))
        if "percentiles" in measure:
            cbs.append(percentile_callback(tensors["x_test"][:1000]))
        if "landscape" in measure:
            cbs.append(landscape_callback(xm, ym, eta_factors))

        def callback(ctx, cbs=cbs):
            for cb in cbs:
                cb(ctx)

        h = train(model, tensors, steps, batch_size=batch_size, lr=lr, seed=seed, eval_every=every,
                  record_every=every, callback=callback, callback_every=every,
                  progress=progress, description=f"{v}, depth {depth}")
        h.config["ics_layers"] = [weight_layers(model)[i][0] for i in layers]
        h.config["variant"] = v
        results[v] = h
        if path is not None:
            h.save(path)
    return results


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
def _command_defaults(data: str = "mnist-5k", data_dir: Optional[Path] = None, out: Path = RESULTS_DIR,
                      resume: bool = False, progress: bool = True) -> None:
    """The command-line settings of the ``ics`` and ``landscape`` commands (their defaults only)."""


def _add_experiment_arguments(parser: argparse.ArgumentParser) -> None:
    d = defaults(run_experiment)
    add_data_arguments(parser, _command_defaults)
    add_run_arguments(parser, _command_defaults)
    parser.add_argument("--seed", type=int, default=d["seed"],
                        help=f"seed of the weights and of the minibatch order (default: {d['seed']})")
    parser.add_argument("--steps", type=int, default=d["steps"], help=f"SGD steps per network (default: {d['steps']})")
    parser.add_argument("--depth", type=int, default=d["depth"],
                        help=f"hidden layers (default: {d['depth']}, the paper's MLP)")
    parser.add_argument("--activation", default=d["activation"], choices=("sigmoid", "tanh", "relu"))
    parser.add_argument("--lr", type=float, default=d["lr"], help=f"SGD learning rate (default: {d['lr']})")
    parser.add_argument("--init-std", type=float, default=d["init_std"],
                        help=f"std of the Gaussian initial weights (default: {d['init_std']})")
    parser.add_argument("--every", type=int, default=d["every"],
                        help=f"steps between measurements (default: {d['every']})")


def _experiment_kwargs(args: argparse.Namespace) -> dict:
    return {"data": load_data(args), "steps": args.steps, "depth": args.depth, "lr": args.lr,
            "activation": args.activation, "init_std": args.init_std, "every": args.every, "seed": args.seed,
            "progress": args.progress, "out": Path(args.out), "resume": args.resume}


def configure_ics(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments ics`` (defaults: :func:`run_experiment`'s)."""
    _add_experiment_arguments(parser)
    parser.add_argument("--noisy", action="store_true", help="also train noisy BN")
    parser.add_argument("--noise-mean", type=float, default=DEFAULT_NOISE["mean_range"],
                        help="per-step shift ~ U(-a, a)")
    parser.add_argument("--noise-scale", type=float, default=DEFAULT_NOISE["scale_range"][1],
                        help="per-step scale ~ U(1, s)")
    parser.add_argument("--noise-sample-std", type=float, default=DEFAULT_NOISE["sample_std"],
                        help="per-sample noise, std ~ U(0, this)")


def run_ics(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments ics``: ICS over training, plain vs BN (vs noisy BN).

    Writes ``ics+percentiles-<variant>-depth<d>.json`` and ``ics-depth<d>.png`` to ``--out``
    and prints a JSON summary (final accuracy, median ICS and cosine per layer).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import use_book_style
    from .figures import plot_ics

    use_book_style()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    noise = {"mean_range": args.noise_mean, "scale_range": (DEFAULT_NOISE["scale_range"][0], args.noise_scale),
             "sample_std": args.noise_sample_std}
    variants = VARIANTS if args.noisy else VARIANTS[:2]
    res = run_experiment(noise=noise, variants=variants, measure=("ics", "percentiles"), **_experiment_kwargs(args))
    names = next(iter(res.values())).config["ics_layers"]
    fig = plot_ics(res, names, title=f"ICS (Definition 2.1), {args.depth} hidden layers")
    png = Path(args.out) / f"ics-depth{args.depth}.png"
    fig.savefig(png)
    plt.close(fig)
    summary = {v: {"final_accuracy": h.final_accuracy,
                   "median_ics": np.median(h.logged("ics/diff_norm")[1], axis=0).tolist(),
                   "median_cosine": np.median(h.logged("ics/cosine")[1], axis=0).tolist()}
               for v, h in res.items()}
    print(json.dumps({"layers": names, **summary}, indent=1))
    print(f"wrote {png}")
    return 0


def configure_landscape(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments landscape`` (defaults: :func:`run_experiment`'s)."""
    _add_experiment_arguments(parser)
    parser.add_argument("--eta-factors", type=float, nargs="+", default=list(defaults(run_experiment)["eta_factors"]),
                        help="step sizes along the gradient, in multiples of --lr")


def run_landscape(args: argparse.Namespace) -> int:
    """``python -m bnkit.experiments landscape``: the landscape along the gradient, plain vs BN.

    Writes ``landscape-<variant>-depth<d>.json`` and ``landscape-depth<d>.png``
    to ``--out`` and prints a JSON summary (final accuracy, median loss range
    over the step sizes, median effective beta-smoothness).
    """
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..plotting import use_book_style
    from .figures import plot_landscape

    use_book_style()
    Path(args.out).mkdir(parents=True, exist_ok=True)
    res = run_experiment(variants=("plain", "BN"), measure=("landscape",), eta_factors=tuple(args.eta_factors),
                         **_experiment_kwargs(args))
    fig = plot_landscape(res, title=f"{args.depth} hidden layers")
    png = Path(args.out) / f"landscape-depth{args.depth}.png"
    fig.savefig(png)
    plt.close(fig)
    summary = {}
    for v, h in res.items():
        loss = h.logged("landscape/loss")[1]
        summary[v] = {"final_accuracy": h.final_accuracy,
                      "median_loss_range": float(np.median(loss.max(1) - loss.min(1))),
                      "median_beta": float(np.median(h.logged("landscape/beta")[1]))}
    print(json.dumps(summary, indent=1))
    print(f"wrote {png}")
    return 0
