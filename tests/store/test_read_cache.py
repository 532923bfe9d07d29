"""The optional local read cache (storage_options cache_dir / cache_bytes) in front of real S3."""
from __future__ import annotations

import numpy as np
import torch

import actlake
from actlake.store.backends import open_backend
from actlake.store.backends.cache import CachedBackend


def test_cache_serves_ranges_from_disk_and_stays_bounded(s3_server, s3_uri, tmp_path):
    opts = {**s3_server.storage_options, "cache_dir": str(tmp_path / "cache"), "cache_bytes": 2500}
    b = open_backend(s3_uri, opts)
    assert isinstance(b, CachedBackend) and b.local_root is None
    data = {f"fragments/f{i}/obj": bytes([i]) * 1000 for i in range(3)}
    b.write_many(data)
    assert b.read("fragments/f0/obj", 10, 20) == data["fragments/f0/obj"][10:20]
    assert b.cached_bytes == 1000
    b.inner.delete("fragments/f0/obj")  # gone remotely: the cached copy still answers
    assert b.read("fragments/f0/obj", 0, 5) == b"\x00" * 5
    for k in ("fragments/f1/obj", "fragments/f2/obj"):
        assert b.read(k) == data[k]
    assert b.cached_bytes <= 2500  # least recently used evicted
    b.write("fragments/f2/obj", b"changed")  # a write drops the cached copy
    assert b.read("fragments/f2/obj") == b"changed"
    b.write("actlake.json", b"{}")  # mutable objects are never cached
    assert b.read("actlake.json") == b"{}" and b.cached_bytes <= 2500


def test_stream_through_cache_equals_stream_without(s3_server, s3_uri, tmp_path):
    import pyarrow as pa

    from actlake.store.writer import DatasetWriter

    w = DatasetWriter(s3_uri, {"h": ((8,), "float16")}, chunk_rows=32, storage_options=s3_server.storage_options)
    rng = np.random.default_rng(0)
    for i in range(3):
        w.add({"h": rng.standard_normal((100, 8)).astype("float16")},
              pa.table({"doc_id": np.full(100, i), "context_id": np.arange(100)}))
    w.close()
    plain = actlake.open_dataset(s3_uri, s3_server.storage_options)
    cached = actlake.open_dataset(s3_uri, {**s3_server.storage_options, "cache_dir": str(tmp_path / "c")})
    kw = dict(batch_size=50, seed=1, drop_last=False, block_rows=8, buffer_rows=100)
    for _ in range(2):  # second epoch reads from the cache
        for a, b in zip(plain.batches(**kw), cached.batches(**kw)):
            assert torch.equal(a["h"], b["h"])
    assert cached.store.backend.cached_bytes > 0
