"""Wall-clock A/B of the range scan's read-ahead (``FragmentReader.prefetch``: the next block's chunk
files requested with ``posix_fadvise(WILLNEED)`` while this block computes), cold and warm.

    .venv/bin/python bench/prefetch_ab.py [--uri STORE] [--rounds 2]

Default store: bench/analysis.py's 1,048,576-row store (built under its default --dir if missing).
Before each cold run the chunk files of hooks ``a`` and ``b`` are evicted from the page cache
(``posix_fadvise(DONTNEED)``); then ``ds.query.correlate("a", "b", threads=2)`` runs with and
without the read-ahead, alternated in one process.  Prints rows/s and CPU µs per row."""
from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))


def chunk_files(uri: str, ds, hooks: tuple[str, ...]) -> list[str]:
    out = []
    for f in ds.snapshot.fragments:
        for h in hooks:
            for root, _, names in os.walk(os.path.realpath(os.path.join(uri, f.path, "acts", h)), followlinks=True):
                out += [os.path.join(root, n) for n in names if n != "zarr.json"]
    return out


def evict(files: list[str]) -> None:
    for f in files:
        fd = os.open(f, os.O_RDONLY)
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
        finally:
            os.close(fd)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--uri", default=None, help="a store with bf16 hooks a and b (default: bench/analysis.py's)")
    ap.add_argument("--rounds", type=int, default=2)
    a = ap.parse_args()
    import actlake
    from actlake.query.rangescan import RangeScan

    uri = a.uri
    if uri is None:
        import analysis

        uri = str(analysis.build(Path("/tmp/actlake-bench-analysis"), 1 << 20))
    ds = actlake.open_dataset(uri)
    files = chunk_files(uri, ds, ("a", "b"))
    with_prefetch = RangeScan._prefetch
    variants = {"no read-ahead": lambda self, r0, r1: None, "read-ahead": with_prefetch}
    print(f"{ds.num_rows:,} rows, {len(files)} chunk files of hooks a and b")
    for _ in range(a.rounds):
        for label, fn in variants.items():
            RangeScan._prefetch = fn  # type: ignore[method-assign]
            for state in ("cold", "warm"):
                if state == "cold":
                    evict(files)
                t, c = time.perf_counter(), time.process_time()
                ds.query.correlate("a", "b", threads=2)
                w, cpu = time.perf_counter() - t, time.process_time() - c
                print(f"{label:14s} {state}: {ds.num_rows / w:9,.0f} rows/s   CPU {cpu / ds.num_rows * 1e6:5.2f} µs/row",
                      flush=True)
    RangeScan._prefetch = with_prefetch  # type: ignore[method-assign]


if __name__ == "__main__":
    main()
