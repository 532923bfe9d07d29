"""project(): derived hooks bit-equal to float32(float64(X) @ float64(D).T), committed through the log,
seen by re-opened datasets, usable by take / batches / top-k / stats / correlate; old stores readable."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from actlake.schemas.errors import QueryError
from actlake.store.commitlog import CommitLog
from actlake.store.derived import check_derived_fragment
from actlake.store.fs import open_store

import actlake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_stores import text_store  # noqa: E402


@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_project_bit_equal_and_usable(tmp_path, dtype):
    uri, x, _ = text_store(str(tmp_path / "ds"), d=8, ties=False, dtype=dtype)
    ds = actlake.open_dataset(uri)
    D = np.random.default_rng(5).standard_normal((3, 8))
    assert ds.query.project("h", D, name="proj") == "proj"
    ref = (x.astype(np.float64) @ D.T).astype(np.float32)
    # the dataset that wrote it and a freshly opened one both see it
    for d in (ds, actlake.open_dataset(uri)):
        assert d.hooks["proj"]["shape"] == (3,) and d.hooks["proj"]["dtype"] == "float32"
        got = d.take(np.arange(d.num_rows), hooks="proj")["proj"].numpy()
        assert got.dtype == np.float32 and np.array_equal(got.view(np.uint32), ref.view(np.uint32))
    ds2 = actlake.open_dataset(uri)
    top = ds2.query.topk("proj", unit=1, k=5, context=-1)
    assert top.column("row_id").to_pylist() == np.lexsort((np.arange(len(ref)), -ref[:, 1]))[:5].tolist()
    st = ds2.query.stats("proj")
    np.testing.assert_allclose(st["mean"], ref.astype(np.float64).mean(0), rtol=1e-9)
    c = ds2.query.correlate("proj", "h").matrix
    np.testing.assert_allclose(c, np.corrcoef(ref, x, rowvar=False)[:3, 3:], rtol=1e-6, atol=1e-9)
    rows = []
    for b in ds2.batches(64, hooks=["proj", "h"], with_provenance=True, drop_last=False):
        rid = b["row_id"].numpy()
        assert np.array_equal(b["proj"].numpy(), ref[rid])
        rows.append(rid)
    assert np.array_equal(np.sort(np.concatenate(rows)), np.arange(len(ref)))
    # committed through the log with checksums that verify
    store = open_store(uri)
    snap = CommitLog(store).snapshot()
    (rec,) = snap.derived
    assert all(check_derived_fragment(store, f, rec) == [] for f in snap.fragments)
    assert json.loads(store.read_bytes("actlake.json"))["format_version"] == 2
    CommitLog(store).write_checkpoint(snap)  # consolidated checkpoints keep derived entries
    assert "proj" in actlake.open_dataset(uri).hooks
    from actlake.store.verify import verify_store

    assert verify_store(store).ok
    chunk = Path(store.path(f"{snap.fragments[1].path}/acts/{rec.info.array}/c/0/0"))
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 1
    chunk.write_bytes(bytes(raw))
    rep = verify_store(store)
    assert not rep.ok and any(rec.info.array in e for e in rep.errors)
    with pytest.raises(QueryError):
        ds2.query.project("h", D, name="proj")  # name taken
    with pytest.raises(QueryError):
        ds2.query.project("h", D[:, :5], name="other")  # wrong width


def test_derived_hook_hidden_when_not_covering_and_old_store_readable(tmp_path):
    import pyarrow as pa
    from actlake.store.writer import DatasetWriter

    uri, x, prov = text_store(str(tmp_path / "ds"), fragments=(40, 30), d=4, ties=False)
    old = actlake.open_dataset(uri)  # a format-1 store: no derived entries
    assert old.manifest.format_version == 1 and set(old.hooks) == {"h", "w"}
    old.query.project("h", np.eye(4)[:2], name="p2")
    # a fragment committed after the derived hook (a job still writing): the hook no longer covers
    # the snapshot.  The store is marked as still being written, since a complete job with an extra
    # commit is damage (ActivationDataset refuses it).
    from actlake.store.manifest_io import read_manifest, write_manifest

    m = read_manifest(open_store(uri))
    m.status = "writing"
    write_manifest(open_store(uri), m)
    w = DatasetWriter.__new__(DatasetWriter)
    w.store, w.log = open_store(uri), CommitLog(open_store(uri))
    w.snap, w.infos, w.chunk_rows, w._next_item = w.log.snapshot(), old.manifest.hooks, old.chunk_rows, 100
    w.infos = {k: v for k, v in w.infos.items() if k in ("h", "w")}
    n = 5
    w.add({"h": np.ones((n, 4), np.float32), "w": np.ones((n, 4), np.float32)},
          pa.table({"doc_id": np.zeros(n, np.int64), "context_id": np.full(n, 999), "context_pos": np.arange(n, dtype=np.int32),
                    "doc_pos": np.arange(n, dtype=np.int32), "token_id": np.arange(n, dtype=np.int32)}))
    again = actlake.open_dataset(uri)
    assert again.num_rows == 75 and "p2" not in again.hooks
