"""Client CPU per GB of the ways to GET chunk bytes from S3 into a buffer, and of the GET size.

    .venv/bin/python bench/s3_gets.py [--objects 16] [--mb 16] [--threads 16]

One loopback SeaweedFS, ``--objects`` objects of ``--mb`` MB, all in one process (A/B, same data):
  s3fs-cat+copy    ``fs.cat_file`` (aiohttp on s3fs's event-loop thread, joined bytes) + copy into
                   the destination: the loader's S3 path before store/backends/s3_reads.py
  boto-read+copy   botocore ``get_object()["Body"].read()`` + copy
  direct-readinto  ``s3_reads.get_into``: ranged GET, body read with ``readinto`` into the destination
then ``direct-readinto`` with GETs of 256 KB, 1 MB, 4 MB and the whole object, to show the
per-request cost that makes the GET size (``block_rows`` × row bytes) the lever on object stores.
Prints MB/s (wall: noisy on a shared machine) and client CPU s/GB (this process, all threads)."""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--objects", type=int, default=16)
    ap.add_argument("--mb", type=int, default=16, help="object size in MB (MiB)")
    ap.add_argument("--threads", type=int, default=16)
    a = ap.parse_args()
    from actlake.store.backends.s3 import _CLIENT_DEFAULTS, make_s3fs
    from actlake.store.backends.s3_reads import get_into, make_sync_client
    from actlake.store.s3server import SeaweedServer

    work = tempfile.mkdtemp(prefix="actlake-bench-s3gets-")
    srv = SeaweedServer(work).start()
    try:
        c = make_sync_client(srv.storage_options, _CLIENT_DEFAULTS)
        fs = make_s3fs(srv.storage_options)
        n, size = a.objects, a.mb << 20
        payload = np.random.default_rng(0).integers(0, 255, size, dtype=np.uint8).tobytes()
        keys = [f"gets/{i}" for i in range(n)]
        for k in keys:
            c.put_object(Bucket=srv.bucket, Key=k, Body=payload)
        dst = np.ones(n * size, np.uint8)
        mv = memoryview(dst)

        def s3fs_cat(job):
            i, _, _ = job
            dst[i * size:(i + 1) * size] = np.frombuffer(fs.cat_file(f"{srv.bucket}/{keys[i]}"), np.uint8)

        def boto_read(job):
            i, _, _ = job
            dst[i * size:(i + 1) * size] = np.frombuffer(
                c.get_object(Bucket=srv.bucket, Key=keys[i])["Body"].read(), np.uint8)

        def direct(job):
            i, off, part = job
            get_into(c, srv.bucket, keys[i], mv[i * size + off:i * size + off + part], off)

        runs = [("s3fs-cat+copy", s3fs_cat, size), ("boto-read+copy", boto_read, size),
                ("direct-readinto", direct, size)]
        runs += [(f"direct-readinto {p >> 10:,} KB GETs", direct, p) for p in (256 << 10, 1 << 20, 4 << 20)
                 if p < size]
        print(f"{'read path':<34} {'GETs':>5} {'MB/s':>7} {'CPU s/GB':>8} {'ms CPU/GET':>10}")
        for name, fn, part in runs:
            jobs = [(i, off, part) for i in range(n) for off in range(0, size, part)]
            t0, c0 = time.perf_counter(), time.process_time()
            with ThreadPoolExecutor(a.threads) as ex:
                list(ex.map(fn, jobs))
            wall, cpu = time.perf_counter() - t0, time.process_time() - c0
            assert bytes(mv[:64]) == payload[:64] and bytes(mv[-64:]) == payload[-64:]
            gb = n * size / 1e9
            print(f"{name:<34} {len(jobs):>5} {gb / wall * 1e3:>7,.0f} {cpu / gb:>8.2f} {cpu / len(jobs) * 1e3:>10.2f}",
                  flush=True)
            dst[:] = 1
    finally:
        srv.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
