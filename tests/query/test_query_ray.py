"""The Ray executor (real Ray, embedded on a loopback address) equals the in-process executor."""
from __future__ import annotations

import numpy as np
import pytest

import actlake

from query_stores import ref_topk, text_store


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, x, prov = text_store(str(tmp_path_factory.mktemp("qr") / "s"), fragments=(400, 300, 129))
    return actlake.open_dataset(uri), x


def test_ray_executor_equals_local_executor(ray_local, store):
    ds, x = store
    q = ds.query
    dirs = np.random.default_rng(2).standard_normal((5, x.shape[1])).astype(np.float32)
    for kw in (dict(unit=[0, 6], k=11), dict(unit=3, k=8, dedup="context"), dict(direction=dirs, k=4)):
        local = q.topk("h", tasks=6, **kw)
        remote = q.topk("h", tasks=6, address="local", **kw)
        assert remote.equals(local)
    np.testing.assert_array_equal(q.topk("h", unit=2, k=9, address="local", tasks=4).column("row_id").to_numpy(),
                                  ref_topk(x[:, 2], 9))
    s_local = q.stats("h", tasks=5, histogram_bins=6, by="position")
    s_ray = q.stats("h", tasks=5, histogram_bins=6, by="position", address="local")
    assert s_local.keys() == s_ray.keys()
    for g in s_local:
        for key in ("count", "mean", "var", "skew", "kurtosis", "min", "max", "density", "hist"):
            np.testing.assert_array_equal(s_ray[g][key], s_local[g][key])
    seen = []
    t_ray = q.sample_intervals("h", unit=1, tasks=7, address="local", progress=lambda d, n: seen.append((d, n)))
    assert t_ray.equals(q.sample_intervals("h", unit=1, tasks=7))
    assert seen[-1] == (len(x), len(x)) and len(seen) == 14  # two passes of 7 items
