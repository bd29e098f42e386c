"""Ioffe & Szegedy's Figure 1 (Chapter 5): the sigmoid MLP with and without BN, one run per seed.

``python -m bnkit.experiments figure1`` runs :func:`run_figure1`:

* with one ``--seed`` (default 0), the book's Figure 1: two networks, written
  to ``figure1-<data>-{plain,bn}.{json,npz}`` and ``figure1-<data>.png``;
* with ``--seeds 0 1 2``, one such pair per seed, each under its own stem
  ``figure1-<data>-seed<s>-{plain,bn}``, then a summary over the seeds
  (:func:`summarize_figure1`) in ``figure1-<data>-seeds.json`` and the test
  accuracy as mean and min--max band in ``figure1-<data>-seeds.png``.

``--resume`` reuses every finished run with the same settings and continues
interrupted ones from their checkpoints, seed by seed.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

from ..data import load_dataset
from ..stats import compare, spread
from .arguments import add_data_arguments, add_run_arguments, defaults
from .runs import RESULTS_DIR, cached_train
from .training import History

__all__ = ["NETWORKS", "run_figure1", "summarize_figure1", "configure", "run"]

#: The two networks of the figure: label -> whether every hidden layer has BN.
NETWORKS = {"plain": False, "bn": True}


def run_figure1(data: str = "mnist-5k", data_dir: Optional[Path] = None, steps: int = 50000,
                batch_size: int = 60, lr: float = 0.1, init_std: float = 0.05, eval_every: int = 100,
                record_every: int = 100, seed: int = 0, seeds: Optional[Sequence[int]] = None,
                out: Path = RESULTS_DIR, resume: bool = False, progress: bool = True,
                log: Callable[[str], None] = print) -> Dict[int, Dict[str, History]]:
    """Train the plain and the BN network of Figure 1 for each seed; save histories, figures and a summary.

    Parameters
    ----------
    data, data_dir : the data set (:func:`bnkit.data.load_dataset`).
    steps, batch_size, lr : SGD (the paper: 50,000 steps of 60 examples).
    init_std : standard deviation of the Gaussian initial weights.
    eval_every, record_every : steps between test evaluations / percentile records.
    seed : the single run's seed (weights and minibatch order), used when
        ``seeds`` is None; its files keep the stems ``figure1-<data>-<net>``.
    seeds : one run per seed, files ``figure1-<data>-seed<s>-<net>``, then
        ``figure1-<data>-seeds.json`` (:func:`summarize_figure1`) and ``.png``.
    out, resume, progress : output directory; reuse / continue saved runs;
        tqdm progress bars.
    log : where the one-line reports go.

    Returns
    -------
    ``{seed: {"plain": History, "bn": History}}``.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import plot_accuracy_band, plot_beta_gamma, plot_figure1

    arrays = load_dataset(data, data_dir)
    out = Path(out)
    many = seeds is not None
    run_seeds = [int(s) for s in (seeds if many else [seed])]
    if not run_seeds or len(set(run_seeds)) != len(run_seeds):
        raise ValueError(f"seeds must be distinct and at least one, got {run_seeds}")
    results: Dict[int, Dict[str, History]] = {}
    for s in run_seeds:
        stem = f"figure1-{data}-seed{s}" if many else f"figure1-{data}"
        train_kwargs = {"steps": steps, "batch_size": batch_size, "lr": lr, "seed": s,
                        "eval_every": eval_every, "record_every": record_every}
        pair = {}
        for label, use_bn in NETWORKS.items():
            model_kwargs = {"batch_norm": use_bn, "init_std": init_std, "seed": s}
            tag = f"figure1 {label:5s}" + (f" seed {s}" if many else "")
            pair[label] = cached_train(out / f"{stem}-{label}", arrays, data, model_kwargs, train_kwargs,
                                       resume=resume, progress=progress, description=tag, log=log)
        results[s] = pair
        fig = plot_figure1(pair["plain"], pair["bn"],
                           suptitle=f"{data}, {steps} steps, batch {batch_size}, lr {lr:g}, "
                                    f"init std {init_std:g}" + (f", seed {s}" if many else ""))
        fig.savefig(out / f"{stem}.png")
        plt.close(fig)
        fig = plot_beta_gamma(pair["bn"], pair["plain"])
        fig.savefig(out / f"{stem}-beta-gamma.png")
        plt.close(fig)
        for label, h in (("plain", pair["plain"]), ("BN", pair["bn"])):
            s90 = h.steps_to(0.9)
            log(f"{label:5s}" + (f" seed {s}" if many else "") +
                f": final test accuracy {100 * h.final_accuracy:.1f}%, "
                f"90% reached at step {s90 if s90 is not None else 'never'}, trained in {h.seconds:.0f} s")
    if many:
        settings = {"data": data, "steps": steps, "batch_size": batch_size, "lr": lr, "init_std": init_std,
                    "eval_every": eval_every, "record_every": record_every, "seeds": run_seeds}
        summary = summarize_figure1(results, settings)
        (out / f"figure1-{data}-seeds.json").write_text(json.dumps(summary, indent=1) + "\n")
        fig = plot_accuracy_band({"plain": [results[s]["plain"] for s in run_seeds],
                                  "BN": [results[s]["bn"] for s in run_seeds]},
                                 title=f"test accuracy, {len(run_seeds)} seeds (mean, min-max band)")
        fig.savefig(out / f"figure1-{data}-seeds.png")
        plt.close(fig)
        for label in NETWORKS:
            acc = summary["summary"][label]["final_test_accuracy"]
            log(f"{label:5s} over {len(run_seeds)} seeds: final test accuracy "
                f"{100 * acc['mean']:.2f} ± {100 * acc['std']:.2f}% (min {100 * acc['min']:.2f}, "
                f"max {100 * acc['max']:.2f})")
        log(f"wrote {out}/figure1-{data}-seed*.{{json,npz,png}} and figure1-{data}-seeds.{{json,png}}")
    else:
        log(f"wrote {out}/figure1-{data}*.{{json,npz,png}}")
    return results


def _record(h: History) -> Dict[str, Any]:
    return {"final_test_accuracy": h.final_accuracy, "steps_to_90": h.steps_to(0.9),
            "steps_done": int(h.steps_done), "diverged": bool(h.diverged),
            "seconds": round(float(h.seconds), 1), "cpu_seconds": round(float(h.cpu_seconds), 1)}


def _stats(values: Sequence[float]) -> Dict[str, float]:
    s = spread(values)
    return {"mean": s.mean, "std": s.std, "min": s.min, "max": s.max}


def summarize_figure1(results: Mapping[int, Mapping[str, History]],
                      settings: Optional[Mapping[str, Any]] = None) -> Dict[str, Any]:
    """Per-seed results of :func:`run_figure1` and their spread over seeds, as JSON-ready data.

    Returns ``{"settings", "runs", "summary"}``: ``runs[seed][net]`` holds the
    final test accuracy, the first evaluated step at >= 90 % (None if never),
    steps done, divergence and training time; ``summary[net]`` the mean, std
    (``ddof=1``), min and max over seeds of the final accuracy, those of the
    steps to 90 % over the seeds that got there (``reached_90`` counts them),
    and ``summary["bn_vs_plain"]`` how BN's final accuracies stand to the plain
    ones by :func:`bnkit.stats.compare` (``"above"``: every BN seed beats every
    plain seed).
    """
    runs = {str(s): {label: _record(pair[label]) for label in NETWORKS} for s, pair in results.items()}
    summary: Dict[str, Any] = {}
    for label in NETWORKS:
        acc = [r[label]["final_test_accuracy"] for r in runs.values()]
        s90 = [r[label]["steps_to_90"] for r in runs.values() if r[label]["steps_to_90"] is not None]
        summary[label] = {"final_test_accuracy": _stats(acc), "reached_90": len(s90),
                          "steps_to_90": _stats(s90) if s90 else None}
    summary["bn_vs_plain"] = compare([r["bn"]["final_test_accuracy"] for r in runs.values()],
                                     [r["plain"]["final_test_accuracy"] for r in runs.values()])
    return {"settings": dict(settings or {}), "runs": runs, "summary": summary}


# --------------------------------------------------------------------------- #
# command line
# --------------------------------------------------------------------------- #
def configure(parser: argparse.ArgumentParser) -> None:
    """The options of ``python -m bnkit.experiments figure1`` (defaults: :func:`run_figure1`'s)."""
    d = defaults(run_figure1)
    add_data_arguments(parser, run_figure1)
    add_run_arguments(parser, run_figure1)
    which = parser.add_mutually_exclusive_group()
    which.add_argument("--seed", type=int, default=d["seed"],
                       help=f"seed of the weights and of the minibatch order (default: {d['seed']})")
    which.add_argument("--seeds", type=int, nargs="+", default=d["seeds"], metavar="SEED",
                       help="one run per seed (e.g. --seeds 0 1 2), then a JSON summary over the seeds")
    parser.add_argument("--steps", type=int, default=d["steps"],
                        help=f"SGD steps per network (default: {d['steps']}, the paper's)")
    parser.add_argument("--batch-size", type=int, default=d["batch_size"],
                        help=f"examples per step (default: {d['batch_size']}, the paper's)")
    parser.add_argument("--lr", type=float, default=d["lr"], help=f"SGD learning rate (default: {d['lr']})")
    parser.add_argument("--init-std", type=float, default=d["init_std"],
                        help=f"std of the Gaussian initial weights (default: {d['init_std']})")
    parser.add_argument("--eval-every", type=int, default=d["eval_every"],
                        help=f"steps between test evaluations (default: {d['eval_every']})")
    parser.add_argument("--record-every", type=int, default=d["record_every"],
                        help=f"steps between percentile records (default: {d['record_every']})")


def run(args: argparse.Namespace) -> int:
    """Run :func:`run_figure1` with the parsed options; returns the exit code."""
    run_figure1(data=args.data, data_dir=args.data_dir, steps=args.steps, batch_size=args.batch_size,
                lr=args.lr, init_std=args.init_std, eval_every=args.eval_every, record_every=args.record_every,
                seed=args.seed, seeds=args.seeds, out=args.out, resume=args.resume, progress=args.progress)
    return 0
