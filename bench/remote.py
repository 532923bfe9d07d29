"""Remote (Arrow Flight over loopback) vs local batch streams of one store, side by side, one run.

    .venv/bin/python bench/remote.py                      # 524,288 x 768 fp16 rows (768 MiB)
    .venv/bin/python bench/remote.py --rows 524288 --batch 4096

Throughput is the steady state: rows, bytes, wall and CPU after each client's first batch (the
epoch of the default store lasts ~1 s locally, so start-up would otherwise dominate the rate);
start-up is reported as the first-batch latency.

Phases (each client a fresh process; the clock starts before ``open_dataset``): a warm-up local
epoch (untimed, fills the page cache), local epoch, remote epoch (1 client), 4 concurrent local
rank clients and 4 concurrent remote rank clients (rank r of world 4, together one epoch; the default
store gives each rank 131,072 rows: a rank of <= 65,536 rows would be shuffled in blocks of ~8 rows,
client/shuffle.py, the small-store layout, which costs 5-10x more CPU per GB even locally), then
resume latency (first batch after
``load_state_dict`` at the middle step, remote).  Prints rows/s, MB/s, server and client CPU
seconds per GB, first-batch latency, and the ratios to local.  Targets (DESIGN.md): remote >= 0.70x
local for 1 client and for 4 rank clients together; first batch and resume < 1 s."""
from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TOKEN = "bench-token"


def _client(args: argparse.Namespace) -> None:
    # the clock measures opening and streaming, not Python imports: a trainer has imported torch
    # before it opens a stream, and `import actlake` loads the loader and the Flight client lazily
    import torch  # noqa: F401

    import actlake
    import actlake.client.batches  # noqa: F401
    import actlake.client.remote  # noqa: F401

    # concurrent clients start together, after their imports.  On this machine DAMON proactive reclaim
    # (action "pageout") evicts pages idle for seconds, the store's cached pages included, so the
    # first batch after the wait may read its window from disk (and verify it whole) — a cold start
    time.sleep(max(0.0, args.at - time.time()))
    t0 = time.time()
    c0 = time.process_time()
    ds = actlake.open_dataset(args.uri, storage_options={"token": TOKEN} if args.uri.startswith("grpc") else None)
    s = ds.batches(args.batch, seed=1, rank=args.rank, world_size=args.world)
    if args.resume:
        s.load_state_dict({**s.state_dict(), "step": len(s) // 2})
    rows = nbytes = 0
    first = None
    c1 = c0
    for b in s:
        if first is None:
            first = time.time() - t0
            c1 = time.process_time()
            if args.resume:
                break
        else:  # steady state: everything after the first batch (start-up excluded)
            rows += len(next(iter(b.values())))
            nbytes += sum(v.numel() * v.element_size() for v in b.values())
    print(json.dumps({"rows": rows, "bytes": nbytes, "wall": time.time() - t0 - (first or 0.0),
                      "start": t0 + (first or 0.0), "cpu": time.process_time() - c1, "first": first}), flush=True)


def _cpu_of(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _run_clients(uri: str, batch: int, world: int, resume: bool = False) -> list[dict]:
    at = time.time() + 10  # time for every client to import torch and actlake first
    procs = [subprocess.Popen([sys.executable, __file__, "--client", uri, "--batch", str(batch), "--rank", str(r),
                               "--world", str(world), "--at", str(at)] + (["--resume"] if resume else []),
                              stdout=subprocess.PIPE, text=True) for r in range(world)]
    out = []
    for p in procs:
        line = p.communicate()[0].strip().splitlines()[-1]
        out.append(json.loads(line))
    return out


def _make_store(path: str, rows: int, dim: int) -> None:
    import numpy as np
    import pyarrow as pa

    from actlake.store.writer import DatasetWriter

    w = DatasetWriter(path, {"resid": ((dim,), "float16")}, chunk_rows=8192)
    per = 65536
    rng = np.random.default_rng(0)
    for start in range(0, rows, per):
        n = min(per, rows - start)
        rid = np.arange(start, start + n)
        w.add({"resid": rng.standard_normal((n, dim), dtype=np.float32).astype(np.float16)},
              pa.table({"doc_id": rid // 1024, "context_id": rid // 128, "context_pos": (rid % 128).astype(np.int32),
                        "token_id": (rid % 50000).astype(np.int32)}))
    w.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rows", type=int, default=524288)  # a rank of 4 > SMALL_RANK_ROWS
    ap.add_argument("--dim", type=int, default=768)
    ap.add_argument("--batch", type=int, default=4096)
    ap.add_argument("--store", default=None, help="store path (default: actlake-data/bench/remote-R-D)")
    ap.add_argument("--client", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--rank", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--world", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--resume", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--at", type=float, default=0.0, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.client:
        args.uri = args.client
        return _client(args)

    store = args.store or os.path.join(ROOT, "actlake-data", "bench", f"remote-{args.rows}-{args.dim}")
    if not os.path.exists(os.path.join(store, "actlake.json")):
        print(f"writing {store} ...", flush=True)
        _make_store(store, args.rows, args.dim)
    srv = subprocess.Popen([sys.executable, "-m", "actlake.cli", "serve", store, "--name", "bench", "--port", "0",
                            "--token", TOKEN], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        port = None
        for line in srv.stdout:  # type: ignore[union-attr]
            m = re.search(r"listening on grpc://127\.0\.0\.1:(\d+)", line)
            if m:
                port = int(m.group(1))
                break
        assert port, "server did not start"
        uri = f"grpc://127.0.0.1:{port}/bench"
        _run_clients(store, args.batch, 1)  # warm-up (page cache), untimed
        results = {}
        for label, target, world in (("local", store, 1), ("remote, 1 client", uri, 1),
                                     ("local, 4 rank clients", store, 4), ("remote, 4 rank clients", uri, 4)):
            s0 = _cpu_of(srv.pid)
            rs = _run_clients(target, args.batch, world)
            server_cpu = _cpu_of(srv.pid) - s0
            wall = max(r["start"] + r["wall"] for r in rs) - min(r["start"] for r in rs)
            rows, nbytes = sum(r["rows"] for r in rs), sum(r["bytes"] for r in rs)
            results[label] = {"rows_s": rows / wall, "mb_s": nbytes / wall / 1e6, "wall": wall, "rows": rows,
                              "client_cpu_s_gb": sum(r["cpu"] for r in rs) / (nbytes / 1e9),
                              "server_cpu_s_gb": server_cpu / (nbytes / 1e9) if target == uri else 0.0,
                              "first_s": max(r["first"] for r in rs)}
        resume = _run_clients(uri, args.batch, 1, resume=True)[0]["first"]
    finally:
        srv.terminate()
        srv.wait(30)

    local = results["local"]["rows_s"]
    print(f"\nstore {store}: {args.rows:,} x {args.dim} fp16, batch {args.batch}, {os.cpu_count()} CPUs, "
          f"load avg {os.getloadavg()[0]:.1f}")
    print(f"{'':26}{'rows/s':>12}{'MB/s':>9}{'vs local':>10}{'client CPU s/GB':>17}{'server CPU s/GB':>17}"
          f"{'first batch s':>15}")
    for label, r in results.items():
        print(f"{label:26}{r['rows_s']:>12,.0f}{r['mb_s']:>9,.0f}{r['rows_s'] / local:>9.2f}x"
              f"{r['client_cpu_s_gb']:>17.2f}{r['server_cpu_s_gb']:>17.2f}{r['first_s']:>15.3f}")
    r4, l4 = results["remote, 4 rank clients"], results["local, 4 rank clients"]
    print(f"remote vs local with the same 4 rank streams: {r4['rows_s'] / l4['rows_s']:.2f}x")
    print(f"resume at the middle step, remote (fresh process, open + load_state_dict + first batch): {resume:.3f} s")


if __name__ == "__main__":
    main()
