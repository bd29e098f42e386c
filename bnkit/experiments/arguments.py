"""Command-line options shared by the experiment commands, with defaults taken from the experiments.

An experiment is a function with keyword defaults (``run_figure1(steps=50000,
...)``); its command's options take those defaults from the function's
signature (:func:`defaults`), so each default is written once, in the
experiment.
"""

from __future__ import annotations

import argparse
import inspect
from pathlib import Path
from typing import Any, Callable, Dict

__all__ = ["defaults", "add_data_arguments", "add_run_arguments", "load_data"]


def defaults(func: Callable) -> Dict[str, Any]:
    """``{parameter: default}`` of every parameter of ``func`` that has one."""
    return {name: p.default for name, p in inspect.signature(func).parameters.items()
            if p.default is not inspect.Parameter.empty}


def add_data_arguments(parser: argparse.ArgumentParser, experiment: Callable) -> None:
    """``--data`` and ``--data-dir``, defaults from ``experiment``'s ``data`` and ``data_dir``."""
    from ..data import DATASETS

    d = defaults(experiment)
    parser.add_argument("--data", choices=DATASETS, default=d["data"],
                        help="mnist-5k: 5,000 real MNIST digits shipped with bnkit; "
                             f"mnist / fashion-mnist: the full IDX files (see --data-dir) (default: {d['data']})")
    parser.add_argument("--data-dir", type=Path, default=d.get("data_dir"),
                        help="directory with the IDX .gz files (else $BNKIT_MNIST_DIR / "
                             "$BNKIT_FASHION_MNIST_DIR / /usr/share/datasets/fashion-mnist)")


def add_run_arguments(parser: argparse.ArgumentParser, experiment: Callable) -> None:
    """``--out``, ``--resume`` and ``--no-progress``, defaults from ``experiment``'s ``out``, ``resume``, ``progress``."""
    d = defaults(experiment)
    parser.add_argument("--out", type=Path, default=d["out"], help=f"output directory (default: {d['out']})")
    parser.add_argument("--resume", action="store_true", default=d["resume"],
                        help="reuse finished results with the same settings; continue interrupted runs "
                             "from their checkpoints")
    parser.add_argument("--no-progress", dest="progress", action="store_false", default=d["progress"],
                        help="no progress bar")


def load_data(args: argparse.Namespace):
    """The data set named by ``--data`` (and ``--data-dir``), as a dict of arrays."""
    from ..data import load_dataset

    return load_dataset(args.data, args.data_dir)
