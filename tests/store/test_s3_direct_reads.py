"""The S3 read path that GETs byte ranges straight into the loader's window (store/backends/s3_reads.py):
same batches as the s3fs path and as local disk, damaged objects still detected, picklable backend."""
from __future__ import annotations

import pickle

import numpy as np
import pyarrow as pa
import pytest
import torch

import actlake
from actlake.schemas.errors import StoreDamagedError
from actlake.store import CommitLog, layout, open_store
from actlake.store.writer import DatasetWriter


def _write(uri: str, opts: dict | None = None) -> np.ndarray:
    rng = np.random.default_rng(0)
    w = DatasetWriter(uri, {"h": ((16,), "float32")}, chunk_rows=32, storage_options=opts)
    xs = []
    for i, n in enumerate((96, 80, 64)):  # 80: a last chunk of 16 rows in its fragment
        x = rng.standard_normal((n, 16)).astype("float32")
        w.add({"h": x}, pa.table({"doc_id": np.full(n, i), "context_id": np.arange(n) // 8 + 100 * i}))
        xs.append(x)
    w.close()
    return np.concatenate(xs)


KW = dict(batch_size=24, seed=1, drop_last=False, with_provenance=True, block_rows=8, buffer_rows=64)


def _stream(ds) -> tuple[np.ndarray, np.ndarray]:
    got = list(ds.batches(**KW))
    return torch.cat([b["row_id"] for b in got]).numpy(), torch.cat([b["h"] for b in got]).numpy()


def test_direct_reads_equal_s3fs_reads_and_local(s3_server, s3_uri, tmp_path):
    opts = s3_server.storage_options
    x = _write(s3_uri, opts)
    _write(str(tmp_path / "local"))
    direct = actlake.open_dataset(s3_uri, opts)
    assert direct.store.backend._sync_client() is not False  # the direct path is the one under test
    via_s3fs = actlake.open_dataset(s3_uri, {**opts, "direct_reads": False})
    assert via_s3fs.store.backend._sync_client() is False
    local = actlake.open_dataset(str(tmp_path / "local"))
    ids, rows = _stream(direct)
    for other in (via_s3fs, local):
        ids2, rows2 = _stream(other)
        np.testing.assert_array_equal(ids, ids2)
        np.testing.assert_array_equal(rows, rows2)
    np.testing.assert_array_equal(np.sort(ids), np.arange(len(x)))
    np.testing.assert_array_equal(rows, x[ids])
    assert torch.equal(direct.take(np.arange(len(x)))["h"], torch.from_numpy(x))


def test_direct_reads_detect_flipped_byte_and_truncation(s3_server, s3_uri):
    opts = s3_server.storage_options
    _write(s3_uri, opts)
    store = open_store(s3_uri, opts)
    frags = CommitLog(store).snapshot().fragments
    key = f"{frags[0].path}/{layout.chunk_key('h', 1, 2)}"
    data = bytearray(store.read_bytes(key))
    data[7] ^= 0x01
    store.write_bytes(key, bytes(data))
    with pytest.raises(StoreDamagedError, match="checksum mismatch"):
        actlake.open_dataset(s3_uri, opts).take(np.arange(32, 64))
    for block in (8, 32):  # byte ranges of chunks (range checksums); whole chunks (checked in the window)
        with pytest.raises(StoreDamagedError, match="checksum mismatch"):
            list(actlake.open_dataset(s3_uri, opts).batches(**{**KW, "block_rows": block}))
    key2 = f"{frags[2].path}/{layout.chunk_key('h', 0, 2)}"
    store.write_bytes(key2, store.read_bytes(key2)[:100])
    with pytest.raises(StoreDamagedError):
        list(actlake.open_dataset(s3_uri, opts).batches(**KW))


def test_s3_backend_pickles_without_its_client(s3_server, s3_uri):
    opts = s3_server.storage_options
    _write(s3_uri, opts)
    ds = actlake.open_dataset(s3_uri, opts)
    backend = ds.store.backend
    buf = bytearray(64)
    backend.read_into("actlake.json", memoryview(buf))  # builds the client
    clone = pickle.loads(pickle.dumps(backend))
    again = bytearray(64)
    clone.read_into("actlake.json", memoryview(again))
    assert again == buf and clone._client is not None
