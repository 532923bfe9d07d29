"""correlate / covariance / PCA / project against numpy on the loaded arrays (float64 tolerance);
1 task == N tasks; CoMoments merge proof on random splits."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest
from actlake.query.comoments import CoMoments, PairBlock, correlation, covariance
from actlake.schemas.errors import QueryError

import actlake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_stores import text_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, x, prov = text_store(str(tmp_path_factory.mktemp("an") / "ds"), d=8, ties=False, mean=50.0, scale=0.5)
    return uri, x


def _corr(a, b):
    return np.corrcoef(a.astype(np.float64), b.astype(np.float64), rowvar=False)[: a.shape[1], a.shape[1]:]


@pytest.mark.parametrize("same", [True, False])
def test_comoments_merge_random_splits(same):
    rng = np.random.default_rng(3)
    a = rng.standard_normal((500, 5)) * 3 + 1e4
    b = None if same else rng.standard_normal((500, 4)) - 7
    agg = CoMoments(5, None if same else 4, max_temp_bytes=8 * 9 * 17)  # forces sub-blocks of 17 rows
    whole = agg.update(agg.zero(), PairBlock(a, b, np.arange(500)))
    for _ in range(5):
        cut = np.sort(rng.choice(np.arange(1, 500), 3, replace=False))
        parts = [agg.update(agg.zero(), PairBlock(a[i:j], None if b is None else b[i:j], np.arange(i, j)))
                 for i, j in zip(np.r_[0, cut], np.r_[cut, 500])]
        merged = agg.zero()
        for p in parts:
            merged = agg.merge(merged, p)
        np.testing.assert_allclose(covariance(merged), covariance(whole), rtol=1e-9, atol=1e-12)
    ref = np.cov(a, a if b is None else b, rowvar=False)[:5, 5:]
    np.testing.assert_allclose(covariance(whole), ref, rtol=1e-9, atol=1e-9)
    np.testing.assert_allclose(correlation(whole), _corr(a, a if b is None else b), rtol=1e-9, atol=1e-12)


def test_correlate_two_hooks_and_units(store):
    uri, x = store
    ds = actlake.open_dataset(uri)
    w = ds.take(np.arange(ds.num_rows), hooks="w")["w"].float().numpy()
    r = ds.query.correlate("h", "w")
    assert r.matrix.shape == (8, 4) and r.matrix.dtype == np.float64
    np.testing.assert_allclose(r.matrix, _corr(x, w), rtol=1e-9, atol=1e-12)
    best = r.best.to_pydict()
    assert best["best_unit"] == np.nanargmax(_corr(x, w), axis=1).tolist()
    r2 = ds.query.correlate("h", units_a=[3, 1], units_b=[0, 5, 7])
    np.testing.assert_allclose(r2.matrix, _corr(x[:, [3, 1]], x[:, [0, 5, 7]]), rtol=1e-9, atol=1e-12)
    assert r2.units_b.tolist() == [0, 5, 7]


def test_autocorrelation_excludes_self_and_directions(store):
    uri, x = store
    ds = actlake.open_dataset(uri)
    r = ds.query.correlate("h")
    ref = _corr(x, x)
    np.testing.assert_allclose(r.matrix, ref, rtol=1e-9, atol=1e-12)
    masked = ref.copy()
    np.fill_diagonal(masked, -np.inf)
    assert r.best.column("best_unit").to_pylist() == np.argmax(masked, axis=1).tolist()
    dirs = np.random.default_rng(1).standard_normal((3, 8)).astype(np.float32)
    rd = ds.query.correlate("h", direction_a=dirs, units_b=[0, 2])
    np.testing.assert_allclose(rd.matrix, _corr(x @ dirs.T, x[:, [0, 2]]), rtol=1e-6, atol=1e-9)


def test_covariance_pca_and_cosine(store):
    uri, x = store
    ds = actlake.open_dataset(uri)
    x64 = x.astype(np.float64)
    np.testing.assert_allclose(ds.query.covariance("h"), np.cov(x64, rowvar=False), rtol=1e-9, atol=1e-12)
    p = ds.query.pca("h", 3)
    w, v = np.linalg.eigh(np.cov(x64, rowvar=False))
    np.testing.assert_allclose(p.explained_variance, w[::-1][:3], rtol=1e-9)
    np.testing.assert_allclose(np.abs(p.components @ v[:, ::-1][:, :3]), np.eye(3), atol=1e-8)
    np.testing.assert_allclose(np.linalg.norm(p.components, axis=1), 1.0, rtol=1e-12)
    np.testing.assert_allclose(p.mean, x64.mean(axis=0), rtol=1e-12)
    cos = p.cosine(v[:, -1] * 5)
    assert cos.shape == (3,) and abs(abs(cos[0]) - 1) < 1e-8
    with pytest.raises(QueryError):
        ds.query.pca("h", 9)


def test_one_task_equals_n_tasks(store):
    uri, _ = store
    ds = actlake.open_dataset(uri)
    one = ds.query.correlate("h", "w", tasks=1).matrix
    for n in (2, 5, 19):
        np.testing.assert_allclose(ds.query.correlate("h", "w", tasks=n).matrix, one, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(ds.query.pca("h", 2, tasks=7).explained_variance,
                               ds.query.pca("h", 2, tasks=1).explained_variance, rtol=1e-12)


def test_bad_arguments(store):
    uri, _ = store
    ds = actlake.open_dataset(uri)
    with pytest.raises(QueryError, match="^hook_a"):
        ds.query.correlate("nope")
    with pytest.raises(QueryError, match="^units_b"):
        ds.query.correlate("h", "w", units_b=[9])
    with pytest.raises(QueryError, match="^direction_a"):
        ds.query.correlate("h", direction_a=np.ones(3, np.float32))


@pytest.mark.parametrize("dtype", ["bfloat16", "float16"])
def test_half_precision_hooks_widened_in_the_aggregate(tmp_path, dtype):
    """bf16/fp16 hooks reach CoMoments as stored rows (widened slab by slab): same results as numpy
    on the loaded float values, also for a large mean and across chunk and fragment edges."""
    uri, x, _ = text_store(str(tmp_path / "ds"), fragments=(300, 257, 64, 1), d=8, chunk_rows=32, dtype=dtype,
                           ties=False, mean=300.0, scale=2.0, seed=5)
    ds = actlake.open_dataset(uri)
    w = ds.take(np.arange(ds.num_rows), hooks="w")["w"].float().numpy().astype(np.float64)
    x64 = x.astype(np.float64)
    assert np.array_equal(ds.take(np.arange(ds.num_rows), hooks="h")["h"].float().numpy(), x)
    np.testing.assert_allclose(ds.query.correlate("h", "w").matrix, _corr(x64, w), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds.query.correlate("h").matrix, _corr(x64, x64), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds.query.covariance("h"), np.cov(x64, rowvar=False), rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(ds.query.pca("h", 2).mean, x64.mean(axis=0), rtol=1e-12)
    # float32 products over one 622-row block of near-duplicate columns (w ≈ 2 h): ~6e-6, as before the
    # stored rows went to the aggregate (float32 values give the same figure)
    fast = ds.query.correlate("h", "w", precision="float32").matrix
    assert np.abs(fast - _corr(x64, w)).max() < 2e-5
