"""The slab-wise statistics kernels (issue 11 speed work) keep float64 precision: large means with
small variances in float16 and float32 stores, a first slab far from the mean, constant rows and
columns, NaN; and a query still refuses a chunk whose bytes changed after commit."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from query_stores import text_store

import actlake
from actlake.query.aggregates import Block, Density, Moments
from actlake.query.values import row_kurtosis, row_norms, row_norms_kurtosis, slab_rows
from actlake.schemas.errors import StoreDamagedError


def _ref_moments(x: np.ndarray) -> dict[str, np.ndarray]:
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(0)
    var = (r ** 2).mean(0)
    return {"mean": x64.mean(0), "var": var, "skew": (r ** 3).mean(0) / var ** 1.5,
            "kurtosis": (r ** 4).mean(0) / var ** 2 - 3, "min": x64.min(0), "max": x64.max(0)}


@pytest.mark.parametrize("dtype,mean,scale", [("float32", 1e4, 1e-2), ("float16", 1e4, 40.0), ("float32", -3e5, 0.5)])
def test_stats_large_mean_small_variance_many_slabs(tmp_path, dtype, mean, scale):
    # d = 64: a slab is 512 rows, so a 2,048-row chunk is folded in four slabs
    uri, x, _ = text_store(str(tmp_path / "s"), fragments=(3000, 1500), d=64, chunk_rows=2048, dtype=dtype,
                           ties=False, mean=mean, scale=scale)
    assert slab_rows(64) < 2048
    s = actlake.open_dataset(uri).query.stats("h", tasks=3)
    ref = _ref_moments(x)
    np.testing.assert_allclose(s["mean"], ref["mean"], rtol=1e-13)
    np.testing.assert_allclose(s["var"], ref["var"], rtol=1e-10)
    np.testing.assert_allclose(s["skew"], ref["skew"], rtol=1e-7, atol=1e-9)
    np.testing.assert_allclose(s["kurtosis"], ref["kurtosis"], rtol=1e-7, atol=1e-9)
    np.testing.assert_array_equal(s["min"], ref["min"])
    np.testing.assert_array_equal(s["max"], ref["max"])
    np.testing.assert_array_equal(s["active"], (x > 0).sum(0))


def test_moments_when_the_first_slab_is_far_from_the_mean():
    # a trend: the first slab's mean is many standard deviations from the block's mean, so the
    # power sums are taken again about the block's mean
    rng = np.random.default_rng(3)
    n, c = 5000, 32
    x = (1e4 + np.linspace(0, 50, n)[:, None] + rng.standard_normal((n, c)) * 1e-2).astype(np.float32)
    x[:, 0] = 7.0  # a constant column
    got = Moments(c).finalize(Moments(c).update(Moments(c).zero(), Block(x, np.arange(n))))
    with np.errstate(invalid="ignore"):
        ref = _ref_moments(x)
    for k in ("mean", "var", "skew", "kurtosis"):  # skew ≈ 0 here: compared absolutely
        np.testing.assert_allclose(got[k][1:], ref[k][1:], rtol=1e-10, atol=1e-11, err_msg=k)
    assert got["mean"][0] == 7.0 and got["var"][0] == 0.0
    assert np.isnan(got["skew"][0]) and np.isnan(got["kurtosis"][0])


def test_row_norms_kurtosis_matches_the_float64_definitions():
    rng = np.random.default_rng(4)
    x = rng.standard_normal((1000, 96)).astype(np.float32) * 3
    x[:300] += 5e3  # rows with a large mean
    x[7] = 2.5  # a constant row
    got = row_norms_kurtosis(x)
    np.testing.assert_allclose(got[:, 0], row_norms(x), rtol=1e-13)
    np.testing.assert_allclose(got[:, 1], row_kurtosis(x), rtol=1e-9, equal_nan=True)
    assert np.isnan(got[7, 1])


def test_density_counts_over_slabs_with_nan():
    rng = np.random.default_rng(5)
    x = rng.standard_normal((3000, 48)).astype(np.float32)
    x[::7, 3] = np.nan
    d = Density(48, threshold=0.25)
    got = d.finalize(d.update(d.zero(), Block(x, np.arange(3000))))
    np.testing.assert_array_equal(got["active"], np.count_nonzero(x > 0.25, axis=0))
    np.testing.assert_allclose(got["density"], np.count_nonzero(x > 0.25, axis=0) / 3000)


def test_query_reads_detect_a_changed_chunk(tmp_path):
    uri, x, _ = text_store(str(tmp_path / "s"), fragments=(64, 64), chunk_rows=32, ties=False)
    chunk = sorted(Path(uri).glob("fragments/*/acts/*/c/1/0"))[0]
    raw = bytearray(chunk.read_bytes())
    raw[5] ^= 0xFF  # same size, different bytes
    chunk.write_bytes(bytes(raw))
    with pytest.raises(StoreDamagedError):
        actlake.open_dataset(uri).query.topk("h", unit=0, k=3, context=-1)
    with pytest.raises(StoreDamagedError):
        actlake.open_dataset(uri).query.stats("h")
    # verify_reads=False reads what is there
    t = actlake.open_dataset(uri, verify_reads=False).query.topk("h", unit=0, k=3, context=-1)
    assert t.num_rows == 3
