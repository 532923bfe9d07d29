"""Plots (histogram per unit, density over units, kurtosis per layer) equal the query numbers and are
written as files; `actlake query correlate|pca|project|plot` from the CLI; errors are one line."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest
from actlake.schemas.errors import QueryError

import actlake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from cli_zygote import run_cli  # noqa: E402  (each command its own process, without ~3 s of imports each)
from query_stores import text_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, x, _ = text_store(str(tmp_path_factory.mktemp("plots") / "ds"), d=8, ties=False)
    return uri, x


def test_plots_match_numpy(store, tmp_path):
    uri, x = store
    ds = actlake.open_dataset(uri)
    f = ds.query.plot("histogram", "h", str(tmp_path / "h.png"), units=[0, 3], bins=20)
    d = f.actlake_data
    for i, u in enumerate([0, 3]):
        ref, _ = np.histogram(x[:, u], bins=d["edges"])
        assert np.array_equal(d["hist"][i], ref)
    f = ds.query.plot("density", "h", str(tmp_path / "d.svg"), threshold=0.5)
    np.testing.assert_allclose(f.actlake_data["density"], (x > 0.5).mean(0))
    f = ds.query.plot("kurtosis", None, str(tmp_path / "k.png"))
    assert f.actlake_data["hooks"] == ["h", "w"]
    xc = x.astype(np.float64) - x.mean(0)
    np.testing.assert_allclose(f.actlake_data["kurtosis"][0], (xc**4).mean(0) / (xc**2).mean(0) ** 2 - 3, rtol=1e-6)
    for name in ("h.png", "d.svg", "k.png"):
        assert (tmp_path / name).stat().st_size > 1000
    assert (tmp_path / "h.png").read_bytes()[:4] == b"\x89PNG"
    with pytest.raises(QueryError):
        ds.query.plot("violin", "h")


def test_cli_correlate_pca_project_plot(store, tmp_path):
    uri, x = store
    r = run_cli(["query", "correlate", uri, "--hook", "h", "--hook-b", "w", "--out", str(tmp_path / "c.parquet"),
                 "--matrix", str(tmp_path / "m.npy")])
    assert r.returncode == 0, r.stderr
    w = actlake.open_dataset(uri).take(np.arange(len(x)), "w")["w"].float().numpy()
    ref = np.corrcoef(x.astype(np.float64), w.astype(np.float64), rowvar=False)[:8, 8:]
    np.testing.assert_allclose(np.load(tmp_path / "m.npy"), ref, rtol=1e-9, atol=1e-12)
    assert pq.read_table(tmp_path / "c.parquet").column("best_unit").to_pylist() == np.argmax(ref, 1).tolist()
    r = run_cli(["query", "pca", uri, "--hook", "h", "-n", "3", "--out", str(tmp_path / "p.csv"),
                 "--precision", "float32"])
    assert r.returncode == 0, r.stderr
    w0 = np.linalg.eigvalsh(np.cov(x.astype(np.float64), rowvar=False))[::-1][:3]
    np.testing.assert_allclose(pd_col(tmp_path / "p.csv", "explained_variance"), w0, rtol=1e-6)
    np.save(tmp_path / "D.npy", np.eye(8, dtype=np.float32)[:2])
    r = run_cli(["query", "project", uri, "--hook", "h", "--directions", str(tmp_path / "D.npy"),
                 "--name", "first2"])
    assert r.returncode == 0, r.stderr
    got = actlake.open_dataset(uri).take(np.arange(len(x)), "first2")["first2"].numpy()
    assert np.array_equal(got, x[:, :2])
    r = run_cli(["query", "plot", "density", uri, "--hook", "first2", "--out", str(tmp_path / "d.png")])
    assert r.returncode == 0 and (tmp_path / "d.png").exists(), r.stderr
    r = run_cli(["query", "correlate", uri, "--hook", "h", "--units", "0,99"])
    assert r.returncode == 2 and r.stderr.count("error") == 1
    r = run_cli(["query", "correlate", uri, "--hook", "h", "--precision", "half"])
    assert r.returncode == 2 and r.stderr.count("error") == 1 and "precision" in r.stderr


def pd_col(path, name):
    import pyarrow.csv as pcsv

    return pcsv.read_csv(path).column(name).to_numpy()
