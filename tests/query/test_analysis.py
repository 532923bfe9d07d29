"""covariance / pca / correlate against numpy on the loaded arrays; CoMoments merge proof."""
from __future__ import annotations

import numpy as np
import pytest

import actlake
from actlake.query.aggregates import Block
from actlake.query.comoments import CoMoments
from actlake.schemas.errors import QueryError

from query_stores import text_store


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    uri, x, prov = text_store(str(tmp_path_factory.mktemp("qa") / "s"), ties=False, mean=3.0)
    return actlake.open_dataset(uri), x


@pytest.mark.parametrize("cross", [False, True])
def test_comoments_merge_of_split_equals_whole(cross):
    rng = np.random.default_rng(0)
    a = (rng.standard_normal((401, 5)) + 1e4).astype(np.float32)
    b = rng.standard_normal((401, 3)).astype(np.float32) if cross else None
    blk = Block(a, np.arange(401), values_b=b)
    agg = CoMoments(5, 3 if cross else None)
    whole = agg.finalize(agg.update(agg.zero(), blk))
    cut = 157
    left = agg.update(agg.update(agg.zero(), blk.take(np.arange(0, 40))), blk.take(np.arange(40, cut)))
    right = agg.update(agg.zero(), blk.take(np.arange(cut, 401)))
    merged = agg.finalize(agg.merge(left, right))
    for k in ("mean_a", "mean_b", "cov", "corr"):
        np.testing.assert_allclose(merged[k], whole[k], rtol=1e-9, atol=1e-12)
    ref = np.corrcoef(a.T.astype(np.float64), (b if cross else a).T.astype(np.float64))[:5, 5:] if cross else \
        np.corrcoef(a.T.astype(np.float64))
    np.testing.assert_allclose(whole["corr"], ref, rtol=1e-8, atol=1e-10)


def test_covariance_and_pca_equal_numpy(text):
    ds, x = text
    x64 = x.astype(np.float64)
    cov = ds.query.covariance("h", tasks=5)
    np.testing.assert_allclose(cov, np.cov(x64.T, bias=True), rtol=1e-9, atol=1e-12)
    v = np.random.default_rng(3).standard_normal(x.shape[1]).astype(np.float32)  # vectors are used as float32
    p = ds.query.pca("h", 3, vectors=v, tasks=1)
    w, vecs = np.linalg.eigh(np.cov(x64.T, bias=True))
    np.testing.assert_allclose(p.explained_variance, w[::-1][:3], rtol=1e-9)
    np.testing.assert_allclose(np.abs(p.components @ vecs[:, ::-1][:, :3]), np.eye(3), atol=1e-7)
    np.testing.assert_allclose(p.mean, x64.mean(0), rtol=1e-12)
    v64 = v.astype(np.float64)
    np.testing.assert_allclose(np.abs(p.cosines[0]), np.abs(v64 @ p.components.T) / np.linalg.norm(v64), rtol=1e-9)
    with pytest.raises(QueryError, match="^n_components"):
        ds.query.pca("h", 0)
    with pytest.raises(QueryError, match="^vectors"):
        ds.query.pca("h", 2, vectors=np.ones(3))


def test_correlate_within_and_across_hooks(text):
    ds, x = text
    r = ds.query.correlate("h", units_a=[0, 2], units_b=[1, 3, 5], tasks=4)
    ref = np.corrcoef(x[:, [0, 2]].T.astype(np.float64), x[:, [1, 3, 5]].T.astype(np.float64))[:2, 2:]
    np.testing.assert_allclose(r.matrix, ref, rtol=1e-9, atol=1e-12)
    assert r.best.column("best_unit").to_pylist() == [[1, 3, 5][i] for i in np.argmax(ref, axis=1)]
    # across hooks: "w" holds 2 × the first 4 units of "h", so unit j of h matches unit j of w exactly
    across = ds.query.correlate("h", "w", units_a=[0, 1, 2, 3])
    np.testing.assert_allclose(np.diag(across.matrix), 1.0, rtol=1e-9)
    assert across.best.column("best_unit").to_pylist() == [0, 1, 2, 3]
    d = np.random.default_rng(4).standard_normal((2, x.shape[1])).astype(np.float32)
    dr = ds.query.correlate("h", "w", direction_a=d)
    proj = (x @ d.T).astype(np.float64)
    ref = np.corrcoef(proj.T, (x[:, :4] * 2).T.astype(np.float64))[:2, 2:]
    np.testing.assert_allclose(dr.matrix, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(QueryError, match="^hook"):
        ds.query.correlate("h", "nope")
