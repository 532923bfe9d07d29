"""Issue 10 (seams): ``StreamRuntime`` (client/runtime.py) — its shutdown order leaves no thread and no
borrowed buffer behind on every way a stream ends, and an output array is never reused while the
trainer still holds a tensor of it."""
from __future__ import annotations

import gc
import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from stores import make_store

import actlake
from actlake.client.buffers import OutputPool
from actlake.schemas.errors import StoreDamagedError

SHAPE = {"fragments": (700, 513, 64, 1), "chunk_rows": 128}
HERE = os.path.dirname(os.path.abspath(__file__))


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return make_store(str(tmp_path_factory.mktemp("rt") / "ds"), **SHAPE)


def _loader_threads() -> list[str]:
    prefixes = ("actlake-batch", "actlake-io", "actlake-window")
    return [t.name for t in threading.enumerate() if t.name.startswith(prefixes)]


def _assert_released(ds) -> None:
    """No loader thread alive; the output pool is back in the dataset's cache."""
    assert not _loader_threads()
    pool = ds.access.buffers.take(("out", False))
    assert isinstance(pool, OutputPool)
    ds.access.buffers.give(("out", False), pool)


def _rows(batches) -> np.ndarray:
    return np.concatenate([b["row_id"].numpy() for b in batches])


@pytest.mark.parametrize("direct", [True, False])
@pytest.mark.parametrize("how", ["close", "del", "break", "raise"])
def test_abandoned_stream_stops_its_threads_and_returns_its_buffers(uri, direct, how):
    ds = actlake.open_dataset(uri)
    whole = ds.batches(32, with_provenance=True, prefetch=0)
    whole._direct = direct
    want = _rows(whole)
    s = ds.batches(32, with_provenance=True, prefetch=0)
    s._direct = direct
    if how in ("close", "del"):
        it = iter(s)
        first = next(it)
        next(it)
        assert _loader_threads()  # the runtime is running
        if how == "close":
            it.close()
        else:
            del it
            gc.collect()
    elif how == "break":
        for b in s:
            first = b
            break
    else:
        with pytest.raises(RuntimeError, match="trainer"):
            for b in s:
                first = b
                raise RuntimeError("trainer failed")
    _assert_released(ds)
    assert np.array_equal(first["row_id"].numpy(), want[:32])
    # the next stream of the same dataset (reusing the buffers given back) is unaffected
    again = ds.batches(32, with_provenance=True, prefetch=0)
    again._direct = direct
    assert np.array_equal(_rows(again), want)
    _assert_released(ds)


@pytest.mark.parametrize("direct", [True, False])
def test_a_worker_error_reaches_the_trainer_and_the_runtime_still_shuts_down(tmp_path, direct):
    uri = make_store(str(tmp_path / "d"), **SHAPE)
    path = actlake.open_dataset(uri).access.reader(1).chunk_path("h", 2)
    with open(path, "r+b") as f:  # one flipped byte: the read or its checksum fails in a worker thread
        f.seek(100)
        b = f.read(1)
        f.seek(100)
        f.write(bytes([b[0] ^ 0x40]))
    ds = actlake.open_dataset(uri)
    s = ds.batches(64, drop_last=False, hooks=["h"])
    s._direct = direct
    with pytest.raises(StoreDamagedError):
        list(s)
    _assert_released(ds)


def test_normal_end_releases_everything_and_state_is_exact(uri):
    ds = actlake.open_dataset(uri)
    s = ds.batches(50, drop_last=False, with_provenance=True, seed=3)
    rows = _rows(s)
    assert np.array_equal(np.sort(rows), np.arange(ds.num_rows))
    assert s.state_dict()["step"] == len(s)
    _assert_released(ds)


@pytest.mark.parametrize("direct", [True, False])
def test_held_batches_are_never_overwritten_and_dropped_ones_are_reused(uri, direct):
    ds = actlake.open_dataset(uri)
    s = ds.batches(16, drop_last=False, with_provenance=True, prefetch_batches=2)
    s._direct = direct
    held, copies, ptrs = [], [], []
    for i, b in enumerate(s):
        ptrs.append(b["h"].data_ptr())
        if i % 4 == 0:  # the trainer keeps every fourth batch (a view of it, to be strict)
            held.append((b["h"][1:], b["row_id"]))
            copies.append((b["h"][1:].clone(), b["row_id"].clone()))
    for (h, r), (hc, rc) in zip(held, copies, strict=True):
        assert np.array_equal(h.numpy(), hc.numpy()) and np.array_equal(r.numpy(), rc.numpy())
        assert (h[:, 0].numpy() == r[1:].numpy()).all()  # make_store: column 0 holds the row id
    assert len(set(ptrs)) < len(ptrs) // 2  # dropped outputs went back to the pool


@pytest.mark.parametrize("direct", [True, False])
def test_an_unfinished_stream_at_interpreter_exit_exits_cleanly(uri, direct):
    code = textwrap.dedent(f"""
        import sys
        sys.path.insert(0, {HERE!r})
        import actlake
        ds = actlake.open_dataset({uri!r})
        s = ds.batches(32, prefetch=2)
        s._direct = {direct}
        IT = iter(s)
        next(IT)
        next(IT)
        print("ok", flush=True)
    """)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "ok"
    assert "Traceback" not in r.stderr and "Exception ignored" not in r.stderr, r.stderr
