"""Helpers shared by bench/loader.py (project venv) and bench/peers/*.py (.venv-bench).

Only the standard library, numpy and pyarrow: nothing here imports actlake, so the peers' venv can
use it without the project installed.

The *plan* (``plan.json``) is how the two venvs share a store without sharing code: loader.py
lists, with the actlake API, every chunk file and provenance file of the store in storage order;
the raw reader and the peers' converters read those files directly."""
from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

RESULT_MARK = "BENCH_RESULT "


# ---- results ----------------------------------------------------------------------------------
def emit(result: dict) -> None:
    """Print one result as the last stdout line; the parent reads the line after RESULT_MARK."""
    result.setdefault("peak_rss_mb", peak_rss_mb())
    kids = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024.0
    if kids:  # e.g. DataLoader workers (ru_maxrss of a forked child starts at its parent's peak)
        result.setdefault("children_peak_rss_mb", kids)
    sys.stdout.write(RESULT_MARK + json.dumps(result) + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    """Peak RSS (VmHWM) of this process, in MB.  Not ru_maxrss: Linux carries that over exec from
    the (large) parent that started us."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


class Meter:
    """Counts rows of a stream: time to first batch, total, and steady state after ``skip``."""

    def __init__(self, row_bytes: int):
        self.row_bytes = row_bytes
        self.load0 = os.getloadavg()[0]
        self.cpu0 = time.process_time()  # all threads of this process
        self.times0 = os.times()
        self.t0 = time.perf_counter()
        self.first = None
        self.rows = 0
        self.batches = 0
        self.t_steady = None
        self.rows_at_steady = 0

    def add(self, rows: int) -> None:
        now = time.perf_counter()
        if self.first is None:
            self.first = now - self.t0
            self.t_steady, self.rows_at_steady = now, rows
        self.rows += rows
        self.batches += 1
        self.t_end = now

    def result(self, **extra) -> dict:
        total = self.t_end - self.t0 if self.batches else float("nan")
        steady_rows = self.rows - self.rows_at_steady
        steady = (self.t_end - self.t_steady) if self.batches > 1 else float("nan")
        cpu = time.process_time() - self.cpu0
        t1 = os.times()
        gb = self.rows * self.row_bytes / 1e9 if self.rows else float("nan")
        out = {
            "rows": self.rows, "batches": self.batches, "seconds": total,
            # CPU seconds of this process (all threads) per GB delivered: less sensitive than wall
            # time to other work on the machine; load average = how busy the machine was
            "cpu_s": cpu, "cpu_s_per_gb": cpu / (self.rows * self.row_bytes / 1e9) if self.rows else None,
            # user = Python + numpy/torch copies; sys = kernel (page-cache copies in read/readinto, page faults)
            "user_s_per_gb": (t1.user - self.times0.user) / gb, "sys_s_per_gb": (t1.system - self.times0.system) / gb,
            "loadavg_1m": [self.load0, os.getloadavg()[0]],
            "first_batch_s": self.first,
            "rows_per_s": self.rows / total if self.batches else None,
            "mb_per_s": self.rows * self.row_bytes / total / 1e6 if self.batches else None,
            # after the first batch (startup, buffer fill) -- the figure used for the slow peers
            "steady_rows_per_s": steady_rows / steady if self.batches > 1 and steady > 0 else None,
        }
        out.update(extra)
        return out


# ---- the plan ---------------------------------------------------------------------------------
def load_plan(path: str | Path) -> dict:
    return json.loads(Path(path).read_text())


def plan_files(plan: dict) -> list[str]:
    out = []
    for f in plan["fragments"]:
        out.extend(f["chunks"])
        out.append(f["provenance"])
    return out


def read_fragment_rows(plan: dict, frag: dict) -> np.ndarray:
    """All valid rows of one fragment (storage order) as a (rows, *shape) array."""
    dt = np.dtype(plan["storage_dtype"])
    shape = tuple(plan["shape"])
    parts = [np.fromfile(p, dtype=dt).reshape(-1, *shape) for p in frag["chunks"]]
    return np.concatenate(parts)[: frag["rows"]]


def read_fragment_provenance(frag: dict, columns=("context_id", "context_pos", "token_id")):
    import pyarrow.parquet as pq

    t = pq.read_table(frag["provenance"], columns=list(columns))
    return {c: t.column(c).to_numpy() for c in columns}


def context_order(prov: dict) -> np.ndarray:
    """Permutation putting a fragment's rows back into extraction order (context, position)."""
    return np.lexsort((prov["context_pos"], prov["context_id"]))


# ---- identifying rows in a peer's output ------------------------------------------------------
_P = np.array([0x9E3779B97F4A7C15, 0xC2B2AE3D27D4EB4F, 0x165667B19E3779F9, 0x27D4EB2F165667C5], dtype=np.uint64)
KEY_COLS = 16  # fp16 values hashed per row (32 bytes)


def row_keys(rows) -> np.ndarray:
    """A 64-bit key per row from the bits of its first 16 values (fp16/bf16 storage, 2 bytes each).

    Peers return rows as tensors without ids; the key maps each returned row back to its context
    (loader.py checks the keys of the store are unique).  Accepts numpy arrays or torch tensors."""
    if hasattr(rows, "numpy"):  # torch tensor
        import torch

        t = rows.detach().cpu()
        if t.dtype != torch.float16:
            t = t.to(torch.float16)
        rows = t.numpy()
    a = np.ascontiguousarray(np.asarray(rows).reshape(len(rows), -1)[:, :KEY_COLS]).view(np.uint64)
    with np.errstate(over="ignore"):
        return (a * _P[: a.shape[1]]).sum(axis=1, dtype=np.uint64)


class KeyMap:
    """Sorted row keys of the whole store → global row id (built once by loader.py)."""

    def __init__(self, path: str | Path):
        z = np.load(path)
        self.keys, self.row_ids = z["keys"], z["row_ids"]

    def row_ids_of(self, rows) -> np.ndarray:
        """Global row id of each given row, -1 where a row is not in the store."""
        k = row_keys(rows)
        i = np.minimum(np.searchsorted(self.keys, k), len(self.keys) - 1)
        return np.where(self.keys[i] == k, self.row_ids[i], -1)


# ---- caches -----------------------------------------------------------------------------------
def all_files(paths) -> list[str]:
    out = []
    for p in paths:
        p = str(p)
        if os.path.isdir(p):
            for root, _, files in os.walk(p):
                out.extend(os.path.join(root, f) for f in files)
        elif os.path.exists(p):
            out.append(p)
    return out


def warm_files(paths) -> int:
    """Read files once so they are in the page cache; returns bytes read."""
    n = 0
    buf = bytearray(16 << 20)
    for f in all_files(paths):
        with open(f, "rb", buffering=0) as fh:
            while True:
                k = fh.readinto(buf)
                if not k:
                    break
                n += k
    return n


def evict(paths, method: str) -> str:
    """Make the next read of ``paths`` cold.  ``drop_caches`` (all page cache, needs root) or
    ``fadvise`` (POSIX_FADV_DONTNEED on every file of ``paths``).  Returns the method used."""
    if method == "drop_caches":
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return method
    for f in all_files(paths):
        fd = os.open(f, os.O_RDONLY)
        try:
            os.fdatasync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)
    return "fadvise"


def can_drop_caches() -> tuple[bool, str]:
    try:
        os.sync()
        with open("/proc/sys/vm/drop_caches", "w") as f:
            f.write("3\n")
        return True, ""
    except OSError as e:
        return False, f"{type(e).__name__}: {e}"


def peer_cli(doc: str, convert, read, convert_args, read_args) -> None:
    """The shared command line of the peer scripts: ``convert --plan --out …`` and
    ``read --plan --batch-size --batches --keymap --ids-out …`` plus each peer's own options."""
    import argparse

    p = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("convert")
    c.add_argument("--plan", required=True)
    c.add_argument("--out", required=True)
    convert_args(c)
    r = sub.add_parser("read")
    r.add_argument("--plan", required=True)
    r.add_argument("--batch-size", type=int, default=4096)
    r.add_argument("--batches", type=int, default=20)
    r.add_argument("--keymap")
    r.add_argument("--ids-out")
    read_args(r)
    a = p.parse_args()
    (convert if a.cmd == "convert" else read)(a)
