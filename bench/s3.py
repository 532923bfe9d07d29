"""Streaming from S3 vs the raw GET bar vs local disk, in one run on the same dataset.

    .venv/bin/python bench/s3.py [--sizes 65536,131072] [--dim 1024] [--batch-size 4096]

Starts a loopback SeaweedFS (store/s3server.py), writes a synthetic store locally
(bench/loader_data.write_store: fp16 rows, 8,192-row chunks = 16 MB chunk objects), uploads the same
files to S3, then measures in separate processes (so each has its own peak RSS):
  raw-get      sequential GET of every chunk object, one at a time (boto3): the bar
  s3           actlake shuffled batches from S3 (staged windows, parallel ranged GETs)
  s3-cached    the same with storage_options cache_dir, second epoch (reads from the local cache)
  local        actlake shuffled batches from the local copy
Prints rows/s, MB/s, peak RSS, batch diversity (client/quality.py: distinct contexts per batch vs a
perfect permutation) and the ratios s3 / raw-get and s3 / local.  Peers (MosaicML streaming, litdata)
are not run here (see docs/performance.md)."""
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
sys.path.insert(0, str(BENCH))
from common import RESULT_MARK, Meter, emit  # noqa: E402
from loader_data import HOOK, write_store  # noqa: E402


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
    from actlake.client.quality import report

    ds = open_dataset(o["uri"], o.get("opts"))
    kw = dict(batch_size=o["batch_size"], hooks=[HOOK], seed=0, with_provenance=True)
    for e in range(o.get("skip_epochs", 0)):  # e.g. fill the read cache
        for _ in ds.batches(epoch=e, **kw):
            pass
    m = Meter(o["row_bytes"])
    ids = []
    stream = ds.batches(epoch=o.get("skip_epochs", 0), **kw)
    for b in stream:
        m.add(int(b[HOOK].shape[0]))
        ids.append(b["row_id"].numpy().copy())
    res = m.result(loader=o["name"], layout={"block_rows": stream.block_rows, "buffer_rows": stream.buffer_rows})
    ctx = ds.provenance(np.arange(ds.num_rows)).column("context_id").to_numpy()
    sizes = np.bincount(ctx)
    q = report([ctx[i] for i in ids], sizes[sizes > 0], o["batch_size"])
    res["distinct_ratio"] = q["distinct_ratio"]
    return res


MEASURES = {"raw": m_raw, "actlake": m_actlake}


def child(argv: list[str]) -> None:
    o = json.loads(argv[0])
    emit(MEASURES[o["measure"]](o))


def run(o: dict, env: dict) -> dict:
    r = subprocess.run([sys.executable, __file__, "--child", json.dumps(o)], env=env, capture_output=True,
                       text=True, timeout=1800)
    lines = [ln for ln in r.stdout.splitlines() if ln.startswith(RESULT_MARK)]
    if r.returncode or not lines:
        raise SystemExit(f"{o.get('name', o['measure'])} failed:\n{r.stderr[-3000:]}")
    return json.loads(lines[-1][len(RESULT_MARK):])


# ---- driver -----------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        return child(sys.argv[2:])
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--sizes", default="65536,131072", help="store sizes in rows (comma-separated)")
    ap.add_argument("--dim", type=int, default=1024, help="row width (fp16)")
    ap.add_argument("--batch-size", type=int, default=4096)
    ap.add_argument("--chunk-rows", type=int, default=8192)
    ap.add_argument("--workdir", default=None, help="where stores and the server live (default: a temp dir)")
    a = ap.parse_args()
    from actlake.store.s3server import SeaweedServer
    from actlake.store.backends.s3 import make_s3fs

    work = Path(a.workdir or tempfile.mkdtemp(prefix="actlake-bench-s3-"))
    srv = SeaweedServer(str(work / "seaweed")).start()
    env = {**os.environ, **srv.env()}
    rows_all = []
    try:
        fs = make_s3fs(srv.storage_options)
        for rows in [int(x) for x in a.sizes.split(",")]:
            local = work / f"store-{rows}"
            if not local.exists():
                write_store(local, rows, a.dim, 128, 32768, a.chunk_rows, "float16", 0)
            uri = f"s3://{srv.bucket}/store-{rows}"
            t0 = time.perf_counter()
            fs.put(str(local) + "/", uri.replace("s3://", "") + "/", recursive=True)
            upload = time.perf_counter() - t0
            from actlake import open_dataset

            ds = open_dataset(str(local))
            chunks = []
            for f in ds.snapshot.fragments:
                n = -(-f.num_rows // a.chunk_rows)
                for c in range(n):
                    key = f"store-{rows}/{f.path}/acts/{ds.manifest.hooks[HOOK].array}/c/{c}/0"
                    chunks.append((key, min(a.chunk_rows, f.num_rows - c * a.chunk_rows)))
            rb = ds.manifest.hooks[HOOK].row_bytes
            base = {"row_bytes": rb, "batch_size": a.batch_size}
            res = {
                "raw-get": run({**base, "measure": "raw", "opts": srv.storage_options, "bucket": srv.bucket,
                                "chunks": chunks}, env),
                "s3": run({**base, "measure": "actlake", "name": "actlake-s3", "uri": uri,
                           "opts": srv.storage_options}, env),
                "s3-cached": run({**base, "measure": "actlake", "name": "actlake-s3-cache-epoch2", "uri": uri,
                                  "skip_epochs": 1, "opts": {**srv.storage_options,
                                                             "cache_dir": str(work / f"cache-{rows}")}}, env),
                "local": run({**base, "measure": "actlake", "name": "actlake-local", "uri": str(local)}, env),
            }
            rows_all.append((rows, rows * rb, upload, res))
    finally:
        srv.stop()
    print(f"\n{'store':>14} {'loader':<24} {'rows/s':>10} {'MB/s':>8} {'peak RSS MB':>12} {'diversity':>9}")
    for rows, nbytes, upload, res in rows_all:
        for name, r in res.items():
            div = f"{r['distinct_ratio']:.3f}" if "distinct_ratio" in r else "-"
            print(f"{rows:>8,} rows {r['loader']:<24} {r['rows_per_s']:>10,.0f} {r['mb_per_s']:>8,.0f} "
                  f"{r['peak_rss_mb']:>12,.0f} {div:>9}")
        print(f"{'':>14} ratios: s3 / raw-get = {res['s3']['mb_per_s'] / res['raw-get']['mb_per_s']:.2f}, "
              f"s3 / local = {res['s3']['mb_per_s'] / res['local']['mb_per_s']:.2f}, "
              f"s3-cached / local = {res['s3-cached']['mb_per_s'] / res['local']['mb_per_s']:.2f}; "
              f"store {nbytes / 1e6:,.0f} MB, upload {nbytes / 1e6 / upload:,.0f} MB/s")
    if not a.workdir:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
