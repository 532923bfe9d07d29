"""BLAS thread policy of in-process scans: one layer of threads, never two.

A scan that runs several task threads, each calling a multi-threaded BLAS (numpy's OpenBLAS), puts
``threads × BLAS threads`` busy threads on the cores; OpenBLAS threads spin while they wait for
work, so the extra layer burns CPU instead of sharing it.  Measured on a 2-core machine
(correlate 512 × 512 over 1,048,576 bf16 rows, load average ~5 from other processes; process CPU
per row): 2 scan threads with BLAS at its default 2 threads 37.1 µs, 1 scan thread + 2 BLAS
threads 38.7 µs, **2 scan threads + 1 BLAS thread each 18.5 µs** (3.6× the rows/s of the default),
1 + 1 19.6 µs.  So while a scan runs more than one task thread, BLAS is limited to one thread per
call (``threadpoolctl``, the scikit-learn project's library for this); Ray workers already run BLAS
single-threaded (Ray sets ``OMP_NUM_THREADS`` to the task's CPUs).

The limit is process-wide for the scan's duration (BLAS libraries have no per-thread setting):
other threads of the same process calling BLAS during a scan run single-threaded too."""
from __future__ import annotations

import contextlib
from collections.abc import Iterator


@contextlib.contextmanager
def one_blas_thread_per_task(task_threads: int) -> Iterator[None]:
    """Within the block, BLAS calls use one thread each when ``task_threads > 1`` (else unchanged).

    Args:
        task_threads: how many scan threads will call BLAS concurrently.
    """
    if task_threads <= 1:
        yield
        return
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # an install without it: BLAS keeps its own threads (slower, still correct)
        yield
        return
    with threadpool_limits(limits=1, user_api="blas"):
        yield
