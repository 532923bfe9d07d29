"""Commit log: frozen snapshots, bounded retries with a typed conflict, the writer lease on stores
without atomic create, and two processes racing to commit the same entry on a real S3 server."""
from __future__ import annotations

import dataclasses
import json
import multiprocessing as mp
import uuid

import numpy as np
import pyarrow as pa
import pytest

from actlake.schemas.errors import CommitConflictError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store import CommitLog, open_store, write_fragment
from actlake.store import commitlog as commitlog_mod
from actlake.store import layout


def _record(store, unit: int, attempt: str, rows: int = 5) -> FragmentRecord:
    info = HookInfo(name="h", module="h", io="output", array="h", shape=[4], dtype="float32", storage_dtype="float32")
    prov = pa.table({"doc_id": np.full(rows, unit), "context_id": np.arange(rows)})
    path = f"{layout.FRAGMENTS}/u{unit:09d}-{attempt}"
    digest = write_fragment(store, path, {"h": np.ones((rows, 4), "float32")}, prov, {"h": info}, 4)
    return FragmentRecord(unit_id=f"u{unit:09d}", unit_index=unit, path=path, num_rows=rows, num_items=1,
                          source_range=(unit, unit + 1), checksums_sha256=digest.digest, attempt=attempt)


def test_snapshot_is_frozen(tmp_path):
    store = open_store(str(tmp_path))
    log = CommitLog(store)
    log.commit(_record(store, 0, "a"), log.snapshot())
    snap = log.snapshot()
    with pytest.raises(dataclasses.FrozenInstanceError):
        snap.version = 7  # type: ignore[misc]
    with pytest.raises(ValueError):
        snap.offsets[0] = 3
    assert isinstance(snap.fragments, tuple) and snap.num_rows == 5


def test_lost_races_are_bounded_and_typed(tmp_path, monkeypatch):
    store = open_store(str(tmp_path))
    log = CommitLog(store)
    log.commit(_record(store, 0, "a"), log.snapshot())
    monkeypatch.setattr(commitlog_mod, "MAX_COMMIT_ATTEMPTS", 3)
    monkeypatch.setattr(commitlog_mod, "BACKOFF", (0.0, 0.0))
    # a committer whose every create loses (another writer always got there first)
    monkeypatch.setattr(store, "put_if_absent", lambda rel, data: False)
    with pytest.raises(CommitConflictError):
        log.commit(_record(store, 1, "b"), log.snapshot())


def test_store_without_atomic_create_refuses_a_second_writer():
    store = open_store(f"memory://lease-{uuid.uuid4().hex[:8]}/ds")
    assert not store.supports_atomic_create
    first, second = CommitLog(store), CommitLog(store)
    ok, _ = first.commit(_record(store, 0, "a"), first.snapshot())
    assert ok and store.exists(layout.WRITER_LEASE)
    with pytest.raises(CommitConflictError):
        second.commit(_record(store, 1, "b"), second.snapshot())
    first.close()  # released: the next writer may commit
    ok2, snap = second.commit(_record(store, 1, "b"), second.snapshot())
    assert ok2 and [f.unit_index for f in snap.fragments] == [0, 1]
    second.close()
    assert not store.exists(layout.WRITER_LEASE)


def _race(uri: str, opts: dict, attempt: str, start, out) -> None:
    store = open_store(uri, opts)
    log = CommitLog(store)
    snap = log.snapshot()
    rec = FragmentRecord.model_validate_json(store.read_bytes(f"rec-{attempt}.json"))
    start.wait()
    ok, _ = log.commit(rec, snap)
    out.put((attempt, ok))


def test_two_processes_race_to_commit_the_same_entry_on_s3(s3_server, s3_uri):
    """Both processes see version -1 and try to create commit 0 for the same unit at once."""
    store = open_store(s3_uri, s3_server.storage_options)
    assert store.supports_atomic_create
    for attempt in ("p", "q"):
        store.write_bytes(f"rec-{attempt}.json", _record(store, 0, attempt).model_dump_json().encode())
    ctx = mp.get_context("spawn")
    start, out = ctx.Barrier(2), ctx.Queue()
    procs = [ctx.Process(target=_race, args=(s3_uri, s3_server.storage_options, a, start, out)) for a in ("p", "q")]
    for p in procs:
        p.start()
    results = dict(out.get(timeout=60) for _ in procs)
    for p in procs:
        p.join(30)
    assert sorted(results.values()) == [False, True]  # exactly one process committed the unit
    snap = CommitLog(store).snapshot()
    winner = [a for a, ok in results.items() if ok][0]
    assert [f.attempt for f in snap.fragments] == [winner]
    assert json.loads(store.read_bytes(layout.commit_name(0)))["fragment"]["attempt"] == winner
    assert not store.exists(layout.commit_name(1))


def test_racing_threads_commit_distinct_units_exactly_once_on_s3(s3_server, s3_uri):
    from concurrent.futures import ThreadPoolExecutor

    store = open_store(s3_uri, s3_server.storage_options)
    recs = [_record(store, u, "x", rows=3) for u in range(6)]

    def commit(rec):
        log = CommitLog(store)
        return log.commit(rec, log.snapshot())[0]

    with ThreadPoolExecutor(6) as pool:
        results = list(pool.map(commit, recs + recs))
    assert sum(results) == 6
    snap = CommitLog(store).snapshot()
    assert sorted(f.unit_index for f in snap.fragments) == list(range(6)) and snap.num_rows == 18
