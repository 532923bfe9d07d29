"""Issue 7, read side: damage is detected by reads, not only by ``verify`` (A13), and read-side
mistakes raise typed one-line errors instead of tracebacks or silent wrong rows (B17)."""
from __future__ import annotations

import json
import os
import warnings

import numpy as np
import pytest

import actlake
from actlake.client.batches import EmptyStreamWarning
from actlake.schemas.errors import NotADatasetError, RowIdError, StoreDamagedError, StreamStateError
from actlake.store import layout
from actlake.store.fs import open_store
from actlake.store.verify import verify_store
from actlake.store.writer import DatasetWriter
from stores import make_store


def _flip(path: str, offset: int) -> None:
    with open(path, "r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0x01]))


@pytest.fixture
def damaged(tmp_path):
    """A store with one flipped bit in the middle of fragment 1's chunk 2 of hook h (rows 64..95)."""
    uri = make_store(str(tmp_path / "d"))
    ds = actlake.open_dataset(uri)
    path = ds.access.reader(1).chunk_path("h", 2)
    _flip(path, os.path.getsize(path) // 2 + 1)
    return uri, path


def test_take_detects_a_flipped_byte(damaged):
    uri, path = damaged
    ds = actlake.open_dataset(uri)
    offset = int(ds.snapshot.offsets[1])
    ds.take([0, 1, 2], "h")  # other chunks read fine
    with pytest.raises(StoreDamagedError) as e:
        ds.take([offset + 70], "h")
    assert e.value.path == path
    # opting out returns the bytes as they are (the damaged value differs from the written one)
    raw = actlake.open_dataset(uri, verify_reads=False).take(np.arange(offset + 64, offset + 96), "h")["h"]
    expected = np.arange(offset + 64, offset + 96, dtype=np.float32)
    assert int((raw[:, 0].numpy() != expected).sum()) == 1  # the flipped bit sits in column 0 of one row


@pytest.mark.parametrize("kw", [{}, {"shuffle": False}, {"filter": {"min_position": 0}}, {"world_size": 2, "rank": 1},
                                {"block_rows": 8, "buffer_rows": 64}])
def test_batches_detect_a_flipped_byte(damaged, kw):
    uri, path = damaged
    ds = actlake.open_dataset(uri)
    rank_kw = {k: kw[k] for k in ("rank", "world_size") if k in kw}
    with pytest.raises(StoreDamagedError) as e:
        for w in range(1 if not rank_kw else 2):  # the damaged chunk is read by one of the ranks
            for _ in ds.batches(16, seed=0, drop_last=False, **{**kw, **({"rank": w} if rank_kw else {})}):
                pass
    assert e.value.path == path


def test_unverified_reads_stream_the_damaged_bytes(damaged):
    uri, _ = damaged
    ds = actlake.open_dataset(uri, verify_reads=False)
    n = sum(len(b["h"]) for b in ds.batches(16, seed=0, drop_last=False))
    assert n == ds.num_rows


def test_compressed_chunk_damage_and_truncation_are_named(tmp_path):
    uri = make_store(str(tmp_path / "z"), codec="zstd")
    ds = actlake.open_dataset(uri)
    path = ds.access.reader(0).chunk_path("h", 1)
    _flip(path, os.path.getsize(path) - 5)
    with pytest.raises(StoreDamagedError) as e:
        actlake.open_dataset(uri).take([40], "h")
    assert e.value.path == path
    with open(path, "r+b") as f:
        f.truncate(10)
    for verify in (True, False):  # unverified, the codec itself fails: still typed, still named
        with pytest.raises(StoreDamagedError) as e:
            actlake.open_dataset(uri, verify_reads=verify).take([40], "h")
        assert e.value.path == path


def test_truncated_provenance_is_named(tmp_path):
    uri = make_store(str(tmp_path / "p"))
    ds = actlake.open_dataset(uri)
    path = ds.store.path(f"{ds.snapshot.fragments[0].path}/{layout.PROVENANCE}")
    with open(path, "r+b") as f:
        f.truncate(os.path.getsize(path) // 2)
    for verify in (True, False):
        with pytest.raises(StoreDamagedError) as e:
            actlake.open_dataset(uri, verify_reads=verify).provenance([0, 1])
        assert e.value.path == path


def test_a_complete_store_missing_commits_does_not_open(tmp_path):
    uri = make_store(str(tmp_path / "c"))
    store = open_store(uri)
    # a copy that lost its checkpoint and its last commit files
    for name in store.listdir(layout.COMMITS):
        if "checkpoint" in name:
            os.remove(store.path(f"{layout.COMMITS}/{name}"))
    os.remove(store.path(layout.commit_name(3)))
    with pytest.raises(StoreDamagedError):
        actlake.open_dataset(uri)
    assert not verify_store(store).ok


@pytest.mark.parametrize("kind", ["file", "empty folder", "missing", "other folder"])
def test_not_a_dataset(tmp_path, kind):
    target = tmp_path / "x"
    if kind == "file":
        target.write_text("hello")
    elif kind == "empty folder":
        target.mkdir()
    elif kind == "other folder":
        target.mkdir()
        (target / "data.parquet").write_bytes(b"PAR1")
    with pytest.raises(NotADatasetError):
        actlake.open_dataset(str(target))
    if kind != "missing":
        with pytest.raises(NotADatasetError):
            verify_store(open_store(str(target)))


def test_bad_manifest_is_damage(tmp_path):
    uri = make_store(str(tmp_path / "m"))
    with open(os.path.join(uri, layout.MANIFEST), "w") as f:
        f.write("{not json")
    with pytest.raises(StoreDamagedError):
        actlake.open_dataset(uri)


def test_empty_store_gives_an_empty_stream_with_a_warning(tmp_path):
    uri = DatasetWriter(str(tmp_path / "e"), {"h": ((4,), "float32")}).close()
    ds = actlake.open_dataset(uri)
    assert ds.num_rows == 0
    for kw in ({}, {"shuffle": False}, {"drop_last": False}):
        with pytest.warns(EmptyStreamWarning, match="no rows"):
            s = ds.batches(64, **kw)
        assert len(s) == 0 and list(s) == []


@pytest.mark.parametrize("ids", [[1.5], [0.5, 2], ["a"], [True], [[1, 2], [3]], [float("nan")]])
def test_non_integer_row_ids(tmp_path, ids):
    ds = actlake.open_dataset(make_store(str(tmp_path / "r")))
    with pytest.raises(RowIdError):
        ds.take(ids)
    with pytest.raises(RowIdError):
        ds.provenance(ids)


def test_out_of_range_row_ids(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "o")))
    for ids in ([ds.num_rows], [-1], [0, 10 ** 12]):
        with pytest.raises(RowIdError):
            ds.take(ids)
        with pytest.raises(IndexError):  # RowIdError is an IndexError
            ds.provenance(ids)
    assert ds.take([2.0, 3], "h")["h"][:, 0].tolist() == [2.0, 3.0]  # integral floats are row ids
    assert ds.take([], "h")["h"].shape == (0, 6)


def test_foreign_or_missing_stream_state(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "s")))
    s = ds.batches(32, seed=1)
    for bad in (None, [], "x", {"step": 1}, {**ds.batches(32, seed=2).state_dict(), "step": 1},
                {**ds.batches(16, seed=1).state_dict()}, {**s.state_dict(), "step": 10 ** 6},
                {**s.state_dict(), "step": "two"}):
        with pytest.raises(StreamStateError):
            s.load_state_dict(bad)  # type: ignore[arg-type]
    tb = ds.torch_dataset(32)
    for bad in (None, {"epoch": 0}, {"epoch": "a", "step": 0}, {"epoch": 0, "step": -1}):
        with pytest.raises(StreamStateError):
            tb.load_state_dict(bad)  # type: ignore[arg-type]
    json.dumps(s.state_dict())  # a state is plain JSON
    with warnings.catch_warnings():
        warnings.simplefilter("error", EmptyStreamWarning)
        s.load_state_dict(s.state_dict())


def test_stores_without_crc32c_are_checked_with_sha256(tmp_path):
    """Checksum files written before CRC-32C was recorded list only sha256: reads still check."""
    ds = actlake.open_dataset(make_store(str(tmp_path / "old")))
    reader = ds.access.reader(0)
    sums = reader.checksums()
    old = {"num_rows": sums["num_rows"], "files": sums["files"]}  # the old format
    reader._sums = old
    key = f"{reader.record.path}/{layout.chunk_key(ds.manifest.hooks['h'].array, 0, 2)}"
    good = ds.store.read_bytes(key)
    reader.check_object(key, good)
    with pytest.raises(StoreDamagedError):
        reader.check_object(key, good[:-1] + bytes([good[-1] ^ 1]))
    assert np.array_equal(reader.read_chunk("h", 0)[:, 0], np.arange(32, dtype=np.float32))
