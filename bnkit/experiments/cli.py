"""Command line: ``python -m bnkit.experiments <command> [options]``.

Commands are registered with :func:`register`; adding one is a small
function plus its options::

    def _configure_ics(parser):
        add_common_arguments(parser)
        parser.add_argument("--depth", type=int, default=10)

    @register("ics", "Santurkar et al.'s ICS measure", _configure_ics)
    def run_ics(args) -> int:
        data = load_data(args)
        history = cached_train(args.out / f"ics-{args.data}", ...)
        ...
        return 0

:func:`cached_train` does the bookkeeping every command needs: it trains and
saves a :class:`~bnkit.experiments.History` as JSON and NPZ, reuses a finished result with the
same settings when ``--resume`` is given, and continues an interrupted run
from its checkpoint.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

__all__ = ["COMMANDS", "Command", "register", "add_common_arguments", "load_data", "cached_train",
           "build_parser", "main"]


@dataclass
class Command:
    name: str
    help: str
    configure: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


#: Registered subcommands, by name.
COMMANDS: Dict[str, Command] = {}


def register(name: str, help: str, configure: Callable[[argparse.ArgumentParser], None]):
    """Decorator: make ``run(args) -> exit code`` the subcommand ``name`` with options from ``configure(parser)``."""
    def decorator(run):
        COMMANDS[name] = Command(name, help, configure, run)
        return run
    return decorator


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    """``--data``, ``--data-dir``, ``--out``, ``--seed``, ``--resume``, ``--no-progress``."""
    from ..data import DATASETS

    parser.add_argument("--data", choices=DATASETS, default="mnist-5k",
                        help="mnist-5k: 5,000 real MNIST digits shipped with bnkit (default); "
                             "mnist / fashion-mnist: the full IDX files (see --data-dir)")
    parser.add_argument("--data-dir", type=Path, default=None,
                        help="directory with the IDX .gz files (else $BNKIT_MNIST_DIR / "
                             "$BNKIT_FASHION_MNIST_DIR / /usr/share/datasets/fashion-mnist)")
    parser.add_argument("--out", type=Path, default=Path("results"), help="output directory (default: results)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the weights and of the minibatch order")
    parser.add_argument("--resume", action="store_true",
                        help="reuse finished results with the same settings; continue interrupted runs "
                             "from their checkpoints")
    parser.add_argument("--no-progress", dest="progress", action="store_false", help="no progress bar")


def load_data(args: argparse.Namespace):
    """The data set named by ``--data`` (and ``--data-dir``), as a dict of arrays."""
    from ..data import load_dataset

    return load_dataset(args.data, args.data_dir)


def _key(model_kwargs: Mapping[str, Any], train_kwargs: Mapping[str, Any], data_name: str) -> Dict[str, Any]:
    return json.loads(json.dumps({"data": data_name, "model": dict(model_kwargs), "train": dict(train_kwargs)},
                                 default=repr))


def cached_train(stem: Path, data, data_name: str, model_kwargs: Mapping[str, Any],
                 train_kwargs: Mapping[str, Any], resume: bool = False, progress: bool = True,
                 description: str = "train", log: Callable[[str], None] = print):
    """Train ``mlp(**model_kwargs)`` with ``train(..., **train_kwargs)``, or reuse a saved result.

    Writes ``{stem}.json`` and ``{stem}.npz`` (the :class:`~bnkit.experiments.History`) and, while
    running, ``{stem}.ckpt`` (deleted when the run finishes). With ``resume``:
    a finished result whose settings equal these is loaded instead of
    trained; otherwise an existing checkpoint is continued. The settings are
    stored in ``history.config["key"]``.
    """
    from .models import mlp
    from .training import History, train

    stem = Path(stem)
    stem.parent.mkdir(parents=True, exist_ok=True)
    key = _key(model_kwargs, train_kwargs, data_name)
    json_path = stem.with_suffix(".json")
    if resume and json_path.is_file():
        old = History.load(json_path)
        if old.config.get("key") == key and (old.steps_done >= train_kwargs["steps"] or old.diverged):
            log(f"reusing {json_path}")
            return old
        log(f"{json_path} has other settings or is unfinished: training again")
    model = mlp(**model_kwargs)
    history = train(model, data, checkpoint=stem.with_suffix(".ckpt"), resume=resume, progress=progress,
                    description=description, **train_kwargs)
    history.config["key"] = key
    history.save(json_path)
    history.save(stem.with_suffix(".npz"))
    return history


# --------------------------------------------------------------------------- #
# figure1
# --------------------------------------------------------------------------- #
def _configure_figure1(parser: argparse.ArgumentParser) -> None:
    from .training import train  # noqa: F401  (fail early without torch)

    add_common_arguments(parser)
    parser.add_argument("--steps", type=int, default=50000, help="SGD steps per network (paper: 50,000)")
    parser.add_argument("--batch-size", type=int, default=60, help="examples per step (paper: 60)")
    parser.add_argument("--lr", type=float, default=FIGURE1_DEFAULTS["lr"], help="SGD learning rate")
    parser.add_argument("--init-std", type=float, default=FIGURE1_DEFAULTS["init_std"],
                        help="std of the Gaussian initial weights")
    parser.add_argument("--eval-every", type=int, default=100, help="steps between test evaluations")
    parser.add_argument("--record-every", type=int, default=100, help="steps between percentile records")


#: The settings of the book's Figure-1 reproduction (Chapter 5).
FIGURE1_DEFAULTS = {"lr": 0.1, "init_std": 0.05}


@register("figure1", "Ioffe & Szegedy's Figure 1: sigmoid MLP with and without BN", _configure_figure1)
def run_figure1(args: argparse.Namespace) -> int:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .figures import plot_beta_gamma, plot_figure1

    data = load_data(args)
    out: Path = args.out
    train_kwargs = {"steps": args.steps, "batch_size": args.batch_size, "lr": args.lr, "seed": args.seed,
                    "eval_every": args.eval_every, "record_every": args.record_every}
    histories = {}
    for label, use_bn in (("plain", False), ("bn", True)):
        model_kwargs = {"batch_norm": use_bn, "init_std": args.init_std, "seed": args.seed}
        histories[label] = cached_train(out / f"figure1-{args.data}-{label}", data, args.data, model_kwargs,
                                        train_kwargs, resume=args.resume, progress=args.progress,
                                        description=f"figure1 {label:5s}")
    plain, bn = histories["plain"], histories["bn"]
    fig = plot_figure1(plain, bn, suptitle=f"{args.data}, {args.steps} steps, batch {args.batch_size}, "
                                           f"lr {args.lr:g}, init std {args.init_std:g}")
    fig.savefig(out / f"figure1-{args.data}.png")
    plt.close(fig)
    fig = plot_beta_gamma(bn, plain)
    fig.savefig(out / f"figure1-{args.data}-beta-gamma.png")
    plt.close(fig)
    for label, h in (("plain", plain), ("BN", bn)):
        s90 = h.steps_to(0.9)
        print(f"{label:5s}: final test accuracy {100 * h.final_accuracy:.1f}%, "
              f"90% reached at step {s90 if s90 is not None else 'never'}, trained in {h.seconds:.0f} s")
    print(f"wrote {out}/figure1-{args.data}*.{{json,npz,png}}")
    return 0


# --------------------------------------------------------------------------- #
def build_parser() -> argparse.ArgumentParser:
    # Chapter 6's modules register the `ics` and `landscape` commands when imported.
    from . import ics, landscape  # noqa: F401
    parser = argparse.ArgumentParser(prog="python -m bnkit.experiments",
                                     description="The batch-norm book's experiments.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for cmd in COMMANDS.values():
        p = sub.add_parser(cmd.name, help=cmd.help, description=cmd.help)
        cmd.configure(p)
        p.set_defaults(_run=cmd.run)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Parse ``argv`` (default ``sys.argv[1:]``) and run the chosen command; returns its exit code."""
    args = build_parser().parse_args(argv)
    return int(args._run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
