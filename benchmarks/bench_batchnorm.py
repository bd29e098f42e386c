"""Benchmark: bnkit.numpy and bnkit.torch against torch's native batch norm.

Prints one table, all figures taken in the same run (the machines are shared
and noisy, so only ratios within one run mean something; the implementations
of a case are timed in turn, round after round, see bnkit.benchmarking):

* shapes (60, 100), (4096, 1024), (32, 256, 14, 14), (64, 64, 56, 56), float32,
  the 4-D ones in both layouts (NCHW and channels-last);
* training-mode forward, and forward + backward;
* with 1 thread and with torch's default thread count;
* each time as a ratio to native torch, next to the roofline: the least time
  the bytes a kernel must move (bnkit.roofline) take at this machine's copy
  bandwidth for arrays of that size (batch norm is memory-bound).

Then two whole-model rows, each timed side by side in the same way:

* one SGD step of the Figure-1 MLP (784-100-100-100-10, batch norm after each
  hidden linear layer, sigmoid, batch 60, cross-entropy), 1 thread, with
  ``bnkit.torch.BatchNorm1d`` against ``torch.nn.BatchNorm1d``;
* an ImageNet stem under ``torch.compile`` (conv 7x7 stride 2 -> BN on
  (32, 64, 56, 56) -> ReLU -> max-pool -> conv 3x3 -> BN, forward + backward,
  2 threads): eager and compiled, with bnkit's and torch's BatchNorm2d.
  Compiling costs 15-40 s per model; ``--no-compile`` skips it.

Usage::

    python benchmarks/bench_batchnorm.py            # full table
    python benchmarks/bench_batchnorm.py --quick    # shorter timing budget
"""

from __future__ import annotations

import argparse
import time
from typing import List

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

import bnkit.torch as bnt
from bnkit import roofline
from bnkit.benchmarking import add_ratios, available_implementations, compare_times, run_cases

SHAPES = [(60, 100), (4096, 1024), (32, 256, 14, 14), (64, 64, 56, 56)]
LAYOUT_NAMES = {"channels_first": "NCHW", "channels_last": "NHWC"}


def run(budget: float, threads: List[int]) -> List[dict]:
    records = []
    for n in threads:
        records += run_cases(SHAPES, budget=budget, threads=n,
                             progress=lambda groups: tqdm(groups, desc=f"{n} thread(s)",
                                                          unit="case"))
    bandwidth = {shape: roofline.measure_copy_bandwidth(4 * int(np.prod(shape)), budget=budget)
                 for shape in SHAPES}
    for r in records:
        r["copy_GBps"] = bandwidth[r["shape"]] / 1e9
        r["roofline_s"] = roofline.roofline_time(r["bytes"], bandwidth[r["shape"]])
    return add_ratios(records, baseline="torch")


def format_table(records: List[dict]) -> str:
    impls = [i for i in available_implementations() if i != "torch"]
    head = (f"{'threads':>7} {'shape':>18} {'layout':>6} {'copy GB/s':>9} | {'mode':>16} | "
            f"{'roofline ms':>11} {'native ms':>9} | "
            + " | ".join(f"{i + ' ms':>16} {'ratio':>5}" for i in impls))
    lines = [head, "-" * len(head)]
    cases = {}
    for r in records:
        cases.setdefault((r["threads"], r["shape"], r["layout"], r["mode"]), {})[
            r["implementation"]] = r
    for (threads, shape, layout, mode), row in cases.items():
        native = row["torch"]
        lines.append(
            f"{threads:>7} {str(shape):>18} {LAYOUT_NAMES[layout] if len(shape) > 2 else '':>6} "
            f"{native['copy_GBps']:>9.1f} | {mode:>16} | {native['roofline_s'] * 1e3:>11.3f} "
            f"{native['seconds'] * 1e3:>9.3f} | "
            + " | ".join(f"{row[i]['seconds'] * 1e3:>16.3f} {row[i]['ratio']:>5.2f}"
                         for i in impls))
    return "\n".join(lines)


# --------------------------------------------------------------------------- whole models


def figure1_mlp(bn_cls, seed: int = 0) -> nn.Sequential:
    """The Figure-1 network: 784-100-100-100-10, BN after each hidden linear layer, sigmoid."""
    torch.manual_seed(seed)
    sizes = (784, 100, 100, 100, 10)
    layers = []
    for n_in, n_out in zip(sizes[:-2], sizes[1:-1]):
        layers += [nn.Linear(n_in, n_out), bn_cls(n_out), nn.Sigmoid()]
    return nn.Sequential(*layers, nn.Linear(sizes[-2], sizes[-1]))


def mlp_step(bn_cls, batch: int = 60):
    """A closure running one SGD step of :func:`figure1_mlp` on a fixed batch."""
    model = figure1_mlp(bn_cls)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    gen = torch.Generator().manual_seed(1)
    x, labels = torch.randn(batch, 784, generator=gen), torch.randint(0, 10, (batch,), generator=gen)

    def step():
        optimizer.zero_grad(set_to_none=True)
        F.cross_entropy(model(x), labels).backward()
        optimizer.step()

    return step


def stem(bn_cls, seed: int = 0) -> nn.Sequential:
    """conv 7x7 stride 2 -> BN -> ReLU -> max-pool -> conv 3x3 -> BN: the ImageNet stem."""
    torch.manual_seed(seed)
    return nn.Sequential(nn.Conv2d(3, 64, 7, stride=2, padding=3, bias=False), bn_cls(64),
                         nn.ReLU(), nn.MaxPool2d(3, 2, 1),
                         nn.Conv2d(64, 64, 3, padding=1, bias=False), bn_cls(64))


def stem_step(model, x):
    def step():
        model(x).sum().backward()

    return step


def run_models(budget: float, compile_stem: bool) -> dict:
    """The two whole-model comparisons; seconds per step, best of interleaved rounds."""
    saved = torch.get_num_threads()
    out = {}
    try:
        torch.set_num_threads(1)
        out["mlp"] = compare_times({"torch": mlp_step(nn.BatchNorm1d),
                                    "bnkit.torch": mlp_step(bnt.BatchNorm1d)}, budget=budget)
        if compile_stem:
            torch.set_num_threads(2)
            x = torch.randn(32, 3, 112, 112, generator=torch.Generator().manual_seed(2))
            fns, compile_s = {}, {}
            for name, bn_cls in (("torch", nn.BatchNorm2d), ("bnkit.torch", bnt.BatchNorm2d)):
                fns[f"eager {name}"] = stem_step(stem(bn_cls), x)
                compiled = stem_step(torch.compile(stem(bn_cls)), x)
                start = time.perf_counter()
                compiled()                                  # compile forward and backward
                compile_s[name] = time.perf_counter() - start
                fns[f"compiled {name}"] = compiled
            out["stem"] = compare_times(fns, budget=4 * budget, min_rounds=5)
            out["stem_compile_s"] = compile_s
    finally:
        torch.set_num_threads(saved)
    return out


def format_models(models: dict) -> str:
    mlp = models["mlp"]
    lines = ["Figure-1 MLP, one SGD step (batch 60, 1 thread): "
             f"torch BN {mlp['torch'] * 1e3:.3f} ms, bnkit BN {mlp['bnkit.torch'] * 1e3:.3f} ms, "
             f"ratio {mlp['bnkit.torch'] / mlp['torch']:.2f}"]
    if "stem" in models:
        t = models["stem"]
        lines.append("ImageNet stem, forward + backward (BN on (32, 64, 56, 56), 2 threads):")
        for name in ("torch", "bnkit.torch"):
            lines.append(f"  {name:>11}: eager {t[f'eager {name}'] * 1e3:8.1f} ms, compiled "
                         f"{t[f'compiled {name}'] * 1e3:8.1f} ms (compiling took "
                         f"{models['stem_compile_s'][name]:.0f} s)")
        lines.append("  bnkit compiled / bnkit eager "
                     f"{t['compiled bnkit.torch'] / t['eager bnkit.torch']:.2f}; bnkit compiled / "
                     f"torch compiled {t['compiled bnkit.torch'] / t['compiled torch']:.2f}; "
                     f"bnkit eager / torch eager {t['eager bnkit.torch'] / t['eager torch']:.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, torch.get_num_threads()}),
                        help="torch thread counts to run with (default: 1 and torch's default)")
    parser.add_argument("--no-compile", action="store_true",
                        help="skip the torch.compile stem (compiling takes 15-40 s per model)")
    parser.add_argument("--models-only", action="store_true",
                        help="only the whole-model rows (MLP step, compiled stem)")
    args = parser.parse_args(argv)
    budget = 0.15 if args.quick else 0.6
    print(f"torch {torch.__version__}, numpy {np.__version__}, float32, training mode; "
          "times are the best of repeated runs; ratio = time / native torch")
    if not args.models_only:
        records = run(budget=budget, threads=args.threads)
        print("roofline = minimal bytes (bnkit.roofline) / copy bandwidth at that size; "
              "bnkit.numpy runs on one thread whatever the thread setting")
        print(format_table(records))
    print(format_models(run_models(budget, compile_stem=not args.no_compile)))


if __name__ == "__main__":
    main()
