"""CRC-32C throughput on one thread and on two threads at once: the old checksum library
(``google_crc32c``, holds the GIL) against the one the store uses (``crc32c``, releases it).

    .venv/bin/python bench/crc_threads.py [--mb 128] [--reps 8]

Each thread checks its own buffer ``--reps`` times; "2 threads vs sequential" is the sequential
time of both threads' work over the time with both running at once (2.0 = fully parallel)."""
from __future__ import annotations

import argparse
import threading
import time

import numpy as np


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--mb", type=int, default=128, help="buffer per thread, MB")
    ap.add_argument("--reps", type=int, default=8, help="CRCs per thread")
    a = ap.parse_args()
    import crc32c

    impls = {"crc32c.crc32c (store)": crc32c.crc32c}
    try:
        import google_crc32c

        impls = {"google_crc32c.value (before)": google_crc32c.value, **impls}
    except ImportError:
        print("google_crc32c not installed: only the store's implementation is measured")
    bufs = [np.random.default_rng(i).integers(0, 255, a.mb << 20, dtype=np.uint8) for i in range(2)]
    gb = 2 * a.reps * a.mb / 1024
    for name, fn in impls.items():
        def work(x: np.ndarray, fn=fn) -> None:
            for _ in range(a.reps):
                fn(x)

        work(bufs[0])  # warm
        t = time.perf_counter()
        work(bufs[0])
        work(bufs[1])
        seq = time.perf_counter() - t
        threads = [threading.Thread(target=work, args=(b,)) for b in bufs]
        t = time.perf_counter()
        for th in threads:
            th.start()
        for th in threads:
            th.join()
        par = time.perf_counter() - t
        print(f"{name:30s} one thread {gb / seq:5.1f} GB/s   2 threads vs sequential {seq / par:.2f}x")


if __name__ == "__main__":
    main()
