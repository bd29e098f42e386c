"""Benchmark: bnkit.numpy and bnkit.torch against torch's native batch norm.

Prints one table, all figures taken in the same run (the machines are shared
and noisy, so only ratios within one run mean something):

* shapes (60, 100), (4096, 1024), (32, 256, 14, 14), (64, 64, 56, 56), float32;
* training-mode forward, and forward + backward;
* with 1 thread and with torch's default thread count;
* each time as a ratio to native torch, and the machine's copy bandwidth
  (a plain copy of an array of the same size) to read each figure against
  the memory limit: batch norm is memory-bound.

Usage::

    python benchmarks/bench_batchnorm.py            # full table
    python benchmarks/bench_batchnorm.py --quick    # fewer repeats
"""

from __future__ import annotations

import argparse
import time
from typing import Callable, Dict, List

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import bnkit.numpy as bnp
import bnkit.torch as bnt

SHAPES = [(60, 100), (4096, 1024), (32, 256, 14, 14), (64, 64, 56, 56)]


def best_time(fn: Callable[[], object], budget: float) -> float:
    """Minimum wall time of ``fn`` over repeats filling about ``budget`` seconds."""
    fn()  # warm up (allocations, lazy initialisation)
    times: List[float] = []
    deadline = time.perf_counter() + budget
    while len(times) < 3 or (time.perf_counter() < deadline and len(times) < 200):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def cases(shape, seed: int = 0) -> Dict[str, Dict[str, Callable[[], object]]]:
    """The timed closures for one shape: {implementation: {"fwd": f, "fwd+bwd": f}}."""
    rng = np.random.default_rng(seed)
    c = shape[1]
    x_np = rng.standard_normal(shape, dtype=np.float32)
    g_np = rng.standard_normal(shape, dtype=np.float32)
    w_np = np.ones(c, np.float32)
    b_np = np.zeros(c, np.float32)
    rm_np, rv_np = np.zeros(c, np.float32), np.ones(c, np.float32)
    x_t, g_t = torch.from_numpy(x_np), torch.from_numpy(g_np)
    w_t = torch.ones(c, requires_grad=True)
    b_t = torch.zeros(c, requires_grad=True)
    rm_t, rv_t = torch.zeros(c), torch.ones(c)

    def numpy_fwd():
        return bnp.batch_norm(x_np, rm_np, rv_np, w_np, b_np, training=True)

    def numpy_fwd_bwd():
        numpy_fwd()
        return bnp.batch_norm_backward(g_np, x_np, w_np)

    def torch_fn(fn, backward):
        def run():
            x = x_t.detach().requires_grad_(backward)
            if backward:
                y = fn(x, rm_t, rv_t, w_t, b_t, training=True)
                y.backward(g_t)
                return y
            with torch.no_grad():
                return fn(x, rm_t, rv_t, w_t, b_t, training=True)
        return run

    return {
        "native": {"fwd": torch_fn(F.batch_norm, False), "fwd+bwd": torch_fn(F.batch_norm, True)},
        "bnkit.torch": {"fwd": torch_fn(bnt.batch_norm, False),
                        "fwd+bwd": torch_fn(bnt.batch_norm, True)},
        "bnkit.numpy": {"fwd": numpy_fwd, "fwd+bwd": numpy_fwd_bwd},
    }


def copy_bandwidth(shape, budget: float) -> float:
    """GB/s of a plain float32 copy of an array of ``shape`` (read + write counted)."""
    src = np.ones(shape, np.float32)
    dst = np.empty_like(src)
    t = best_time(lambda: np.copyto(dst, src), budget)
    return 2 * src.nbytes / t / 1e9


def run(budget: float) -> List[dict]:
    default_threads = torch.get_num_threads()
    rows = []
    configs = [(threads, shape) for threads in sorted({1, default_threads}) for shape in SHAPES]
    for threads, shape in tqdm(configs, desc="benchmark", unit="config"):
        torch.set_num_threads(threads)
        timed = cases(shape)
        row = {"threads": threads, "shape": shape, "copy_GBps": copy_bandwidth(shape, budget)}
        for impl, fns in timed.items():
            for mode, fn in fns.items():
                row[(impl, mode)] = best_time(fn, budget)
        rows.append(row)
    torch.set_num_threads(default_threads)
    return rows


def format_table(rows: List[dict]) -> str:
    head = (f"{'threads':>7} {'shape':>18} {'copy GB/s':>9} | {'mode':>7} | {'native ms':>9} "
            f"{'bnkit.torch ms':>14} {'ratio':>6} | {'bnkit.numpy ms':>14} {'ratio':>6}")
    lines = [head, "-" * len(head)]
    for row in rows:
        for mode in ("fwd", "fwd+bwd"):
            native = row[("native", mode)]
            bt, bn = row[("bnkit.torch", mode)], row[("bnkit.numpy", mode)]
            lines.append(
                f"{row['threads']:>7} {str(row['shape']):>18} {row['copy_GBps']:>9.1f} | "
                f"{mode:>7} | {native * 1e3:>9.3f} {bt * 1e3:>14.3f} {bt / native:>6.2f} | "
                f"{bn * 1e3:>14.3f} {bn / native:>6.2f}")
    return "\n".join(lines)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing budget")
    args = parser.parse_args(argv)
    rows = run(budget=0.15 if args.quick else 0.6)
    print(f"torch {torch.__version__}, numpy {np.__version__}, float32, training mode; "
          "times are the best of repeated runs; ratio = time / native torch")
    print("bnkit.numpy runs on one thread whatever the thread setting (NumPy element-wise ops)")
    print(format_table(rows))


if __name__ == "__main__":
    main()
