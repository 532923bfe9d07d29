#!/usr/bin/env python
"""CPU cost of the copies a shuffled loader makes, on the chunk files of a bench store (warm cache).

    .venv/bin/python bench/loader_micro.py [PLAN]   # PLAN: actlake-data/bench/peers/*/plan.json

Numpy/torch only (no actlake code): it shows the floor a read-then-permute loader sits on, next to
raw sequential reading, to explain where bench/loader.py's warm time goes (docs/performance.md).
  1. readinto each chunk file into one reused buffer (= the raw bar);
  2. readinto into a ring of four 131,072-row windows (the copy a loader's window fill makes),
     on fresh buffers (page faults on first touch) and again on the same buffers;
  3. gather 4,096 random rows of a window into a batch: np.take over fixed-size records,
     torch.index_select with the default intra-op threads and with one thread;
  4. one copy instead of two: mmap the window's chunk files and gather batches straight from the
     page cache (a naive Python version: per batch, rows grouped by chunk);
  5. what the loader does now: batches made of 64-row runs, each one preadv from the page cache
     straight into the batch (docs/shuffle.md), with one and two threads."""
from __future__ import annotations

import glob
import json
import mmap
import os
import sys
import time

import numpy as np


def clock():
    t = os.times()
    return time.perf_counter(), t.user, t.system


def report(name: str, start, n_bytes: int) -> None:
    w1, u1, s1 = clock()
    gb = n_bytes / 1e9
    print(f"{name:66} {gb / (w1 - start[0]):6.2f} GB/s  user {(u1 - start[1]) / gb:5.2f}  sys {(s1 - start[2]) / gb:5.2f} CPU s/GB")


def main() -> None:
    path = sys.argv[1] if len(sys.argv) > 1 else sorted(glob.glob("actlake-data/bench/peers/*/plan.json"), key=os.path.getmtime)[-1]
    plan = json.load(open(path))
    chunks = [p for f in plan["fragments"] for p in f["chunks"]]
    rb = int(np.prod(plan["shape"])) * np.dtype(plan["storage_dtype"]).itemsize
    cr, window, batch = plan["chunk_rows"], 131072, 4096
    per_win = window // cr
    rec = np.dtype(f"V{rb}")
    for p in chunks:  # warm the page cache
        with open(p, "rb") as f:
            while f.read(1 << 24):
                pass
    total = len(chunks) * cr * rb
    print(f"{len(chunks)} chunk files, {total / 1e9:.2f} GB, row {rb} B; load {os.getloadavg()[0]:.1f}")

    buf = memoryview(np.empty(cr * rb, np.uint8))
    t = clock()
    for p in chunks:
        with open(p, "rb", buffering=0) as f:
            f.readinto(buf)
    report("1 readinto, reused chunk buffer (raw bar)", t, total)

    ring = [np.empty(window * rb, np.uint8) for _ in range(4)]
    for label in ("fresh buffers: first-touch page faults", "same buffers again"):
        t = clock()
        for i, p in enumerate(chunks):
            w, k = ring[(i // per_win) % 4], i % per_win
            with open(p, "rb", buffering=0) as f:
                f.readinto(memoryview(w)[k * cr * rb:(k + 1) * cr * rb])
        report(f"2 readinto into a 4-window ring, {label}", t, total)

    src = ring[0].view(rec)
    perm = np.random.default_rng(0).permutation(window)
    out = np.empty(batch, rec)
    reps = 5
    t = clock()
    for _ in range(reps):
        for k in range(window // batch):
            np.take(src, perm[k * batch:(k + 1) * batch], out=out)
    report("3a gather np.take (records)", t, reps * window * rb)
    try:
        import torch

        tsrc = torch.from_numpy(ring[0].view(np.int16).reshape(window, -1))
        tout = torch.empty(batch, tsrc.shape[1], dtype=tsrc.dtype)
        tperm = torch.from_numpy(perm)
        for threads in (torch.get_num_threads(), 1):
            torch.set_num_threads(threads)
            t = clock()
            for _ in range(reps):
                for k in range(window // batch):
                    torch.index_select(tsrc, 0, tperm[k * batch:(k + 1) * batch], out=tout)
            report(f"3b gather torch.index_select, {threads} intra-op thread(s)", t, reps * window * rb)
    except ImportError:
        pass

    rng = np.random.default_rng(1)
    order = rng.permutation(len(chunks))
    t = clock()
    n = 0
    for w0 in range(0, len(order), per_win):
        ids = order[w0:w0 + per_win]
        maps, arrs = [], []
        for i in ids:
            fd = os.open(chunks[i], os.O_RDONLY)
            m = mmap.mmap(fd, 0, prot=mmap.PROT_READ, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0))
            os.close(fd)
            maps.append(m)
            arrs.append(np.frombuffer(m, dtype=rec))
        p = rng.permutation(len(ids) * cr)
        for k in range(len(p) // batch):
            idx = p[k * batch:(k + 1) * batch]
            src_i, row = idx // cr, idx % cr
            o = np.argsort(src_i, kind="stable")
            bounds = np.searchsorted(src_i[o], np.arange(len(ids) + 1))
            for j in range(len(ids)):
                sel = o[bounds[j]:bounds[j + 1]]
                out[sel] = arrs[j][row[sel]]
            n += batch
        del arrs
        for m in maps:
            m.close()
    report("4 one copy: mmap window (MAP_POPULATE) + gather", t, n * rb)

    # 5. what the loader's direct path does: a batch = a run of `run` rows from each of
    #    batch/run random 4,096-row blocks, each run one preadv straight into the batch.
    from concurrent.futures import ThreadPoolExecutor

    block, run = min(4096, cr), 64
    fds = [os.open(p, os.O_RDONLY) for p in chunks]
    blocks = [(fd, b * block * rb) for fd in fds for b in range(cr // block)]
    m = batch // run
    outs = [np.empty(batch * rb, np.uint8) for _ in range(4)]

    def fill(job):
        ids, k, o = job
        view = memoryview(o)
        for j, i in enumerate(ids):
            fd, off = blocks[i]
            os.preadv(fd, [view[j * run * rb:(j + 1) * run * rb]], off + k * run * rb)

    order = rng.permutation(len(blocks))
    jobs = [(order[w:w + m], k, outs[(w // m * (block // run) + k) % 4])
            for w in range(0, len(order) - m + 1, m) for k in range(block // run)]
    for threads in (1, 2):
        t = clock()
        with ThreadPoolExecutor(threads) as ex:
            list(ex.map(fill, jobs))
        report(f"5 runs of {run} rows, one preadv each into the batch, {threads} thread(s)", t, len(jobs) * batch * rb)
    for fd in fds:
        os.close(fd)


if __name__ == "__main__":
    main()
