"""CoMoments(precision="float32") — float32 products of shifted sub-blocks, merged in float64 —
against numpy's float64 corrcoef / cov on bf16-valued data of four shapes (shared factors, a large
offset, heavy-tailed ReLU³ values, rare massive activations): correlations within 2e-6 (measured: at most
1e-6, ReLU³), covariance within 2e-6 of sd_a·sd_b, PCA eigenvalues within 1e-6 of the largest.  The default float64 path
stays at float64 tolerance; the reused sub-block buffers never leak between updates or merges."""
from __future__ import annotations

import numpy as np
import pytest

import actlake
from actlake.query.comoments import CoMoments, PairBlock, correlation, covariance

N, P = 40000, 48


def bf16(x):
    """Round to bfloat16 values (as an extraction with --dtype bf16 stores them), kept as float32."""
    return ((np.asarray(x, np.float32).view(np.uint32) + 0x8000) >> 16 << 16).view(np.float32)


def cases():
    rng = np.random.default_rng(0)
    z = rng.standard_normal((N, 12))
    mix = rng.standard_normal((12, P))
    noise = rng.standard_normal((N, P))
    return {
        "factors": (z @ mix + noise, z @ mix[:, ::-1] + rng.standard_normal((N, P))),
        "offset": (z @ mix * 8 + 300, z @ mix[:, ::-1] * 8 - 200 + noise),
        "relu_cubed": (np.maximum(z @ mix, 0) ** 3, np.maximum(z @ mix[:, ::-1] + noise, 0)),
        "massive": (np.where(rng.random((N, P)) < 1e-3, 1e3, 1.0) * (z @ mix), z @ mix[:, ::-1]),
    }


def fold(agg, a, b, block=8192):
    s = agg.zero()
    for lo in range(0, len(a), block):
        s = agg.update(s, PairBlock(a[lo:lo + block], None if b is None else b[lo:lo + block], None))
    return s


@pytest.mark.parametrize("name", list(cases()))
def test_float32_products_accuracy(name):
    a, b = (bf16(v) for v in cases()[name])
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    ref = np.corrcoef(a64, b64, rowvar=False)[:P, P:]
    sd = np.sqrt(np.outer(a64.var(0, ddof=1), b64.var(0, ddof=1)))
    fast = fold(CoMoments(P, P, precision="float32"), a, b)
    exact = fold(CoMoments(P, P), a, b)
    assert np.abs(correlation(fast) - ref).max() < 2e-6
    assert np.abs(covariance(fast) - np.cov(a64, b64, rowvar=False)[:P, P:]).max() < 2e-6 * sd.max()
    np.testing.assert_allclose(correlation(exact), ref, rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(fast["mean_a"], a64.mean(0), rtol=1e-12)
    w0 = np.linalg.eigvalsh(np.cov(a64, rowvar=False))
    w = np.linalg.eigvalsh(covariance(fold(CoMoments(P, precision="float32"), a, None)))
    assert np.abs(w - w0).max() < 1e-6 * w0.max()


def test_buffers_do_not_leak_between_updates():
    """The sub-block product buffer is reused: states handed out must own their arrays."""
    rng = np.random.default_rng(1)
    a, b = rng.standard_normal((300, 4)), rng.standard_normal((300, 3))
    for prec in ("float64", "float32"):
        agg = CoMoments(4, 3, max_temp_bytes=8 * 7 * 64, precision=prec)  # sub-blocks of 64 rows
        first = agg.update(agg.zero(), PairBlock(a[:100], b[:100], None))
        keep = first["c"].copy()
        second = agg.update(agg.zero(), PairBlock(a[100:], b[100:], None))
        assert np.array_equal(first["c"], keep) and first["c"].dtype == np.float64
        np.testing.assert_allclose(covariance(agg.merge(first, second)), np.cov(a, b, rowvar=False)[:4, 4:],
                                   rtol=1e-5 if prec == "float32" else 1e-12)
    with pytest.raises(ValueError):
        CoMoments(2, precision="float16")


def test_precision_through_the_api(tmp_path):
    import sys
    from pathlib import Path

    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
    from query_stores import text_store

    uri, x, _ = text_store(str(tmp_path / "ds"), d=8, ties=False, dtype="bfloat16")
    ds = actlake.open_dataset(uri)
    x64 = x.astype(np.float64)
    r = ds.query.correlate("h", precision="float32")
    np.testing.assert_allclose(r.matrix, np.corrcoef(x64, rowvar=False), atol=1e-6)
    p = ds.query.pca("h", 2, precision="float32")
    np.testing.assert_allclose(p.explained_variance, np.linalg.eigvalsh(np.cov(x64, rowvar=False))[::-1][:2],
                               rtol=1e-6)
    from actlake.schemas.errors import QueryError

    with pytest.raises(QueryError, match="^precision"):
        ds.query.correlate("h", precision="half")
