"""Streaming from S3 vs the raw GET bar, local disk and the peers, in one run on the same dataset.

    .venv/bin/python bench/s3.py                 # --sizes 65536,262144 --buffer-rows 65536 --block-rows 2048
    .venv/bin/python bench/s3.py --quick         # 16,384 and 49,152 rows, 4,096-row window: runs end to end
    bash bench/setup_peers.sh                    # first, for the peers (.venv-bench)

Starts a loopback SeaweedFS (store/s3server.py), writes a synthetic store locally
(bench/loader_data.write_store: fp16 rows, 8,192-row chunks = 16 MB chunk objects), uploads the same
files to S3, then measures each loader in its own process (its own peak RSS):
  raw-get          sequential GET of every chunk object, one at a time (boto3 ``Body.read()``): the bar
  actlake-s3       actlake shuffled batches from S3 (staged windows; ranged GETs read straight into the
                   window by 16 I/O threads, store/backends/s3_reads.py)
  actlake-s3-s3fs  the same through s3fs (``storage_options={"direct_reads": False}``: the read path
                   before s3_reads.py), for the CPU s/GB before/after
  s3-cache-epoch2  actlake-s3 with ``cache_dir``, second epoch (reads from the local cache)
  actlake-local    actlake shuffled batches from the local copy
  mosaic-s3        MosaicML ``streaming``: remote MDS shards on the same server (64 MB, MDSWriter
                   defaults), default shuffle (py1e), DataLoader with 2 workers, empty local cache
  litdata-s3       litdata ``StreamingDataset`` over an optimized copy (64 MB chunks) on the same
                   server, ``shuffle=True``, StreamingDataLoader with 2 workers, empty local cache
actlake runs with an explicit small shuffle window (``--buffer-rows``, read ahead ``prefetch=1``: a
ring of 3 windows) so both stores are several read-ahead windows large: peak RSS must not grow
with the store.  Prints rows/s, MB/s, CPU s/GB (this process; peers: + their workers), peak RSS
of the main process, then for actlake the stream's own RSS (peak minus RSS before the stream) and
for the peers the peak RSS of their largest DataLoader worker ("w N"), batch diversity
(client/quality.py: distinct contexts per batch vs a perfect permutation) and the ratios."""
from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import RESULT_MARK, Meter, emit, peak_rss_mb  # noqa: E402
from loader_data import HOOK, build_index, make_plan, write_store  # noqa: E402

PEERS = {"mosaic": BENCH / "peers" / "mosaic_read.py", "litdata": BENCH / "peers" / "litdata_read.py"}


def rss_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    return float("nan")


# ---- measurements (run in a child process each) ------------------------------------------------
def m_raw(o: dict) -> dict:
    import botocore.session

    s = botocore.session.Session()
    s.set_credentials(o["opts"]["key"], o["opts"]["secret"])
    c = s.create_client("s3", endpoint_url=o["opts"]["endpoint_url"], region_name="us-east-1")
    m = Meter(o["row_bytes"])
    nbytes = 0
    for key, rows in o["chunks"]:
        body = c.get_object(Bucket=o["bucket"], Key=key)["Body"].read()
        nbytes += len(body)
        m.add(rows)
    return m.result(loader="raw-get", object_bytes=nbytes)


def m_actlake(o: dict) -> dict:
    import torch  # noqa: F401  (imported before the clock starts, like a trainer has it)

    from actlake import open_dataset

    ds = open_dataset(o["uri"], o.get("opts"))
    kw = dict(batch_size=o["batch_size"], hooks=[HOOK], seed=0, with_provenance=True,
              buffer_rows=o.get("buffer_rows"), block_rows=o.get("block_rows"))
    for e in range(o.get("skip_epochs", 0)):  # e.g. fill the read cache
        for _ in ds.batches(epoch=e, **kw):
            pass
    before = rss_mb()
    m = Meter(o["row_bytes"])
    ids = []
    stream = ds.batches(epoch=o.get("skip_epochs", 0), **kw)
    for b in stream:
        m.add(int(b[HOOK].shape[0]))
        ids.append(b["row_id"].numpy().copy())
    peak = peak_rss_mb()  # before anything else is loaded
    np.save(o["ids_out"], np.stack([i for i in ids if len(i) == o["batch_size"]]))
    return m.result(loader=o["name"], peak_rss_mb=peak, rss_before_mb=before, ids_file=o["ids_out"],
                    layout={"block_rows": stream.block_rows, "buffer_rows": stream.buffer_rows,
                            "prefetch": stream.prefetch, "io_threads": stream.io_threads})


MEASURES = {"raw": m_raw, "actlake": m_actlake}


def child(argv: list[str]) -> None:
    o = json.loads(argv[0])
    emit(MEASURES[o["measure"]](o))


def run(cmd: list[str], env: dict, timeout: float = 1800) -> dict:
    """Run one measurement; its result, or {"error": why}."""
    try:
        r = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if r.returncode or not lines:
        tail = [ln for ln in (r.stderr or r.stdout).strip().splitlines() if ln.strip()][-3:]
        return {"error": f"exit {r.returncode}: " + " | ".join(tail)[-600:]}
    return json.loads(lines[-1][len(RESULT_MARK):])


def me(o: dict) -> list[str]:
    return [sys.executable, __file__, "--child", json.dumps(o)]


# ---- driver -----------------------------------------------------------------------------------
def diversity(res: dict, ctx: np.ndarray, batch_size: int) -> None:
    from actlake.client.quality import report

    if not res.get("ids_file"):
        return
    ids = np.load(res["ids_file"])
    ok = [b for b in ids if (b >= 0).all()]
    if ok:
        sizes = np.bincount(ctx)
        q = report([ctx[b] for b in ok], sizes[sizes > 0], batch_size)
        res["distinct_ratio"], res["distinct_ratio_min"] = q["distinct_ratio"], q["distinct_ratio_min"]


def peer_convert(name: str, py: str, plan_path: Path, out: Path, env: dict) -> dict:
    if (out / "done.json").exists():
        return json.loads((out / "done.json").read_text())
    shutil.rmtree(out, ignore_errors=True)
    res = run([py, str(PEERS[name]), "convert", "--plan", str(plan_path), "--out", str(out / "data")], env)
    if "error" not in res:
        (out / "done.json").write_text(json.dumps(res))
    return res


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="65536,262144", help="store sizes in rows (comma-separated)")
    ap.add_argument("--dim", type=int, default=1024, help="row width (fp16)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--chunk-rows", type=int, default=8192)
    ap.add_argument("--buffer-rows", type=int, default=65536, help="actlake shuffle window (0: the library's auto)")
    ap.add_argument("--block-rows", type=int, default=2048,
                    help="actlake read block = one ranged GET (2,048 fp16 rows of 1,024 = 4 MB; 0: the library's auto, "
                         "which for a small explicit window picks small blocks, e.g. 2 rows = 4 KB GETs)")
    ap.add_argument("--peers", default="mosaic,litdata", help="comma list of mosaic,litdata; '' for none")
    ap.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    ap.add_argument("--workdir", default=None, help="where stores and the server live (default: a temp dir)")
    ap.add_argument("--json", type=Path, help="also write all results here")
    ap.add_argument("--quick", action="store_true", help="sizes 16384,49152, window 4096 (a check that it all runs)")
    a = ap.parse_args()
    if a.quick:
        a.sizes, a.buffer_rows = "16384,49152", min(a.buffer_rows, 4096)
    from actlake import open_dataset
    from actlake.store.backends.s3 import make_s3fs
    from actlake.store.s3server import SeaweedServer

    work = Path(a.workdir or tempfile.mkdtemp(prefix="actlake-bench-s3-"))
    work.mkdir(parents=True, exist_ok=True)
    srv = SeaweedServer(str(work / "seaweed")).start()
    env = {**os.environ, **srv.env(), "S3_ENDPOINT_URL": srv.endpoint, "HF_HUB_OFFLINE": "1", "PYTHONWARNINGS": "ignore"}
    peers = [p for p in a.peers.split(",") if p]
    have_py = Path(a.peer_python).exists()
    rows_all = []
    try:
        fs = make_s3fs(srv.storage_options)
        for rows in [int(x) for x in a.sizes.split(",")]:
            local = work / f"store-{rows}"
            if not (local / "actlake.json").exists():
                write_store(local, rows, a.dim, 128, 32768, a.chunk_rows, "float16", 0)
            uri = f"s3://{srv.bucket}/store-{rows}"
            t0 = time.perf_counter()
            fs.put(str(local) + "/", uri.replace("s3://", "") + "/", recursive=True)
            upload = time.perf_counter() - t0
            ds = open_dataset(str(local))
            side = work / f"side-{rows}"
            side.mkdir(exist_ok=True)
            plan = make_plan(ds, HOOK)
            (side / "plan.json").write_text(json.dumps(plan))
            idx = build_index(ds, plan, side / "index.npz")
            chunks = []
            for f in ds.snapshot.fragments:
                for c in range(-(-f.num_rows // a.chunk_rows)):
                    key = f"store-{rows}/{f.path}/acts/{ds.manifest.hooks[HOOK].array}/c/{c}/0"
                    chunks.append((key, min(a.chunk_rows, f.num_rows - c * a.chunk_rows)))
            rb = ds.manifest.hooks[HOOK].row_bytes
            base = {"measure": "actlake", "row_bytes": rb, "batch_size": a.batch_size,
                    "buffer_rows": a.buffer_rows or None, "block_rows": a.block_rows or None}
            opts = srv.storage_options
            res = {
                "raw-get": run(me({**base, "measure": "raw", "opts": opts, "bucket": srv.bucket, "chunks": chunks}), env),
                "s3": run(me({**base, "name": "actlake-s3", "uri": uri, "opts": opts,
                              "ids_out": str(side / "ids-s3.npy")}), env),
                "s3-s3fs": run(me({**base, "name": "actlake-s3-s3fs", "uri": uri, "opts": {**opts, "direct_reads": False},
                                   "ids_out": str(side / "ids-s3fs.npy")}), env),
                "s3-cached": run(me({**base, "name": "actlake-s3-cache-epoch2", "uri": uri, "skip_epochs": 1,
                                     "opts": {**opts, "cache_dir": str(work / f"cache-{rows}")},
                                     "ids_out": str(side / "ids-cached.npy")}), env),
                "local": run(me({**base, "name": "actlake-local", "uri": str(local),
                                 "ids_out": str(side / "ids-local.npy")}), env),
            }
            for p in peers:
                if not have_py:
                    res[p] = {"loader": f"{p}-s3", "error": f"{a.peer_python} missing: bash bench/setup_peers.sh"}
                    continue
                conv = peer_convert(p, a.peer_python, side / "plan.json", side / p, env)
                if "error" in conv:
                    res[p] = {"loader": f"{p}-s3", "error": f"conversion failed: {conv['error']}"}
                    continue
                remote = f"s3://{srv.bucket}/{p}-{rows}"
                fs.put(str(side / p / "data") + "/", remote[5:] + "/", recursive=True)
                cache = Path(tempfile.mkdtemp(prefix=f"{p}-cache-", dir=work))
                cmd = [a.peer_python, str(PEERS[p]), "read", "--plan", str(side / "plan.json"), "--mds" if p == "mosaic"
                       else "--cache", str(cache), "--remote", remote, "--batch-size", str(a.batch_size),
                       "--batches", str(rows // a.batch_size), "--keymap", str(side / "index.npz"),
                       "--ids-out", str(side / f"ids-{p}.npy")]
                if p == "litdata":
                    cmd += ["--endpoint", srv.endpoint]
                res[p] = run(cmd, env)
                res[p].setdefault("loader", f"{p}-s3")
                shutil.rmtree(cache, ignore_errors=True)
            for r in res.values():
                diversity(r, idx["context_id"], a.batch_size)
            rows_all.append((rows, rows * rb, upload, res))
            report(rows_all[-1:], a)  # as each size finishes (the full table follows at the end)
            sys.stdout.flush()
    finally:
        srv.stop()
    report(rows_all, a)
    if a.json:
        a.json.write_text(json.dumps({"args": vars(a) | {"json": str(a.json)}, "results": rows_all}, indent=1,
                                     default=str))
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


def report(rows_all: list, a: argparse.Namespace) -> None:
    print(f"\n{'store':>14} {'loader':<24} {'rows/s':>10} {'MB/s':>7} {'CPU s/GB':>8} {'peak RSS MB':>11} "
          f"{'+stream/wkr':>10} {'diversity':>9}")
    for rows, nbytes, upload, res in rows_all:
        for name, r in res.items():
            if "error" in r:
                print(f"{rows:>8,} rows {r.get('loader', name):<24} unavailable: {r['error']}")
                continue
            cpu = r.get("cpu_s_per_gb") or 0.0
            if r.get("workers_cpu_s"):  # the peers' DataLoader workers do their reading
                cpu = (r["cpu_s"] + r["workers_cpu_s"]) / (nbytes / 1e9 * r["rows"] / rows)
            rss = r["peak_rss_mb"]
            # actlake: the stream's own growth; peers: the largest DataLoader worker's peak (each of 2)
            stream = (f"{r['peak_rss_mb'] - r['rss_before_mb']:,.0f}" if "rss_before_mb" in r else
                      f"w {r['children_peak_rss_mb']:,.0f}" if r.get("children_peak_rss_mb") else "-")
            div = f"{r['distinct_ratio']:.3f}" if "distinct_ratio" in r else "-"
            print(f"{rows:>8,} rows {r['loader']:<24} {r['rows_per_s']:>10,.0f} {r['mb_per_s']:>7,.0f} {cpu:>8.2f} "
                  f"{rss:>11,.0f} {stream:>10} {div:>9}")

        def ratio(x: str, y: str) -> str:
            if "error" in res.get(x, {"error": 1}) or "error" in res.get(y, {"error": 1}):
                return "n/a"
            return f"{res[x]['mb_per_s'] / res[y]['mb_per_s']:.2f}"
        print(f"{'':>14} ratios: s3 / raw-get = {ratio('s3', 'raw-get')}, s3-s3fs / raw-get = "
              f"{ratio('s3-s3fs', 'raw-get')}, s3 / local = {ratio('s3', 'local')}, s3-cached / local = "
              f"{ratio('s3-cached', 'local')}, s3 / mosaic = {ratio('s3', 'mosaic')}, s3 / litdata = "
              f"{ratio('s3', 'litdata')}; store {nbytes / 1e6:,.0f} MB, upload {nbytes / 1e6 / upload:,.0f} MB/s")
    if len(rows_all) >= 2 and all("error" not in r[3]["s3"] for r in rows_all):
        (r0, b0, _, s0), (r1, b1, _, s1) = rows_all[0], rows_all[-1]
        print(f"actlake-s3 peak RSS: {s0['s3']['peak_rss_mb']:,.0f} MB at {b0 / 1e6:,.0f} MB of store, "
              f"{s1['s3']['peak_rss_mb']:,.0f} MB at {b1 / 1e6:,.0f} MB ({b1 / b0:.1f}x the store: "
              f"{s1['s3']['peak_rss_mb'] / s0['s3']['peak_rss_mb']:.2f}x the RSS); window "
              f"{s1['s3']['layout']['buffer_rows']:,} rows, read ahead {s1['s3']['layout']['prefetch']}")


if __name__ == "__main__":
    main()
