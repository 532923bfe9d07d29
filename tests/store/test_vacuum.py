"""``actlake vacuum``: uncommitted attempt directories go, committed fragments and recent attempts stay."""
from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pyarrow as pa
import pytest

from actlake.schemas.errors import JobSpecError, NotADatasetError
from actlake.store import open_store, verify_store
from actlake.store import layout
from actlake.store.fragment import write_fragment
from actlake.store.vacuum import find_garbage, vacuum
from actlake.store.writer import DatasetWriter


def _dataset_with_garbage(uri: str, opts: dict | None) -> tuple[DatasetWriter, list[str]]:
    w = DatasetWriter(uri, {"h": ((4,), "float32")}, chunk_rows=8, storage_options=opts)
    for i in range(2):
        w.add({"h": np.full((10, 4), i, "float32")}, pa.table({"doc_id": np.full(10, i), "context_id": np.arange(10)}))
    prov = pa.table({"doc_id": np.zeros(10, "int64"), "context_id": np.arange(10)})
    junk = [f"{layout.FRAGMENTS}/u000000000-retry0001", f"{layout.FRAGMENTS}/u000000002-killed01"]
    for p in junk:  # a retried attempt of a committed unit, and a killed worker's unit
        write_fragment(w.store, p, {"h": np.ones((10, 4), "float32")}, prov, w.infos, 8)
    w.close()
    return w, junk


@pytest.fixture(params=["local", "s3"])
def target(request, tmp_path):
    if request.param == "local":
        return str(tmp_path / "ds"), None
    srv = request.getfixturevalue("s3_server")
    return f"s3://{srv.bucket}/vac-{os.urandom(4).hex()}", srv.storage_options


def test_vacuum_deletes_only_uncommitted_attempts(target):
    uri, opts = target
    w, junk = _dataset_with_garbage(uri, opts)
    store = open_store(uri, opts)
    assert find_garbage(store, older_than=3600) == []  # recent: may belong to a running job
    dry = vacuum(store, older_than=0, dry_run=True)
    assert sorted(g.path for g in dry) == sorted(junk)
    assert all(store.exists(f"{p}/{layout.CHECKSUMS}") for p in junk)  # dry run deletes nothing
    done = vacuum(store, older_than=0)
    assert sorted(g.path for g in done) == sorted(junk) and all(g.bytes > 0 for g in done)
    assert store.list_objects(junk[0]) == [] and store.list_objects(junk[1]) == []
    assert verify_store(store).ok and verify_store(store).rows == 20  # committed fragments untouched
    assert vacuum(store, older_than=0) == []


def test_vacuum_refuses_a_non_dataset_and_bad_durations(tmp_path):
    from actlake.cli_vacuum import parse_duration

    (tmp_path / "x").mkdir()
    with pytest.raises(NotADatasetError):
        vacuum(open_store(str(tmp_path / "x")), 0)
    assert parse_duration("90m") == 5400 and parse_duration("2d") == 172800 and parse_duration("5") == 5
    with pytest.raises(JobSpecError):
        parse_duration("soon")


def test_vacuum_cli_on_s3(s3_server, s3_uri):
    _, junk = _dataset_with_garbage(s3_uri, s3_server.storage_options)
    env = {**os.environ, **s3_server.env()}
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "vacuum", s3_uri, "--older-than", "0s", "--dry-run"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert all(p in r.stdout for p in junk) and "would free" in r.stdout
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "vacuum", s3_uri, "--older-than", "soon"],
                       env=env, capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and r.stderr.strip().startswith("error:")
