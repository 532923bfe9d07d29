"""Analyses as real Ray tasks (embedded Ray on a loopback address) equal the in-process executor:
the row-range scans of correlate / PCA / joins run through the unchanged Ray executor."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

import actlake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_stores import text_store  # noqa: E402


def test_ray_equals_local(ray_local, tmp_path):
    uri, x, _ = text_store(str(tmp_path / "a"), fragments=(200, 150, 33), ties=False)
    ds = actlake.open_dataset(uri)
    local = ds.query.correlate("h", "w", tasks=5)
    remote = ds.query.correlate("h", "w", tasks=5, address="local")
    np.testing.assert_array_equal(remote.matrix, local.matrix)  # same plan, same merge order: bit-equal
    assert remote.best.equals(local.best)
    np.testing.assert_array_equal(ds.query.pca("h", 3, tasks=4, address="local").components,
                                  ds.query.pca("h", 3, tasks=4).components)
    j = actlake.join(ds, actlake.open_dataset(uri))
    t_local = j.query.topk("a/h", unit=[1, 2], k=6, tasks=4, context=-1)
    assert j.query.topk("a/h", unit=[1, 2], k=6, tasks=4, context=-1, address="local").equals(t_local)
    d_local = j.query.topk("b/h", unit=1, k=5, tasks=4, context=1, dedup="context")  # columns travel with the scan
    assert j.query.topk("b/h", unit=1, k=5, tasks=4, context=1, dedup="context", address="local").equals(d_local)
    s_local = j.query.sample_intervals("a/h", unit=0, bins=3, per_bin=2, tasks=3)
    assert j.query.sample_intervals("a/h", unit=0, bins=3, per_bin=2, tasks=3, address="local").equals(s_local)


def test_project_on_ray_bit_equal(ray_local, tmp_path):
    """project(address="local"): one Ray task per fragment writes the derived arrays, the driver
    commits once; the bits equal the in-process result and float32(float64(X) @ D.T)."""
    from actlake.store.commitlog import CommitLog
    from actlake.store.derived import check_derived_fragment
    from actlake.store.fs import open_store

    uri, x, _ = text_store(str(tmp_path / "p"), fragments=(70, 64, 33, 5), dtype="bfloat16", ties=False)
    ds = actlake.open_dataset(uri)
    D = np.random.default_rng(3).standard_normal((5, x.shape[1]))
    seen = []
    assert ds.query.project("h", D, name="on_ray", address="local", progress=lambda d, t: seen.append((d, t))) \
        == "on_ray"
    ds.query.project("h", D, name="local")
    assert seen[-1] == (ds.num_rows, ds.num_rows) and len(seen) == 4  # one step per fragment task
    ref = (x.astype(np.float64) @ D.T).astype(np.float32)
    fresh = actlake.open_dataset(uri)
    got = fresh.take(np.arange(fresh.num_rows), hooks=["on_ray", "local"])
    assert np.array_equal(got["on_ray"].numpy().view(np.uint32), ref.view(np.uint32))
    assert np.array_equal(got["on_ray"].numpy().view(np.uint32), got["local"].numpy().view(np.uint32))
    store = open_store(uri)
    snap = CommitLog(store).snapshot()
    rec = next(d for d in snap.derived if d.info.name == "on_ray")
    assert len([d for d in snap.derived if d.info.name == "on_ray"]) == 1  # one commit
    assert all(check_derived_fragment(store, f, rec) == [] for f in snap.fragments)
    top = fresh.query.topk("on_ray", unit=2, k=4, context=-1, address="local")
    assert top.column("row_id").to_pylist() == np.lexsort((np.arange(len(ref)), -ref[:, 2]))[:4].tolist()
