"""Resume latency at any step, and loader memory vs store size.

    .venv/bin/python bench/resume.py STORE [STORE2 ...]

For each store: time from ``load_state_dict`` at step N (first, middle, last batch) to the first
batch delivered (warm and cold cache), and the peak RSS of a full shuffled epoch in a fresh process,
so stores of different sizes show whether memory grows with the store (it should not)."""
from __future__ import annotations

import json
import resource
import subprocess
import sys
import time
from pathlib import Path

import actlake


def warm_cache(uri: str) -> None:
    """Read every file of a local store once, so the next measurement is from the page cache."""
    for path in Path(uri).rglob("*"):
        if path.is_file():
            with open(path, "rb") as f:
                while f.read(1 << 24):
                    pass


def first_batch_after(uri: str, step: int, cold: bool) -> float:
    if cold:
        subprocess.run("sync; echo 3 > /proc/sys/vm/drop_caches", shell=True, check=False)
    else:
        warm_cache(uri)
    ds = actlake.open_dataset(uri)
    t = time.perf_counter()
    s = ds.batches(4096, seed=0)
    s.load_state_dict({**s.state_dict(), "step": step})
    next(iter(s))
    return time.perf_counter() - t


def epoch_rss(uri: str) -> None:
    ds = actlake.open_dataset(uri)
    n = sum(b[next(iter(b))].shape[0] for b in ds.batches(4096, seed=0))
    print(json.dumps({"rows": n, "peak_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}))


def main() -> None:
    if sys.argv[1] == "_rss":
        return epoch_rss(sys.argv[2])
    for uri in sys.argv[1:]:
        ds = actlake.open_dataset(uri)
        n = len(ds.batches(4096, seed=0))
        t0 = time.perf_counter()
        actlake.open_dataset(uri)
        print(f"{uri}: {ds.num_rows:,} rows, {n} batches of 4096; open {1e3 * (time.perf_counter() - t0):.0f} ms")
        for step in (0, n // 2, n - 1):
            warm = first_batch_after(uri, step, cold=False)
            cold = first_batch_after(uri, step, cold=True)
            print(f"  resume at step {step:>5}: first batch after {warm:.3f} s warm, {cold:.3f} s cold")
        out = subprocess.run([sys.executable, __file__, "_rss", uri], capture_output=True, text=True, check=True)
        r = json.loads(out.stdout.strip().splitlines()[-1])
        print(f"  full shuffled epoch ({r['rows']:,} rows): peak RSS {r['peak_rss_mb']:,.0f} MB")


if __name__ == "__main__":
    main()
