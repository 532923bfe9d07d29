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
import threading
from collections.abc import Iterator
from typing import Any


@contextlib.contextmanager
def one_blas_thread_per_task(task_threads: int) -> Iterator[None]:
    """Within the block, BLAS calls use one thread each when ``task_threads > 1`` (else unchanged).

    Args:
        task_threads: how many scan threads will call BLAS concurrently.
    """
    controller = _controller() if task_threads > 1 else None
    if controller is None:
        yield
        return
    global _ACTIVE, _LIMITER
    with _LOCK:  # overlapping scans (two queries at once) share one limit; the last one out restores
        if _ACTIVE == 0:
            _LIMITER = controller.limit(limits=1, user_api="blas")
        _ACTIVE += 1
    try:
        yield
    finally:
        with _LOCK:
            _ACTIVE -= 1
            if _ACTIVE == 0 and _LIMITER is not None:
                _LIMITER.restore_original_limits()
                _LIMITER = None


_CONTROLLER: list = []  # the process's ThreadpoolController (finding the libraries costs ~17 ms: once)
_LOCK = threading.Lock()
_ACTIVE = 0  # scans inside one_blas_thread_per_task
_LIMITER: Any = None


def _controller() -> Any:
    """threadpoolctl's view of the loaded BLAS/OpenMP libraries, made once; None without threadpoolctl
    (BLAS then keeps its own threads: slower, still correct)."""
    with _LOCK:
        if not _CONTROLLER:
            try:
                from threadpoolctl import ThreadpoolController
            except ImportError:
                _CONTROLLER.append(None)
            else:
                _CONTROLLER.append(ThreadpoolController())
        return _CONTROLLER[0]
