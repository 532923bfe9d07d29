"""examples/null_codes.py on --quick: the code is the mean of the sparsest patch tokens, which are
each image's max-kurtosis patch (never CLS), and the reported figures match the store."""
from __future__ import annotations

import numpy as np
import pytest
from wfutil import check_report, load

import actlake

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("null-codes")
    nc = load("null_codes")
    return nc, out, nc.main(["--out", str(out), "--quick"])


def test_report_files(run):
    nc, out, fig = run
    s = check_report(out, fig)
    assert s["vit"]["images"] >= 24 and s["vit"]["grid"] == [14, 14] and s["convnext"]["grid"] == [14, 14]
    assert len(s["vit"]["kurtosis_median"]) == len(s["vit"]["layers"]) == 4
    assert sum(p.startswith("maps/") for p in s["plots"]) == 12  # 6 images × 2 models


@pytest.mark.parametrize("name", ["vit", "convnext"])
def test_code_is_mean_of_sparsest(run, name):
    nc, out, fig = run
    ds = actlake.open_dataset(str(out / f"store-{name}"))
    hook = fig[name]["layers"][-1]
    rows = np.load(out / f"{name}_sparsest_rows.npy")
    code = np.load(out / f"{name}_code.npy")
    prov = ds.provenance(np.arange(ds.num_rows))
    if "token_type" in prov.column_names:
        assert set(np.asarray(prov.column("token_type").to_pylist())[rows]) == {"patch"}  # CLS excluded
    x = ds.take(np.arange(ds.num_rows), hooks=[hook])[hook].float().numpy().reshape(ds.num_rows, -1).astype(np.float64)
    c = x - x.mean(1, keepdims=True)
    kurt = (c ** 4).mean(1) / (c ** 2).mean(1) ** 2 - 3
    img = prov.column("image_id").to_numpy()
    patch = np.ones(ds.num_rows, bool) if "token_type" not in prov.column_names else \
        np.asarray(prov.column("token_type").to_pylist()) == "patch"
    for r in rows:  # each is its image's max-kurtosis patch token
        same = (img == img[r]) & patch
        assert kurt[r] == pytest.approx(kurt[same].max(), rel=1e-9)
    z = c[rows] / np.linalg.norm(c[rows], axis=1, keepdims=True)
    np.testing.assert_allclose(code, z.mean(0), atol=1e-9)
    corr = np.array([np.corrcoef(code, x[r])[0, 1] for r in rows])
    m = len(rows)
    pair = (z @ z.T).sum() - m
    pair /= m * (m - 1)
    # the mean of unit vectors correlates with them by sqrt(1/m + (m-1)/m · mean pairwise) > mean pairwise
    assert corr.mean() == pytest.approx(np.sqrt(1 / m + (m - 1) / m * pair), abs=1e-9)
    assert corr.mean() == pytest.approx(fig[name]["code_corr_with_sparsest"][-1], abs=1e-5)
    assert corr.mean() > pair
    assert max(fig[name]["row_kurtosis_vs_query_stats_absdiff"]) < 1e-3
    assert 0 <= min(fig[name]["code_cos_pc1"]) and max(fig[name]["code_cos_pc1"]) <= 1 + 1e-9
