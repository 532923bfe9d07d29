"""A/B of the co-moment scan's CPU per row: this tree (precision float64 and float32) against the
co-moments and row source of an earlier commit, and the bare float64 matmul — interleaved, in one
process, CPU seconds (process time, all threads), so the figures hold on a shared machine.

    OPENBLAS_NUM_THREADS=1 .venv/bin/python bench/analysis_ab.py [--rows 262144] [--before 8ddfb26]

Uses bench/analysis.py's store (built under ``--dir`` if missing).  ``OPENBLAS_NUM_THREADS=1``: on
a loaded machine a multi-threaded BLAS spends CPU waiting, which would blur the CPU figures."""
from __future__ import annotations

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def load_old(ref: str, rel: str, name: str):
    """Module ``rel`` of commit ``ref``, loaded under ``name``."""
    src = subprocess.run(["git", "-C", str(HERE.parent), "show", f"{ref}:{rel}"], capture_output=True, text=True,
                         check=True).stdout
    path = Path(tempfile.mkdtemp()) / f"{name}.py"
    path.write_text(src)
    spec = importlib.util.spec_from_file_location(name, path)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod
    spec.loader.exec_module(mod)
    return mod


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=262_144)
    ap.add_argument("--before", default="8ddfb26", help="commit whose co-moments / row source to compare")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--dir", default="/tmp/actlake-bench-analysis")
    a = ap.parse_args()
    import analysis

    import actlake
    import actlake.client.analysis as an
    import actlake.query.rowsource as rs
    from actlake.query.rangescan import RangeScan

    old_cm = load_old(a.before, "query/comoments.py", "old_comoments")
    old_rs = load_old(a.before, "query/rowsource.py", "old_rowsource")
    new_cm, new_read, new_stored = an.CoMoments, rs.StoreRows.read, RangeScan._stored
    ds = actlake.open_dataset(analysis.build(Path(a.dir), a.rows))

    def use(old: bool) -> None:
        an.CoMoments = (lambda p, q, m, prec: old_cm.CoMoments(p, q, m)) if old else new_cm
        rs.StoreRows.read = old_rs.StoreRows.read if old else new_read
        # the old aggregate takes float32 values only: no stored rows handed to it
        RangeScan._stored = staticmethod((lambda *_: False) if old else new_stored)  # type: ignore[method-assign]

    def run(what: str, prec: str) -> float:
        c = time.process_time()
        if what == "correlate":
            ds.query.correlate("a", "b", threads=a.threads, precision=prec)
        else:
            ds.query.pca("p", 10, threads=a.threads, precision=prec)
        return (time.process_time() - c) / ds.num_rows * 1e6

    def bare(what: str) -> float:
        rng, n = np.random.default_rng(1), analysis.BLOCK
        w = 512 if what == "correlate" else 768
        blocks = [(rng.standard_normal((n, w)), rng.standard_normal((n, w))) for _ in range(2)]
        if what == "pca":
            blocks = [(x, x) for x, _ in blocks]
        acc = np.zeros((w, w))
        c = time.process_time()
        for i in range(16):
            x, y = blocks[i % 2]
            acc += x.T @ y
        return (time.process_time() - c) / (16 * n) * 1e6

    res: dict = {}
    for what in ("correlate", "pca"):
        run(what, "float64")  # page cache warm
        for _ in range(a.rounds):
            for label, old, prec in (("before", True, "float64"), ("float64", False, "float64"),
                                     ("float32", False, "float32")):
                use(old)
                res.setdefault((what, label), []).append(run(what, prec))
            res.setdefault((what, "bare"), []).append(bare(what))
        use(False)
    print(f"CPU µs per row (min of {a.rounds}), {ds.num_rows:,} rows, threads={a.threads}")
    for what in ("correlate", "pca"):
        b = min(res[(what, "bare")])
        cells = "  ".join(f"{lab} {min(res[(what, lab)]):6.2f} (bare/ours {b / min(res[(what, lab)]):.2f})"
                          for lab in ("before", "float64", "float32"))
        print(f"{what:9s} bare float64 matmul {b:6.2f} | {cells}")


if __name__ == "__main__":
    main()
