"""Every mergeable aggregate: finalize(merge(update(zero, A), update(zero, B))) equals
finalize(update(zero, A ⊕ B)) on random splits, and the update-by-blocks result equals numpy."""
from __future__ import annotations

import numpy as np
import pytest

from actlake.query.aggregates import Block, Combined, Density, Grouped, Histogram, Moments, RowSummary
from actlake.query.topk import IntervalSample, Maximum, TopK, interval_of
from actlake.query.values import row_kurtosis

N, C = 503, 6


def _data(seed: int, mean: float = 0.0, scale: float = 1.0, ties: bool = False):
    rng = np.random.default_rng(seed)
    v = (rng.standard_normal((N, C)) * scale + mean).astype(np.float32)
    v[:, 0] = rng.exponential(1.0, N).astype(np.float32)  # skewed, heavy-ish tail
    if ties:
        v = np.round(v, 0).astype(np.float32)
    x = rng.standard_normal((N, 9)).astype(np.float32)
    cols = {"context_id": rng.integers(0, 60, N), "context_pos": rng.integers(0, 5, N)}
    return Block(v, np.arange(N, dtype=np.int64), x, cols)


def _fold(agg, block: Block, cuts) -> object:
    """update over consecutive sub-blocks delimited by ``cuts``."""
    s = agg.zero()
    for a, b in zip(cuts[:-1], cuts[1:]):
        s = agg.update(s, block.take(np.arange(a, b)))
    return s


def _equal(a, b, rtol=1e-9):
    if isinstance(a, dict):
        assert a.keys() == b.keys()
        for k in a:
            _equal(a[k], b[k], rtol)
    else:
        np.testing.assert_allclose(np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64), rtol=rtol,
                                   atol=1e-9, equal_nan=True)


AGGS = {
    "moments": lambda: Moments(C),
    "density": lambda: Density(C, 0.5),
    "histogram": lambda: Histogram(C, 7, -3.0, 3.0),
    "rows": lambda: RowSummary(),
    "combined": lambda: Combined({"m": Moments(C), "d": Density(C)}),
    "grouped": lambda: Grouped(Moments(C), "context_pos"),
    "topk": lambda: TopK(C, 9),
    "bottomk": lambda: TopK(C, 9, largest=False),
    "topk-dedup": lambda: TopK(C, 9, dedup="context_id"),
    "topk-k>n": lambda: TopK(C, 700),
    "maximum": lambda: Maximum(C),
    "intervals": lambda: IntervalSample(5, 4, 4.0, seed=3),
}


@pytest.mark.parametrize("name", list(AGGS))
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_merge_of_split_equals_whole(name, seed):
    rng = np.random.default_rng(100 + seed)
    block = _data(seed, ties=name.startswith("topk") or name == "bottomk")
    agg = AGGS[name]()
    whole = agg.finalize(agg.update(agg.zero(), block))
    cut = int(rng.integers(1, N))
    a = _fold(agg, block, np.r_[0, np.sort(rng.integers(0, cut, 3)), cut])
    b = _fold(agg, block, np.r_[cut, np.sort(rng.integers(cut, N, 4)), N])
    _equal(agg.finalize(agg.merge(a, b)), whole)
    # zero is the identity on both sides
    _equal(agg.finalize(agg.merge(agg.zero(), agg.merge(a, b))), whole)
    _equal(agg.finalize(agg.merge(agg.merge(a, b), agg.zero())), whole)


@pytest.mark.parametrize("mean,scale", [(0.0, 1.0), (1e4, 1e-2), (-3e5, 0.5)])
def test_moments_match_numpy_float64_even_with_large_means(mean, scale):
    block = _data(7, mean, scale)
    block.values[:, 0] += np.float32(mean)
    m = Moments(C)
    got = m.finalize(_fold(m, block, np.r_[0, 5, 6, 200, 377, N]))
    x = block.values.astype(np.float64)
    r = x - x.mean(0)
    var = (r ** 2).mean(0)
    np.testing.assert_allclose(got["mean"], x.mean(0), rtol=1e-12)
    np.testing.assert_allclose(got["var"], var, rtol=1e-9)
    np.testing.assert_allclose(got["skew"], (r ** 3).mean(0) / var ** 1.5, rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(got["kurtosis"], (r ** 4).mean(0) / var ** 2 - 3, rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(got["min"], x.min(0))
    np.testing.assert_array_equal(got["count"], np.full(C, N))
    # the naive raw-power formula loses this data entirely in float64 at mean 1e4 / std 1e-2
    if mean:
        naive = (x ** 2).mean(0) - x.mean(0) ** 2
        assert np.abs(got["var"] - var).max() < np.abs(naive - var).max()


def test_topk_ties_broken_by_row_id_and_density_histogram_rows_match_numpy():
    block = _data(3, ties=True)
    v = block.values
    t = TopK(C, 15)
    got = t.finalize(_fold(t, block, np.r_[0, 40, 41, 300, N]))
    for j in range(C):
        ref = np.lexsort((np.arange(N), -v[:, j]))[:15]
        np.testing.assert_array_equal(got["row_ids"][:, j], ref)
        np.testing.assert_array_equal(got["values"][:, j], v[ref, j])
    d = Density(C, 0.25)
    np.testing.assert_allclose(d.finalize(_fold(d, block, np.r_[0, 100, N]))["density"], (v > 0.25).mean(0))
    h = Histogram(C, 5, -2.0, 3.0)
    counts = h.finalize(_fold(h, block, np.r_[0, 250, N]))["hist"]
    for j in range(C):
        ref, _ = np.histogram(np.clip(v[:, j], -2.0, 3.0), bins=5, range=(-2.0, 3.0))
        np.testing.assert_array_equal(counts[j], ref)
    r = RowSummary().finalize(_fold(RowSummary(), block, np.r_[0, 77, N]))
    x = block.x.astype(np.float64)
    np.testing.assert_allclose(r["row_norm"]["mean"], np.linalg.norm(x, axis=1).mean(), rtol=1e-12)
    xc = x - x.mean(1, keepdims=True)
    kurt = (xc ** 4).mean(1) / (xc ** 2).mean(1) ** 2 - 3
    np.testing.assert_allclose(row_kurtosis(block.x), kurt, rtol=1e-9)
    np.testing.assert_allclose(r["row_kurtosis"]["max"], kurt.max(), rtol=1e-12)


def test_interval_sample_is_the_lowest_priorities_of_each_interval():
    block = _data(4)
    agg = IntervalSample(6, 5, float(block.values[:, 0].max()), seed=9)
    got = agg.finalize(_fold(agg, block, np.r_[0, 111, N]))
    v = block.values[:, 0]
    b = interval_of(v, float(v.max()), 6)
    prio = agg.priority(np.arange(N))
    for i in range(6):
        members = np.flatnonzero(b == i)
        ref = members[np.argsort(prio[members], kind="stable")][:5]
        np.testing.assert_array_equal(np.sort(got["row_ids"][got["bin"] == i]), np.sort(ref))
