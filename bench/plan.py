"""Unit plan at scale: plan time and coordinator memory for 10^7 … 10^10 tokens.

    .venv/bin/python bench/plan.py [--files 100000] [--scales 1e7,1e8,1e9,1e10]

A synthetic source of ``--files`` jsonl files (sparse files: sizes are real to ``stat``, no disk is
used) sized to ``4 bytes × tokens / files`` each.  For each scale a fresh process builds the real
``Coordinator`` (``plan: shards``, default ``fragment_tokens``) over that source: the coordinator
lists and stats the files, cuts byte ranges and holds one small record per unit; no document is read
and no token is held (workers tokenize).  Printed per scale: files, units, plan seconds, the
process's peak RSS and its growth over the baseline (Python + actlake + Ray imports).
Targets (issue 9): 10^10 tokens planned in < 60 s with coordinator RSS < 1 GB."""
from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BYTES_PER_TOKEN = 4


def _rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(src: str, out: str) -> dict:
    """In this process: build the Coordinator over ``src`` and report time and memory."""
    from actlake.schemas.job import parse_job
    from actlake.service.coordinator import Coordinator

    job = parse_job({"model": "smollm2-135m", "hooks": ["model.layers.9"], "out": out, "plan": "shards",
                     "data": {"type": "jsonl", "path": src}})
    base = _rss_mb()
    t0 = time.perf_counter()
    coord = Coordinator(job)
    dt = time.perf_counter() - t0
    st = coord.status()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"units": st["units_left"], "tokens_planned": st["tokens_total"], "plan_s": dt,
            "rss_mb": _rss_mb(), "peak_rss_mb": peak, "rss_growth_mb": _rss_mb() - base}


def make_source(root: Path, files: int) -> list[Path]:
    paths = []
    for i in range(files):
        d = root / f"{i // 1000:03d}"
        if i % 1000 == 0:
            d.mkdir(parents=True, exist_ok=True)
        p = d / f"part-{i:06d}.jsonl"
        p.touch()
        paths.append(p)
    return paths


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=100_000)
    ap.add_argument("--scales", default="1e7,1e8,1e9,1e10")
    ap.add_argument("--measure", nargs=2, metavar=("SRC", "OUT"), help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.measure:
        print(json.dumps(measure(*a.measure)))
        return
    root = Path(tempfile.mkdtemp(prefix="actlake-plan-"))
    try:
        t0 = time.perf_counter()
        paths = make_source(root / "src", a.files)
        print(f"synthetic source: {a.files:,} sparse jsonl files ({time.perf_counter() - t0:.1f}s to create)")
        print(f"{'tokens':>8} {'files':>8} {'units':>9} {'plan s':>8} {'RSS MB':>8} {'peak MB':>8} {'growth MB':>10}")
        for scale in [float(x) for x in a.scales.split(",")]:
            size = max(1, int(scale * BYTES_PER_TOKEN / a.files))
            for p in paths:
                os.truncate(p, size)
            out = root / f"out-{scale:.0e}"
            res = subprocess.run([sys.executable, __file__, "--measure", str(root / "src"), str(out)],
                                 capture_output=True, text=True, check=True)
            r = json.loads(res.stdout.strip().splitlines()[-1])
            print(f"{scale:>8.0e} {a.files:>8,} {r['units']:>9,} {r['plan_s']:>8.2f} {r['rss_mb']:>8.0f} "
                  f"{r['peak_rss_mb']:>8.0f} {r['rss_growth_mb']:>10.1f}", flush=True)
    finally:
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
