#!/usr/bin/env python
"""CPU seconds of shuffled epochs over a small local store, per read path (warm page cache).

    .venv/bin/python bench/loader_cpu.py [STORE] [--reps N]

For A/B checks of refactors that must not cost CPU: run it once with this checkout and once with
another checkout first on the import path, e.g. ``git archive OLD | tar -x -C /tmp/old`` plus links
``/tmp/old/actlake/{client,store,...} -> ../{client,store,...}``, then ``PYTHONPATH=/tmp/old
.venv/bin/python bench/loader_cpu.py`` (docs/performance.md).  CPU time is ``time.process_time()``
(all threads of the process), which the other load on a shared machine disturbs far less than
wall-clock time; each case prints the minimum over ``--reps`` epochs."""
from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

from stores import make_store  # noqa: E402  (tests/stores.py: a real store through DatasetWriter)

import actlake  # noqa: E402

CASES = {
    "direct (default)": ({}, True),
    "staged": ({}, False),
    "staged, block_rows=16": ({"block_rows": 16, "buffer_rows": 16384}, False),
    "filter (staged)": ({"filter": {"min_position": 1}}, None),
    "with_provenance, 2 ranks": ({"with_provenance": True, "world_size": 2, "rank": 1}, None),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("store", nargs="?", default="/tmp/actlake-bench-loader-cpu")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--only", default="", help="run only the cases whose name contains this")
    a = ap.parse_args()
    if not os.path.exists(a.store):
        make_store(a.store, fragments=(20_000,) * 10, dim=256, chunk_rows=4096, ctx_len=64)
    ds = actlake.open_dataset(a.store)
    print(f"actlake from {os.path.dirname(actlake.__file__)}; {ds.num_rows:,} rows; load {os.getloadavg()[0]:.1f}")
    for name, (kw, direct) in CASES.items():
        if a.only not in name:
            continue
        best, n = float("inf"), 0
        for rep in range(a.reps + 1):  # the first epoch warms the page cache and the buffers
            s = ds.batches(4096, seed=rep, **kw)
            if direct is not None:
                s._direct = direct
            t = time.process_time()
            n = sum(len(b["h"]) for b in s)
            if rep:
                best = min(best, time.process_time() - t)
        print(f"{name:28} {n:>9,} rows  {best:6.3f} CPU s/epoch")
    if a.only and a.only not in "take":
        return
    ids = np.random.default_rng(0).choice(ds.num_rows, 4096, replace=False)
    t = time.process_time()
    for _ in range(5):
        ds.take(ids)
    print(f"{'take 4,096 random rows':28} {'':>14}  {(time.process_time() - t) / 5:6.3f} CPU s/call")


if __name__ == "__main__":
    main()
