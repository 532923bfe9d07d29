"""One layer of threads in in-process scans: BLAS runs single-threaded while several scan threads
call it (query/blas.py), and gets its own thread count back afterwards."""
from __future__ import annotations

import numpy as np
import pytest

from actlake.query.blas import one_blas_thread_per_task

threadpoolctl = pytest.importorskip("threadpoolctl")


def _blas_threads() -> list[int]:
    """Thread counts of the BLAS libraries the scans' policy manages (numpy's), read from the
    libraries now.  Libraries loaded later by other tests (scipy ships its own OpenBLAS) are not
    numpy's and are left alone."""
    from actlake.query.blas import _controller

    mine = {lib.filepath for lib in _controller().lib_controllers if lib.user_api == "blas"}
    return [i["num_threads"] for i in threadpoolctl.threadpool_info()
            if i["user_api"] == "blas" and i["filepath"] in mine]


def test_limits_blas_while_several_task_threads_run_and_restores_after():
    np.ones((4, 4)) @ np.ones((4, 4))  # BLAS loaded
    import scipy.linalg  # noqa: F401  (another BLAS in the process, as in the full suite)

    before = _blas_threads()
    assert before, "numpy's BLAS is not visible to threadpoolctl"
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outer = _blas_threads()
        with one_blas_thread_per_task(2):
            assert _blas_threads() == [1] * len(outer)
        assert _blas_threads() == outer
        with one_blas_thread_per_task(1):  # one task thread: BLAS keeps its threads
            assert _blas_threads() == outer
    assert _blas_threads() == before


def test_scan_results_do_not_depend_on_the_blas_policy(tmp_path):
    """The same correlation with 1 task thread (BLAS threaded) and 3 (BLAS single-threaded)."""
    import pyarrow as pa

    import actlake
    from actlake.store.writer import DatasetWriter

    rng = np.random.default_rng(0)
    a = rng.standard_normal((3000, 24)).astype(np.float32)
    w = DatasetWriter(str(tmp_path / "s"), {"a": ((24,), "float32")}, chunk_rows=256)
    for lo in range(0, 3000, 1000):
        rid = np.arange(lo, lo + 1000)
        w.add({"a": a[lo:lo + 1000]}, pa.table({"doc_id": rid // 100, "context_id": rid // 100,
                                               "context_pos": (rid % 100).astype(np.int32),
                                               "token_id": (rid % 7).astype(np.int32)}))
    w.close()
    ds = actlake.open_dataset(str(tmp_path / "s"))
    one = ds.query.correlate("a", threads=1).matrix
    three = ds.query.correlate("a", threads=3).matrix
    np.testing.assert_allclose(one, three, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(one, np.corrcoef(a.astype(np.float64), rowvar=False), rtol=1e-10, atol=1e-12)


def test_overlapping_scans_restore_blas_threads_once_the_last_one_ends():
    """Two queries at once (e.g. a Flight server): the first to end must not lift the second's
    limit, and the last to end restores the original thread count (not the other's limit)."""
    np.ones((4, 4)) @ np.ones((4, 4))
    with threadpoolctl.threadpool_limits(limits=2, user_api="blas"):
        outer = _blas_threads()
        first = one_blas_thread_per_task(2)
        second = one_blas_thread_per_task(2)
        first.__enter__()
        second.__enter__()
        first.__exit__(None, None, None)
        assert _blas_threads() == [1] * len(outer)
        second.__exit__(None, None, None)
        assert _blas_threads() == outer
