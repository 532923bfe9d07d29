"""Benchmark: correlate (512 × 512 units of two hooks) and PCA (768-wide hook) against a bare numpy
float64 matmul of the same blocks; peak RSS at two row counts.

    .venv/bin/python bench/analysis.py [--rows 5000000] [--small 1000000] [--pca-rows 2000000]

* store: DatasetWriter, bf16 hooks ``a`` [512], ``b`` [512], ``p`` [768], 8,192-row chunks, written
  once under ``--dir`` (16 distinct random blocks written cyclically: throughput does not depend on
  the values).  The smaller row count is a snapshot prefix of the same store (its first commits).
* ours: ``ds.query.correlate("a", "b")`` and ``ds.query.pca("p", 10)``, each in a fresh process
  (peak RSS = VmHWM of that process), page cache warm from writing the store (``BENCH_WARMUP=1`` adds an untimed pass).
* bare: the inner loop alone on in-memory float64 blocks of 8,192 rows: ``acc += A.T @ B`` (and
  ``A.T @ A``), same BLAS, same threads — no reading, casting or centring; measured in the same
  child process just before and after the query (mean), so both see the same machine load.
Prints rows/s side by side and the ratio (target >= 0.5), and RSS at both row counts."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
from common import RESULT_MARK, emit  # noqa: E402

BLOCK = 8192
FRAG_CHUNKS = 16


def build(root: Path, rows: int) -> str:
    import pyarrow as pa
    import torch
    from actlake.store.dtypes import tensor_to_storage
    from actlake.store.writer import DatasetWriter

    uri = str(root / f"store-{rows}")
    if (Path(uri) / "_commits" / "_last_checkpoint.json").exists():
        return uri
    shutil.rmtree(uri, ignore_errors=True)
    rng = np.random.default_rng(0)
    frag = BLOCK * FRAG_CHUNKS
    mix = rng.standard_normal((64, 512)).astype(np.float32)  # shared latent factors: a and b correlate
    pool = []
    for _ in range(FRAG_CHUNKS):
        z = rng.standard_normal((BLOCK, 64)).astype(np.float32)
        a = z @ mix + rng.standard_normal((BLOCK, 512)).astype(np.float32)
        b = z @ mix[:, ::-1] + rng.standard_normal((BLOCK, 512)).astype(np.float32)
        p = np.concatenate([a, b[:, :256]], 1)
        pool.append({k: tensor_to_storage(torch.from_numpy(v), "bfloat16") for k, v in (("a", a), ("b", b), ("p", p))})
    block = {k: np.concatenate([pl[k] for pl in pool]) for k in ("a", "b", "p")}
    w = DatasetWriter(uri, {"a": ((512,), "bfloat16"), "b": ((512,), "bfloat16"), "p": ((768,), "bfloat16")},
                      chunk_rows=BLOCK)
    for start in range(0, rows, frag):
        n = min(frag, rows - start)
        rid = np.arange(start, start + n)
        prov = pa.table({"doc_id": rid // 4096, "context_id": rid // 1024, "context_pos": (rid % 1024).astype(np.int32),
                         "token_id": (rid % 50000).astype(np.int32)})
        w.add({k: v[:n] for k, v in block.items()}, prov)
    return w.close()


def prefix(uri: str, rows: int) -> str:
    """A store folder whose snapshot is the first commits (>= rows) of ``uri`` (fragments shared)."""
    src = Path(uri)
    dst = src.with_name(f"{src.name}-prefix-{rows}")
    if dst.exists():
        return str(dst)
    tmp = dst.with_name(dst.name + ".tmp")
    shutil.rmtree(tmp, ignore_errors=True)
    (tmp / "_commits").mkdir(parents=True)
    shutil.copy(src / "actlake.json", tmp / "actlake.json")
    (tmp / "fragments").symlink_to(src / "fragments")
    total, v = 0, 0
    while total < rows:
        c = src / "_commits" / f"{v:020d}.json"
        total += json.loads(c.read_text())["fragment"]["num_rows"]
        shutil.copy(c, tmp / "_commits" / c.name)
        v += 1
    tmp.rename(dst)
    return str(dst)


def run_query(uri: str, what: str, threads: int) -> None:
    """Child process: one warm-up pass, then the timed one; emits rows/s and peak RSS."""
    import actlake

    ds = actlake.open_dataset(uri)
    fn = (lambda: ds.query.correlate("a", "b", threads=threads)) if what == "correlate" else \
        (lambda: ds.query.pca("p", 10, threads=threads))
    if os.environ.get("BENCH_WARMUP", "0") == "1":
        fn()  # page cache warm-up (off by default: the store was just written, and this is compute-bound)
    b0 = bare(what)["rows_per_s"]  # the bare loop right before and after, in this process:
    t = time.perf_counter()        # on a shared machine both see the same contention
    fn()
    dt = time.perf_counter() - t
    b1 = bare(what)["rows_per_s"]
    emit({"rows": ds.num_rows, "seconds": dt, "rows_per_s": ds.num_rows / dt, "bare_rows_per_s": (b0 + b1) / 2})


def bare(what: str, reps: int = 48) -> dict:
    """rows/s of ``acc += A.T @ B`` (correlate) / ``acc += A.T @ A`` (PCA) on float64 blocks."""
    rng = np.random.default_rng(1)
    if what == "correlate":
        blocks = [(rng.standard_normal((BLOCK, 512)), rng.standard_normal((BLOCK, 512))) for _ in range(4)]
        acc = np.zeros((512, 512))
    else:
        x = [rng.standard_normal((BLOCK, 768)) for _ in range(4)]
        blocks = [(a, a) for a in x]
        acc = np.zeros((768, 768))
    for a, b in blocks:
        acc += a.T @ b
    t = time.perf_counter()
    for i in range(reps):
        a, b = blocks[i % len(blocks)]
        acc += a.T @ b
    dt = time.perf_counter() - t
    return {"rows_per_s": reps * BLOCK / dt}


def child(uri: str, what: str, threads: int) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, "--uri", uri, "--threads", str(threads)],
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out.split(RESULT_MARK)[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="rows of the correlate store")
    ap.add_argument("--small", type=int, default=1_000_000, help="second row count (RSS check)")
    ap.add_argument("--pca-rows", type=int, default=None, help="rows for PCA (default: --rows)")
    ap.add_argument("--threads", type=int, default=2, help="query threads (default 2 = this machine's cores)")
    ap.add_argument("--dir", default="/tmp/actlake-bench-analysis")
    ap.add_argument("--child", default=None)
    ap.add_argument("--uri", default=None)
    a = ap.parse_args()
    if a.child:
        return run_query(a.uri, a.child, a.threads)
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    big = build(root, a.rows)
    print(f"store: {big} ({a.rows:,} rows; built/checked in {time.perf_counter() - t:.0f} s)", flush=True)
    small = prefix(big, a.small)
    res = {}
    for what in ("correlate", "pca"):
        runs = {n: child(u, what, a.threads) for n, u in (("small", small), ("big", big))}
        res[what] = runs
        r = runs["big"]
        b = {"rows_per_s": r["bare_rows_per_s"]}
        print(f"{what:9s}: ours {r['rows_per_s'] / 1e6:6.3f} M rows/s ({r['rows']:,} rows, {r['seconds']:.1f} s)  "
              f"bare float64 matmul {b['rows_per_s'] / 1e6:6.3f} M rows/s  ratio {r['rows_per_s'] / b['rows_per_s']:.2f}  "
              f"| peak RSS {runs['small']['peak_rss_mb']:.0f} MB at {runs['small']['rows']:,} rows, "
              f"{r['peak_rss_mb']:.0f} MB at {r['rows']:,} rows", flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
