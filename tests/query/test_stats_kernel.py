"""The compiled stats pass (query/kernels.py, aggregates.ValueStats) against numpy, float64 throughout."""
import numpy as np
import pytest

from actlake.query import kernels
from actlake.query.aggregates import Block, Combined, Density, Histogram, Moments, RowSummary, ValueStats


def _numpy_stats(x: np.ndarray, threshold: float) -> dict:
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(0)
    var = (r ** 2).mean(0)
    rr = x64 - x64.mean(1, keepdims=True)
    m2r = (rr ** 2).mean(1)
    with np.errstate(divide="ignore", invalid="ignore"):
        row_k = np.where(m2r > 0, (rr ** 4).mean(1) / m2r ** 2 - 3, np.nan)
    return {"mean": x64.mean(0), "var": var, "skew": (r ** 3).mean(0) / var ** 1.5,
            "kurtosis": (r ** 4).mean(0) / var ** 2 - 3, "min": x64.min(0), "max": x64.max(0),
            "density": (x > threshold).mean(0), "row_norm": np.linalg.norm(x64, axis=1), "row_kurtosis": row_k}


def _blocks(x: np.ndarray, rows: int):
    for r0 in range(0, len(x), rows):
        v = x[r0:r0 + rows]
        yield Block(v, np.arange(r0, r0 + len(v)), v)


@pytest.mark.parametrize("case", ["normal", "large_mean", "trend", "ties", "float64", "strided"])
def test_value_stats_match_numpy(case):
    rng = np.random.default_rng(7)
    x = rng.standard_normal((3000, 37)).astype(np.float32)
    if case == "large_mean":  # mean 1e4, sd 0.01: raw power sums would lose every digit
        x = (1e4 + 0.01 * rng.standard_normal((3000, 37))).astype(np.float32)
    elif case == "trend":  # the first slab's mean is far from the block's: the fallback pass runs
        x = (np.linspace(0, 50, 3000)[:, None] + rng.standard_normal((3000, 37))).astype(np.float32)
    elif case == "ties":  # many values equal to the threshold, compared in the values' dtype
        x = np.round(x, 1)
    elif case == "float64":
        x = x.astype(np.float64) * 1e3
    elif case == "strided":  # a column selection of a wider array, as unit queries hand it over
        x = rng.standard_normal((3000, 80)).astype(np.float32)[:, 3::2]
    want = _numpy_stats(x, 0.3)
    agg = ValueStats(x.shape[1], 0.3, rows=True)
    state = agg.zero()
    for b in _blocks(x, 1024):
        state = agg.update(state, b)
    got = agg.finalize(state)
    rtol, atol = (1e-6, 1e-8) if case == "large_mean" else (1e-9, 1e-12)  # skew near 0: absolute
    for key in ("mean", "var", "skew", "kurtosis"):
        np.testing.assert_allclose(got[key], want[key], rtol=rtol, atol=atol, err_msg=key)
    np.testing.assert_array_equal(got["min"], want["min"])
    np.testing.assert_array_equal(got["max"], want["max"])
    np.testing.assert_array_equal(got["density"], want["density"])
    assert got["row_norm"]["mean"] == pytest.approx(want["row_norm"].mean(), rel=1e-12)
    assert got["row_kurtosis"]["mean"] == pytest.approx(want["row_kurtosis"].mean(), rel=1e-9)
    assert got["row_norm"]["max"] == pytest.approx(want["row_norm"].max(), rel=1e-12)

    # the same state as the numpy aggregates (Combined of Moments, Density, RowSummary)
    ref = Combined({"m": Moments(x.shape[1]), "d": Density(x.shape[1], 0.3), "r": RowSummary()})
    s2 = ref.zero()
    for b in _blocks(x, 1024):
        s2 = ref.update(s2, b)
    old = ref.finalize(s2)
    for key in ("mean", "var", "skew", "kurtosis", "density"):
        np.testing.assert_allclose(got[key], old[key], rtol=rtol, atol=atol, err_msg=key)


def test_row_summary_edge_rows():
    x = np.zeros((4, 16), np.float32)
    x[1] = 3.0  # constant row: kurtosis NaN, norm 12
    x[2, 5] = 8.0  # one-hot row: the sparsest possible code
    x[3] = np.arange(16)
    got = kernels.row_norms_kurtosis(x)
    assert np.isnan(got[0, 1]) and np.isnan(got[1, 1])
    np.testing.assert_allclose(got[:, 0], np.linalg.norm(x.astype(np.float64), axis=1), rtol=1e-14)
    one_hot = x[2].astype(np.float64) - x[2].mean()
    assert got[2, 1] == pytest.approx((one_hot ** 4).mean() / (one_hot ** 2).mean() ** 2 - 3, rel=1e-12)
    _, lo, hi, above, rows = kernels.value_stats(x, np.zeros(16), 0.0, True)
    np.testing.assert_array_equal(rows[:, 0], got[:, 0])
    np.testing.assert_array_equal(above, (x > 0).sum(0))
    np.testing.assert_array_equal(lo, x.min(0))
    np.testing.assert_array_equal(hi, x.max(0))


def test_value_stats_projected_values_keep_rows_of_the_hook():
    """Stats over projected values (fewer columns than the rows) still summarize the hook's rows."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((500, 24)).astype(np.float32)
    v = x @ rng.standard_normal((24, 5)).astype(np.float32)
    agg = ValueStats(5, 0.0, rows=True)
    got = agg.finalize(agg.update(agg.zero(), Block(v, np.arange(500), x)))
    np.testing.assert_allclose(got["mean"], v.astype(np.float64).mean(0), rtol=1e-9, atol=1e-12)
    assert got["row_norm"]["mean"] == pytest.approx(np.linalg.norm(x.astype(np.float64), axis=1).mean(), rel=1e-12)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
def test_histogram_kernel_matches_numpy_at_edges(dtype):
    """Values on every bin edge, outside the range (clipped into the end bins) and NaN (skipped)."""
    rng = np.random.default_rng(11)
    lo, hi, bins = -1.3, 2.1, 7
    edges = np.linspace(lo, hi, bins + 1)
    x = rng.uniform(-2, 3, (2000, 6)).astype(dtype)
    x[:bins + 1, 0] = edges.astype(dtype)  # exactly on the edges (as stored in the values' dtype)
    x[10:20, 1] = np.nan
    agg = Histogram(6, bins, lo, hi)
    got = agg.finalize(agg.update(agg.zero(), Block(x, np.arange(len(x)))))
    for j in range(6):
        col = x[:, j][~np.isnan(x[:, j])]
        want = np.histogram(np.clip(col.astype(np.float64), lo, hi), bins=bins, range=(lo, hi))[0]
        np.testing.assert_array_equal(got["hist"][j], want)


def test_bf16_store_stats_equal_widened_rows(tmp_path):
    """A bfloat16 store's stats (its stored bits go to the compiled pass unwidened) equal numpy over
    the widened rows, with and without groups and histograms, in 1 and several tasks."""
    from query_stores import text_store

    import actlake

    uri, x, prov = text_store(str(tmp_path / "bf16"), dtype="bfloat16", ties=True, mean=2.0, seed=9)
    ds = actlake.open_dataset(uri)
    want = _numpy_stats(x, 0.5)
    for tasks in (1, 5):
        got = ds.query.stats("h", threshold=0.5, histogram_bins=6, tasks=tasks)
        for key in ("mean", "var", "skew", "kurtosis"):
            np.testing.assert_allclose(got[key], want[key], rtol=1e-9, atol=1e-12, err_msg=key)
        np.testing.assert_array_equal(got["min"], want["min"])
        np.testing.assert_array_equal(got["density"], want["density"])
        assert got["row_kurtosis"]["mean"] == pytest.approx(np.nanmean(want["row_kurtosis"]), rel=1e-9)
        lo, hi = float(x.min()), float(x.max())
        for j in range(x.shape[1]):
            np.testing.assert_array_equal(got["hist"][j], np.histogram(x[:, j], bins=6, range=(lo, hi))[0])
    by = ds.query.stats("h", by="context_pos", threshold=0.5)
    pos = prov.column("context_pos").to_numpy()
    for p_, s in by.items():
        np.testing.assert_allclose(s["mean"], x[pos == p_].astype(np.float64).mean(0), rtol=1e-9, atol=1e-12)


def test_constant_rows_are_left_out_of_row_kurtosis_only(tmp_path):
    """A dead (all-zero) row has a norm but no kurtosis: it must not turn the summary into NaN."""
    x = np.random.default_rng(4).standard_normal((40, 6)).astype(np.float32)
    x[7] = 0.0
    agg = ValueStats(6, 0.0, rows=True)
    got = agg.finalize(agg.update(agg.zero(), Block(x, np.arange(40), x)))
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        k = (r ** 4).mean(1) / (r ** 2).mean(1) ** 2 - 3
    assert got["row_norm"]["count"] == 40 and got["row_kurtosis"]["count"] == 39
    assert got["row_kurtosis"]["mean"] == pytest.approx(np.nanmean(k), rel=1e-12)
    assert got["row_norm"]["min"] == 0.0


def test_histogram_of_constant_values_matches_numpy():
    x = np.full((10, 3), 0.5, np.float32)
    agg = Histogram(3, 4, 0.5, 0.5)  # the engine passes the data's min and max
    got = agg.finalize(agg.update(agg.zero(), Block(x, np.arange(10))))
    want, edges = np.histogram(x[:, 0], bins=4)
    np.testing.assert_allclose(got["hist_edges"], edges)
    np.testing.assert_array_equal(got["hist"][0], want)


def test_threshold_must_be_finite_and_bins_bounded(tmp_path):
    from query_stores import text_store

    import actlake
    from actlake.schemas.errors import QueryError

    uri, _, _ = text_store(str(tmp_path / "s"), fragments=(20,), seed=2)
    ds = actlake.open_dataset(uri)
    with pytest.raises(QueryError, match="threshold"):
        ds.query.stats("h", threshold=float("nan"))
    with pytest.raises(QueryError, match="histogram_bins"):
        ds.query.stats("h", histogram_bins=10_001)
