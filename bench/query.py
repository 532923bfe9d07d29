"""Query engine benchmark: top-k / stats / 1,024 directions vs the raw read of the same bytes, a bare
numpy matmul, a numpy memory map, DuckDB over Parquet, and 1/2/4 parallel Ray tasks — one run.

    .venv/bin/python bench/query.py --gb 1.0 --small-gb 0.25 [--only raw,topk1,topk1024,matmul,ray]
    .venv/bin/python bench/query.py --quick      # 0.25 / 0.1 GB, no DuckDB: a check that it runs

Every measurement runs in its own fresh process (so its peak RSS is its own), on a warm page cache
(the parent reads every file once first), after the imports it needs (pyarrow's first table
imports pandas, ~1 CPU s: a fixed cost per process, not part of a query's throughput).  Stores are
built once under --dir and reused.  Besides wall-clock ratios (noisy on a shared machine) it prints
CPU seconds per GB of the hook's bytes and their ratio to the raw read's (``raw_crc`` is the raw read
plus the CRC-32C check every query read makes by default).  Writes results/query-<time>.json."""
from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import RESULT_MARK, emit, warm_files  # noqa: E402

HOOK = "h"
UNIT = 5
K = 20


# ---- stores -----------------------------------------------------------------------------------------
def build(path: Path, gb: float, d: int, frag_rows: int, chunk_rows: int) -> dict:
    """A float32 store of ~gb GB (hook h, d wide), plus the same rows as .npy and as Parquet."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from actlake.store.writer import DatasetWriter

    meta = path / "meta.json"
    if meta.exists():
        return json.loads(meta.read_text())
    rows = int(gb * 1e9 / (4 * d)) // chunk_rows * chunk_rows
    w = DatasetWriter(str(path / "store"), {HOOK: ((d,), "float32")}, chunk_rows=chunk_rows)
    mm = np.lib.format.open_memmap(path / "rows.npy", mode="w+", dtype=np.float32, shape=(rows, d))
    pq_writer = None
    rng = np.random.default_rng(0)
    for start in range(0, rows, frag_rows):
        n = min(frag_rows, rows - start)
        x = rng.standard_normal((n, d), dtype=np.float32)
        x[:, : d // 2] = np.maximum(x[:, : d // 2] - 1.0, 0)  # half the units sparse, like post-ReLU MLP units
        rid = np.arange(start, start + n)
        ctx = rid // 128
        w.add({HOOK: x}, pa.table({"doc_id": ctx // 4, "context_id": ctx, "context_pos": (rid % 128).astype(np.int32),
                                   "token_id": (rid % 50000).astype(np.int32)}))
        mm[start:start + n] = x
        t = pa.table({f"u{j}": x[:, j] for j in range(d)}).add_column(0, "row_id", pa.array(rid))
        if pq_writer is None:
            pq_writer = pq.ParquetWriter(path / "rows.parquet", t.schema, compression="none")
        pq_writer.write_table(t, row_group_size=65536)
    pq_writer.close()
    mm.flush()
    del mm
    w.close()
    info = {"rows": rows, "d": d, "bytes": rows * d * 4, "chunk_rows": chunk_rows}
    meta.write_text(json.dumps(info))
    return info


def chunk_files(store: str) -> list[str]:
    import actlake

    ds = actlake.open_dataset(store)
    return [ds.access.reader(f).chunk_path(HOOK, c) for f in range(len(ds.snapshot.fragments))
            for c in range(ds.access.reader(f).num_chunks)]


# ---- one measurement per process ------------------------------------------------------------------
def one(mode: str, path: Path, arg: int) -> None:
    import actlake

    store = str(path / "store")
    meta = json.loads((path / "meta.json").read_text())
    rows, d = meta["rows"], meta["d"]
    dirs = np.random.default_rng(1).standard_normal((1024, d)).astype(np.float32)
    out: dict = {"mode": mode, "rows": rows, "bytes": meta["bytes"]}
    import pyarrow as pa

    pa.array(np.zeros(1))  # pyarrow's lazy pandas import: a fixed cost per process, kept out of the timing
    # `import actlake` loads the store, query and loader modules (pydantic, zarr, fsspec, ...) lazily:
    # per-process import costs (~1 CPU s), kept out of the timing like pandas above
    import actlake.client.dataset  # noqa: F401
    import actlake.client.query  # noqa: F401
    import actlake.query.local  # noqa: F401
    from actlake.query.blas import _controller

    _controller()  # threadpoolctl finding the BLAS libraries: once per process
    if mode.startswith(("stats", "ray")):  # numba loading the compiled stats pass: once per process
        from actlake.query.kernels import warm

        out["kernel_load_cpu_s"] = warm()
    t0, c0 = time.perf_counter(), time.process_time()
    if mode in ("raw", "raw_crc"):  # the bar: every chunk file of the hook, sequentially, into one reused buffer
        from actlake.store.fragment import crc32c

        files = chunk_files(store)
        t0, c0 = time.perf_counter(), time.process_time()
        buf = np.empty(meta["chunk_rows"] * d * 4, np.uint8)
        total = 0
        for f in files:
            with open(f, "rb", buffering=0) as fh:
                n = fh.readinto(buf.data)
            if mode == "raw_crc":
                crc32c(buf[:n])
            total += n
        assert total == meta["bytes"]
    elif mode == "matmul":  # bare numpy: the same [chunk_rows, d] @ [d, 1024] blocks, data in memory
        x = np.random.default_rng(2).standard_normal((meta["chunk_rows"], d), dtype=np.float32)
        dt = np.ascontiguousarray(dirs.T)
        t0, c0 = time.perf_counter(), time.process_time()
        for _ in range(rows // meta["chunk_rows"]):
            x @ dt
        out["flops"] = 2.0 * rows * d * 1024
    elif mode.startswith(("topk1", "stats", "ray")):
        ds = actlake.open_dataset(store)
        q = ds.query
        if mode == "topk1":
            q.topk(HOOK, unit=UNIT, k=K, context=-1)
        elif mode == "topk1_scan":  # the scan alone, without the provenance of the 20 result rows
            from actlake.query.local import LocalExecutor
            from actlake.query.topk import TopK

            spec, ctx, plan = q._prepare(kind="topk", hook=HOOK, unit=UNIT, k=K)
            LocalExecutor().run(ctx, plan, TopK(1, K))
        elif mode == "topk1024":
            q.topk(HOOK, direction=dirs, k=K, context=-1)
            out["flops"] = 2.0 * rows * d * 1024
        elif mode == "stats":
            q.stats(HOOK)
        elif mode == "stats_norows":
            q.stats(HOOK, rows=False)
        elif mode == "stats_hist":  # with 64 shared histogram bins: a second pass over the rows
            q.stats(HOOK, histogram_bins=64)
        elif mode == "ray":
            from actlake.service.cluster import ensure_ray
            from actlake.service.query_ray import RayExecutor

            os.environ["RAY_AUTH_MODE"] = "disabled"
            ensure_ray(num_cpus=4)
            ex = RayExecutor("local", max_in_flight=arg)
            from actlake.client.query import QueryEngine
            from actlake.query.aggregates import ValueStats

            eng = QueryEngine(ds)  # a CPU-bound query (moments of every unit), so parallelism can show
            spec, ctx, plan = eng._prepare(kind="stats", hook=HOOK, rows=False, tasks=8)
            agg = ValueStats(d)
            ex.run(ctx, plan, agg)  # warm: start the workers and import actlake in them
            t0, c0 = time.perf_counter(), time.process_time()
            ex.run(ctx, plan, agg)
            out["parallel"] = arg
    elif mode == "memmap_topk":  # the obvious numpy: a column of the memory map, argpartition
        mm = np.load(path / "rows.npy", mmap_mode="r")
        v = np.asarray(mm[:, UNIT])
        top = np.argpartition(-v, K)[:K]
        top[np.argsort(-v[top])]
    elif mode == "memmap_stats":  # the obvious numpy: load, float64, moments
        x = np.load(path / "rows.npy", mmap_mode="r").astype(np.float64)
        m = x.mean(0)
        r = x - m
        var = (r ** 2).mean(0)
        ((r ** 3).mean(0) / var ** 1.5, (r ** 4).mean(0) / var ** 2 - 3, x.min(0), x.max(0), (x > 0).mean(0))
    elif mode == "memmap_topk1024":
        mm = np.load(path / "rows.npy", mmap_mode="r")
        vals = mm @ dirs.T
        np.argpartition(-vals, K, axis=0)[:K]
        out["flops"] = 2.0 * rows * d * 1024
    elif mode.startswith("duckdb"):
        import duckdb

        con = duckdb.connect()
        con.execute("SET threads TO 2")
        src = f"read_parquet('{path / 'rows.parquet'}')"
        if mode == "duckdb_topk":
            con.execute(f"SELECT row_id, u{UNIT} FROM {src} ORDER BY u{UNIT} DESC LIMIT {K}").fetchall()
        else:
            aggs = ", ".join(f"count(u{j}), avg(u{j}), var_pop(u{j}), skewness(u{j}), kurtosis_pop(u{j}), min(u{j}), "
                             f"max(u{j}), avg(CASE WHEN u{j} > 0 THEN 1 ELSE 0 END)" for j in range(d))
            con.execute(f"SELECT {aggs} FROM {src}").fetchall()
    else:
        raise SystemExit(f"unknown mode {mode}")
    out["seconds"] = time.perf_counter() - t0
    out["cpu_seconds"] = time.process_time() - c0  # all threads of this process (not Ray workers)
    emit(out)


# ---- orchestration ----------------------------------------------------------------------------------
def run_child(mode: str, path: Path, arg: int = 0) -> dict:
    r = subprocess.run([sys.executable, __file__, "--one", mode, "--path", str(path), "--arg", str(arg)],
                       capture_output=True, text=True)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if r.returncode or not lines:
        return {"mode": mode, "error": (r.stderr or r.stdout).strip().splitlines()[-1:]}
    return json.loads(lines[-1][len(RESULT_MARK):])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--gb", type=float, default=1.0, help="size of the large store (hook bytes)")
    ap.add_argument("--small-gb", type=float, default=0.25, help="size of the small store (RSS at two sizes)")
    ap.add_argument("--d", type=int, default=512, help="hook width")
    ap.add_argument("--dir", default="/tmp/actlake-bench-query", help="where the stores are built (reused)")
    ap.add_argument("--no-duckdb", action="store_true")
    ap.add_argument("--quick", action="store_true", help="0.25 GB and 0.1 GB stores, no DuckDB (a quick check)")
    ap.add_argument("--only", help="comma-separated measurements to run (default: all)")
    ap.add_argument("--one", help=argparse.SUPPRESS)
    ap.add_argument("--path", help=argparse.SUPPRESS)
    ap.add_argument("--arg", type=int, default=0, help=argparse.SUPPRESS)
    a = ap.parse_args()
    if a.quick:
        a.gb, a.small_gb, a.no_duckdb = 0.25, 0.1, True
    if a.one:
        return one(a.one, Path(a.path), a.arg)
    try:
        import duckdb  # noqa: F401
        have_duck = not a.no_duckdb
    except ImportError:
        have_duck = False
    sizes = {"large": a.gb, "small": a.small_gb}
    paths, metas = {}, {}
    for name, gb in sizes.items():
        paths[name] = Path(a.dir) / f"{gb:g}gb-d{a.d}"
        t = time.perf_counter()
        metas[name] = build(paths[name], gb, a.d, 65536, 8192)
        print(f"store {name}: {metas[name]['rows']:,} rows × {a.d} float32 = {metas[name]['bytes'] / 1e9:.2f} GB "
              f"(ready in {time.perf_counter() - t:.1f} s)", flush=True)
    results = []
    plan = [("large", m, 0) for m in ("raw", "raw_crc", "topk1", "stats", "stats_norows", "stats_hist", "memmap_topk",
                                       "memmap_stats")]
    plan += [("large", m, 0) for m in ("duckdb_topk", "duckdb_stats") if have_duck]
    plan += [("small", m, 0) for m in ("raw", "raw_crc", "topk1", "stats", "topk1024", "matmul", "memmap_topk",
                                       "memmap_stats", "memmap_topk1024")]
    plan.insert(3, ("large", "topk1_scan", 0))
    plan += [("small", "ray", p) for p in (1, 2, 4)]
    if a.only:
        keep = set(a.only.split(","))
        plan = [p for p in plan if p[1] in keep]
    for name, mode, arg in plan:
        p = paths[name]
        warm_files([str(f) for f in p.rglob("*") if f.is_file()])
        r = run_child(mode, p, arg)
        r["store"] = name
        results.append(r)
        print(json.dumps(r), flush=True)
    report(results, os.getloadavg())
    Path("results").mkdir(exist_ok=True)
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    Path(f"results/query-{stamp}.json").write_text(json.dumps({"args": vars(a), "results": results}, indent=1))


def report(results: list[dict], load) -> None:
    def get(store, mode, arg=None):
        for r in results:
            if r.get("store") == store and r["mode"] == mode and (arg is None or r.get("parallel") == arg):
                return r
        return None

    print(f"\nload average at the end: {load[0]:.1f} (2 cores shared)\n")
    print(f"{'store':6} {'measurement':18} {'s':>8} {'CPU s':>7} {'M rows/s':>9} {'MB/s':>8} {'vs raw':>7} "
          f"{'CPU s/GB':>8} {'CPU vs raw':>10} {'GFLOP/s':>8} {'RSS MB':>7}")
    for r in results:
        if "error" in r:
            print(f"{r['store']:6} {r['mode']:18} error: {r['error']}")
            continue
        raw = get(r["store"], "raw")
        s = r["seconds"]
        ok = raw and "error" not in raw
        ratio = f"{raw['seconds'] / s:.2f}×" if ok else ""
        gf = f"{r['flops'] / s / 1e9:.1f}" if "flops" in r else ""
        name = r["mode"] + (f" p={r['parallel']}" if "parallel" in r else "")
        ray = r["mode"] == "ray"  # the work runs in Ray workers: this process's CPU time means nothing
        cpu = "" if ray else f"{r['cpu_seconds']:.2f}"
        cpu_gb = "" if ray else f"{r['cpu_seconds'] / (r['bytes'] / 1e9):.2f}"
        cpu_ratio = f"{raw['cpu_seconds'] / r['cpu_seconds']:.2f}×" if ok and not ray and r["cpu_seconds"] > 0 else ""
        print(f"{r['store']:6} {name:18} {s:8.2f} {cpu:>7} {r['rows'] / s / 1e6:9.2f} {r['bytes'] / s / 1e6:8.0f} "
              f"{ratio:>7} {cpu_gb:>8} {cpu_ratio:>10} {gf:>8} {r['peak_rss_mb']:7.0f}")
    for store in ("large", "small"):
        q, m = get(store, "topk1024"), get(store, "matmul")
        if q and m and "error" not in q and "error" not in m:
            print(f"{store}: 1,024 directions vs the bare matmul: {m['seconds'] / q['seconds']:.2f}× wall, "
                  f"{m['cpu_seconds'] / q['cpu_seconds']:.2f}× CPU")
    p1 = get("small", "ray", 1)
    for p in (2, 4):
        rp = get("small", "ray", p)
        if p1 and rp and "error" not in p1 and "error" not in rp:
            print(f"Ray speedup 1 → {p} parallel tasks: {p1['seconds'] / rp['seconds']:.2f}× (2 cores)")


if __name__ == "__main__":
    main()
