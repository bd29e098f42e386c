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

Usage::

    python benchmarks/bench_batchnorm.py            # full table
    python benchmarks/bench_batchnorm.py --quick    # shorter timing budget
"""

from __future__ import annotations

import argparse
from typing import List

import numpy as np
import torch
from tqdm import tqdm

from bnkit import roofline
from bnkit.benchmarking import add_ratios, available_implementations, run_cases

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


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    parser.add_argument("--threads", type=int, nargs="+",
                        default=sorted({1, torch.get_num_threads()}),
                        help="torch thread counts to run with (default: 1 and torch's default)")
    args = parser.parse_args(argv)
    records = run(budget=0.15 if args.quick else 0.6, threads=args.threads)
    print(f"torch {torch.__version__}, numpy {np.__version__}, float32, training mode; "
          "times are the best of repeated runs; ratio = time / native torch")
    print("roofline = minimal bytes (bnkit.roofline) / copy bandwidth at that size; "
          "bnkit.numpy runs on one thread whatever the thread setting")
    print(format_table(records))


if __name__ == "__main__":
    main()
