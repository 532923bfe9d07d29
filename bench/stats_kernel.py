"""CPU per block of the stats pass: the compiled one-pass ``ValueStats`` vs the numpy aggregates it
replaced (``Combined(Moments, Density, RowSummary)``), side by side in one process, on one in-memory
block (no I/O), interleaved repeats; prints ms per block, CPU s per GB of float32 and the ratio.

    .venv/bin/python bench/stats_kernel.py [--rows 8192] [--width 512] [--repeats 20] [--dtype float32|bfloat16]
"""
from __future__ import annotations

import argparse
import time

import numpy as np

from actlake.query import kernels
from actlake.query.aggregates import Block, Combined, Density, Moments, RowSummary, ValueStats
from actlake.query.values import to_float32


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--rows", type=int, default=8192, help="rows per block (default 8192, a chunk)")
    p.add_argument("--width", type=int, default=512, help="values per row (default 512)")
    p.add_argument("--repeats", type=int, default=20, help="interleaved repeats (default 20)")
    p.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="stored dtype (default float32)")
    a = p.parse_args()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal((a.rows, a.width), dtype=np.float32) * 3 + 1)
    stored = x if a.dtype == "float32" else (x.view(np.uint32) >> 16).astype(np.uint16)
    print(f"compiled kernels loaded in {kernels.warm():.2f} CPU s (once per process)")
    new = ValueStats(a.width, 0.0, rows=True)
    old = Combined({"m": Moments(a.width), "d": Density(a.width), "r": RowSummary()})

    def run_new() -> None:
        new.update(new.zero(), Block(stored, np.arange(a.rows), stored))

    def run_old() -> None:  # the numpy path widened bf16 chunks first
        v = to_float32(stored, a.dtype)
        old.update(old.zero(), Block(v, np.arange(a.rows), v))

    times: dict[str, list[float]] = {"numpy aggregates": [], "compiled pass": []}
    for _ in range(a.repeats):
        for name, f in (("numpy aggregates", run_old), ("compiled pass", run_new)):
            t = time.process_time()
            f()
            times[name].append(time.process_time() - t)
    gb = a.rows * a.width * 4 / 1e9  # per GB of float32 values
    med = {k: float(np.median(v)) for k, v in times.items()}
    for k, v in med.items():
        print(f"{k:18s} {v * 1e3:7.2f} ms per block   {v / gb:.3f} CPU s/GB of float32 values")
    print(f"compiled pass / numpy: {med['compiled pass'] / med['numpy aggregates']:.2f}x the CPU "
          f"({a.rows} x {a.width} {a.dtype}, median of {a.repeats})")


if __name__ == "__main__":
    main()
