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
