"""Issue 7 D: ``verify_reads`` checks chunks from the CRC-32C of the byte ranges the loader reads
anyway (client/chunk_checks.py), on both read paths, for every split and for resumed streams."""
from __future__ import annotations

import os
import uuid

import google_crc32c
import numpy as np
import pytest
from stores import make_store

import actlake
from actlake.client.chunk_checks import crc32c_combine, crc_of
from actlake.client.windows import DirectWindow
from actlake.schemas.errors import StoreDamagedError
from actlake.store.fs import open_store

SHAPE = {"fragments": (700, 513, 64, 1), "chunk_rows": 128}


def test_combine_equals_the_crc_of_the_concatenation():
    rng = np.random.default_rng(0)
    for _ in range(100):
        a = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        b = rng.integers(0, 256, int(rng.integers(0, 5000)), dtype=np.uint8).tobytes()
        whole = google_crc32c.value(a + b)
        assert crc32c_combine(google_crc32c.value(a), google_crc32c.value(b), len(b)) == whole
        assert crc_of([memoryview(a), np.frombuffer(b, np.uint8)]) == whole


def _chunks(ds, hook="h") -> set:
    return {(f, hook, c) for f, rec in enumerate(ds.snapshot.fragments)
            for c in range(-(-rec.num_rows // ds.chunk_rows))}


@pytest.fixture(scope="module")
def clean(tmp_path_factory) -> str:
    return make_store(str(tmp_path_factory.mktemp("rc") / "ds"), **SHAPE)


@pytest.fixture(params=["direct", "staged"])
def path(request, monkeypatch):
    """The read path; the direct one with per-run checksums (``DirectWindow.range_checks``)."""
    monkeypatch.setattr(DirectWindow, "range_checks", True)
    return request.param


@pytest.mark.parametrize("kw", [{}, {"world_size": 3, "rank": 2}, {"drop_last": True, "batch_size": 100},
                                {"shuffle": False}, {"block_rows": 16, "buffer_rows": 256}])
def test_every_chunk_read_is_checked_without_a_whole_chunk_pass(clean, kw, path, monkeypatch):
    ds = actlake.open_dataset(clean)
    whole = []
    monkeypatch.setattr(type(ds.access.reader(0)), "verify_chunk_file",
                        lambda self, h, c, fd=None: whole.append((h, c)))  # count whole-chunk passes
    s = ds.batches(**{"batch_size": 64, "drop_last": False, "hooks": ["h"], "with_provenance": True, **kw})
    assert s._direct
    s._direct = path == "direct"  # the staged path reads blocks as object stores do (ranges of chunks)
    ids = np.concatenate([b["row_id"].numpy() for b in s])
    assert len(ids) == (len(s) * s.batch_size if s.drop_last else s.num_rows) > 0
    assert not whole  # no second pass over the bytes
    # every chunk this stream returned rows of is checked, including the parts other ranks read
    frag, local = ds.snapshot.locate(ids)
    read = {(int(f), "h", int(c)) for f, c in zip(frag, local // ds.chunk_rows, strict=True)}
    assert read <= ds.access.verified()


def test_resumed_stream_checks_what_it_reads(clean, path):
    ds = actlake.open_dataset(clean)
    s = ds.batches(32, drop_last=False, hooks=["h"], seed=4)
    s._direct = path == "direct"
    s.load_state_dict({**s.state_dict(), "step": len(s) // 2})
    list(s)
    assert ds.access.verified() and ds.access.verified() <= _chunks(ds)


def _flip(path: str) -> None:
    with open(path, "r+b") as f:
        f.seek(os.path.getsize(path) // 3)
        b = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([b[0] ^ 0x10]))


@pytest.mark.parametrize("kw", [{}, {"world_size": 2, "rank": 0}, {"world_size": 2, "rank": 1}])
@pytest.mark.parametrize("range_checks", [False, True])
def test_direct_stream_raises_on_a_flipped_byte(tmp_path, kw, range_checks, monkeypatch):
    monkeypatch.setattr(DirectWindow, "range_checks", range_checks)
    uri = make_store(str(tmp_path / "d"), **SHAPE)
    path = actlake.open_dataset(uri).access.reader(0).chunk_path("h", 3)
    _flip(path)
    ds = actlake.open_dataset(uri)
    s = ds.batches(64, drop_last=False, hooks=["h"], **kw)
    assert s._direct
    read = {(int(f), int(c)) for f, c in zip(s.segments.frag, s.segments.chunk, strict=True)}
    if (0, 3) not in read:
        pytest.skip("this rank reads no row of the damaged chunk")
    with pytest.raises(StoreDamagedError) as e:
        list(s)
    assert e.value.path == path
    assert sum(len(b["h"]) for b in actlake.open_dataset(uri, verify_reads=False).batches(64, drop_last=False,
                                                                                         hooks=["h"], **kw))


def test_staged_stream_from_an_object_store_raises_on_a_flipped_byte(tmp_path):
    uri = make_store(str(tmp_path / "s"), **SHAPE)
    ds0 = actlake.open_dataset(uri)
    rel = os.path.relpath(ds0.access.reader(1).chunk_path("h", 2), uri)
    mem = open_store(f"memory://rc-{uuid.uuid4().hex[:8]}/ds")
    for dirpath, _, files in os.walk(uri):
        for name in files:
            p = os.path.join(dirpath, name)
            with open(p, "rb") as f:
                data = bytearray(f.read())
            if os.path.relpath(p, uri) == rel:
                data[len(data) // 3] ^= 0x10
            mem.write_bytes(os.path.relpath(p, uri), bytes(data))
    ds = actlake.open_dataset(mem.uri)
    s = ds.batches(64, drop_last=False, hooks=["h"], world_size=2, rank=0)
    assert not s._direct and s.block_rows < ds.chunk_rows  # blocks are byte ranges of chunks
    with pytest.raises(StoreDamagedError) as e:
        for r in (0, 1):
            list(ds.batches(64, drop_last=False, hooks=["h"], world_size=2, rank=r))
    assert e.value.path == mem.path(rel)
