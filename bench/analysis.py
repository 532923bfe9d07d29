"""Benchmark: correlate (512 × 512 units of two hooks) and PCA (768-wide hook) against a bare numpy
float64 matmul of the same blocks; peak RSS at two row counts.

    .venv/bin/python bench/analysis.py [--rows 5000000] [--small 1000000] [--pca-rows N] [--quick]

* store: DatasetWriter, bf16 hooks ``a`` [512], ``b`` [512], ``p`` [768], 8,192-row chunks, written
  once under ``--dir`` with max(--rows, --pca-rows) rows (16 distinct random blocks written
  cyclically: throughput does not depend on the values).  Every other row count is a snapshot prefix
  of the same store (its first commits).  5 M rows = 18 GB on disk.
* ours: ``ds.query.correlate("a", "b")`` and ``ds.query.pca("p", 10)``, with ``precision="float64"``
  (default) and ``"float32"`` (float32 products of shifted blocks, merged in float64), each
  in a fresh process (peak RSS = VmHWM of that process), page cache as left by writing the store
  (``BENCH_WARMUP=1`` adds an untimed pass).
* bare: the inner loop alone on in-memory float64 blocks of 8,192 rows: ``acc += A.T @ B`` (and
  ``A.T @ A``), same BLAS, at the faster of BLAS's own threads and 2 threads × 1 BLAS thread (see
  ``bare``) — no reading, casting or centring; measured in the same
  child process just before and after the query (mean), so both see the same machine load.
Prints, per analysis and precision, rows/s side by side with the ratio (target >= 0.5), CPU seconds
per million rows (process time, all threads: meaningful on a shared machine, where wall-clock ratios
are not), and peak RSS at both row counts."""
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
    manifest = json.loads((tmp / "actlake.json").read_text())  # a complete job of the prefix's size
    manifest.update(num_rows=total, num_fragments=v)
    (tmp / "actlake.json").write_text(json.dumps(manifest))
    tmp.rename(dst)
    return str(dst)


def run_query(uri: str, what: str, threads: int, precision: str) -> None:
    """Child process: the timed query between two bare-matmul measurements; emits rows/s, CPU
    seconds and peak RSS."""
    import actlake

    ds = actlake.open_dataset(uri)
    fn = (lambda: ds.query.correlate("a", "b", threads=threads, precision=precision)) if what == "correlate" else \
        (lambda: ds.query.pca("p", 10, threads=threads, precision=precision))
    if os.environ.get("BENCH_WARMUP", "0") == "1":
        fn()  # page cache warm-up (off by default: the store was just written, and this is compute-bound)
    b0 = bare(what)  # the bare loop right before and after, in this process:
    t, c = time.perf_counter(), time.process_time()  # on a shared machine both see the same contention
    fn()
    dt, dc = time.perf_counter() - t, time.process_time() - c
    b1 = bare(what)
    emit({"rows": ds.num_rows, "seconds": dt, "rows_per_s": ds.num_rows / dt, "cpu_s_per_mrow": dc / ds.num_rows * 1e6,
          "bare_rows_per_s": (b0["rows_per_s"] + b1["rows_per_s"]) / 2,
          "bare_cpu_s_per_mrow": (b0["cpu_s_per_mrow"] + b1["cpu_s_per_mrow"]) / 2})


def bare(what: str, reps: int = 48, threads: int = 2) -> dict:
    """rows/s of ``acc += A.T @ B`` (correlate) / ``acc += A.T @ A`` (PCA) on float64 blocks, at its
    best on this machine: the faster of BLAS's own threads on one stream of blocks and ``threads``
    Python threads (one accumulator each) with one BLAS thread each (what the query does; under load
    a multi-threaded BLAS spins, so taking only that figure would flatter the ratio)."""
    from concurrent.futures import ThreadPoolExecutor

    from threadpoolctl import threadpool_limits

    rng = np.random.default_rng(1)
    if what == "correlate":
        blocks = [(rng.standard_normal((BLOCK, 512)), rng.standard_normal((BLOCK, 512))) for _ in range(4)]
        width = 512
    else:
        x = [rng.standard_normal((BLOCK, 768)) for _ in range(4)]
        blocks = [(a, a) for a in x]
        width = 768

    def loop(n: int) -> None:
        acc = np.zeros((width, width))
        for i in range(n):
            a, b = blocks[i % len(blocks)]
            acc += a.T @ b

    loop(len(blocks))  # warm
    runs = []
    t, c = time.perf_counter(), time.process_time()
    loop(reps)
    runs.append((time.perf_counter() - t, time.process_time() - c))
    with threadpool_limits(limits=1, user_api="blas"), ThreadPoolExecutor(threads) as pool:
        t, c = time.perf_counter(), time.process_time()
        list(pool.map(loop, [reps // threads] * threads))
        runs.append((time.perf_counter() - t, time.process_time() - c))
    dt, dc = min(runs)
    rows = reps // threads * threads if runs.index((dt, dc)) == 1 else reps
    return {"rows_per_s": rows * BLOCK / dt, "cpu_s_per_mrow": dc / (rows * BLOCK) * 1e6}


def child(uri: str, what: str, threads: int, precision: str) -> dict:
    out = subprocess.run([sys.executable, __file__, "--child", what, "--uri", uri, "--threads", str(threads),
                          "--precision", precision], capture_output=True, text=True, check=True).stdout
    return json.loads(out.split(RESULT_MARK)[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rows", type=int, default=5_000_000, help="rows for correlate")
    ap.add_argument("--small", type=int, default=1_000_000, help="second row count (RSS check), both analyses")
    ap.add_argument("--pca-rows", type=int, default=None, help="rows for PCA (default: --rows)")
    ap.add_argument("--precisions", default="float64,float32", help="comma-separated: float64, float32")
    ap.add_argument("--quick", action="store_true", help="a check that it runs: --rows 262144 --small 131072")
    ap.add_argument("--threads", type=int, default=2, help="query threads (default 2 = this machine's cores)")
    ap.add_argument("--dir", default="/tmp/actlake-bench-analysis")
    ap.add_argument("--child", default=None)
    ap.add_argument("--uri", default=None)
    ap.add_argument("--precision", default="float64", help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.child:
        return run_query(a.uri, a.child, a.threads, a.precision)
    if a.quick:
        a.rows, a.small = 262_144, 131_072
    rows = {"correlate": a.rows, "pca": a.pca_rows or a.rows}
    if a.small >= min(rows.values()):
        raise SystemExit(f"error: --small ({a.small:,}) must be below --rows / --pca-rows")
    root = Path(a.dir)
    root.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    big = build(root, max(rows.values()))
    print(f"store: {big} ({max(rows.values()):,} rows; built/checked in {time.perf_counter() - t:.0f} s)", flush=True)
    res: dict = {}
    for what in ("correlate", "pca"):
        full = rows[what] == max(rows.values())
        uris = {"small": prefix(big, a.small), "big": big if full else prefix(big, rows[what])}
        for prec in a.precisions.split(","):
            runs = {n: child(u, what, a.threads, prec) for n, u in uris.items()}
            res[f"{what}/{prec}"] = runs
            r = runs["big"]
            print(f"{what:9s} {prec}: ours {r['rows_per_s'] / 1e6:6.3f} M rows/s "
                  f"({r['rows']:,} rows, {r['seconds']:.1f} s)  "
                  f"bare float64 matmul {r['bare_rows_per_s'] / 1e6:6.3f} M rows/s  "
                  f"ratio {r['rows_per_s'] / r['bare_rows_per_s']:.2f}  | CPU s per M rows: ours "
                  f"{r['cpu_s_per_mrow']:.1f}, bare {r['bare_cpu_s_per_mrow']:.1f} "
                  f"(ratio {r['bare_cpu_s_per_mrow'] / r['cpu_s_per_mrow']:.2f})  | peak RSS "
                  f"{runs['small']['peak_rss_mb']:.0f} MB at {runs['small']['rows']:,} rows, "
                  f"{r['peak_rss_mb']:.0f} MB at {r['rows']:,} rows", flush=True)
    print(json.dumps(res))


if __name__ == "__main__":
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    main()
