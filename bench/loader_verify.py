#!/usr/bin/env python
"""What ``verify_reads`` costs in the first shuffled epoch of a fresh process (issue 7 D).

    .venv/bin/python bench/loader_verify.py STORE [--repeat 5] [--batch 4096]

Each variant a full epoch in its own fresh process, interleaved repeat by repeat so that other
work on the machine hits them alike, on both read paths (``staged``: the local store read the way
object stores are, forced as tests/test_shuffle_paths.py does):
  off     ``verify_reads=False``;
  whole   each chunk read in ranges is checked whole once (direct: mapped and CRC'd on the I/O
          threads, the default; staged: read again whole, the previous design);
  ranges  CRC-32C of the byte ranges the loader reads, combined per chunk (client/chunk_checks.py;
          the default on the staged path, ``DirectWindow.range_checks`` on the direct path).
Prints rows/s and CPU s/GB (user + sys of the process) per run, the medians, and the ratios of
the medians to ``off``."""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

import numpy as np


def _one(store: str, variant: str, batch: int) -> dict:
    import torch  # noqa: F401  (imported before the clock starts, as a trainer has it)

    import actlake
    from actlake.client import chunk_checks
    from actlake.client.windows import DirectWindow

    path, check = variant.split("-")
    if check == "whole":
        chunk_checks.RangeChecks.has_crc = lambda self, *k: False  # type: ignore[method-assign]
    DirectWindow.range_checks = check == "ranges"
    t0, r0 = time.perf_counter(), resource.getrusage(resource.RUSAGE_SELF)
    ds = actlake.open_dataset(store, verify_reads=check != "off")
    s = ds.batches(batch, hooks=[next(iter(ds.hooks))], seed=1)
    if path == "staged":
        s._direct = False
    rows = sum(len(b[s.hooks[0]]) for b in s)
    wall = time.perf_counter() - t0
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    gb = rows * ds.manifest.hooks[s.hooks[0]].row_bytes / 1e9
    return {"rows_s": rows / wall, "cpu_s_gb": cpu / gb, "direct": s._direct,
            "layout": [s.block_rows, s.buffer_rows]}


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_one":
        print(json.dumps(_one(sys.argv[2], sys.argv[3], int(sys.argv[4]))))
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("store")
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--batch", type=int, default=4096)
    a = p.parse_args()
    variants = [f"{p}-{c}" for p in ("direct", "staged") for c in ("off", "whole", "ranges")]
    got: dict[str, list[dict]] = {v: [] for v in variants}
    for r in range(a.repeat):
        for v in variants:
            out = subprocess.run([sys.executable, __file__, "_one", a.store, v, str(a.batch)], capture_output=True,
                                 text=True, check=True).stdout.strip().splitlines()[-1]
            res = json.loads(out)
            got[v].append(res)
            print(f"#{r + 1} {v:13s} {res['rows_s']:>12,.0f} rows/s  {res['cpu_s_gb']:.3f} CPU s/GB  "
                  f"layout {res['layout']} {'direct' if res['direct'] else 'staged'}  "
                  f"load {open('/proc/loadavg').read().split()[0]}", flush=True)
    med = {v: (float(np.median([x["rows_s"] for x in got[v]])), float(np.median([x["cpu_s_gb"] for x in got[v]])))
           for v in variants}
    print("\nmedians (ratio of rows/s to the same path with checks off; CPU s/GB added over it):")
    for v in variants:
        off = med[v.split("-")[0] + "-off"]
        print(f"  {v:13s} {med[v][0]:>12,.0f} rows/s  {med[v][0] / off[0]:.2f}x  "
              f"{med[v][1]:.3f} CPU s/GB  ({med[v][1] - off[1]:+.3f})")


if __name__ == "__main__":
    main()
