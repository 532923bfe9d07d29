"""`actlake query …` end to end (real subprocess): --out files equal the Python API, bad input is one
`error:` line with a non-zero exit and no file."""
from __future__ import annotations

import json

import numpy as np
import pyarrow.csv as pcsv
import pyarrow.parquet as pq
import pytest

import actlake
from cli_zygote import run_cli

from query_stores import text_store


def _cli(*args):
    """``python -m actlake.cli query ARGS`` in its own process (forked from a CLI already imported: no ~3 s of
    imports per command; tests/cli_zygote.py)."""
    return run_cli(["query", *args])


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, x, _ = text_store(str(tmp_path_factory.mktemp("qc") / "s"))
    return uri, x


def test_topk_sae_and_stats_out_files_equal_python(store, tmp_path):
    uri, x = store
    rng = np.random.default_rng(0)
    W = rng.standard_normal((x.shape[1], 6)).astype(np.float32)
    np.savez(tmp_path / "sae.npz", W_enc=W, b_enc=np.zeros(6, np.float32))
    r = _cli("topk", uri, "--hook", "h", "--sae", str(tmp_path / "sae.npz"), "-k", "4", "--dedup", "context",
             "--out", str(tmp_path / "t.parquet"))
    assert r.returncode == 0, r.stderr
    got = pq.read_table(tmp_path / "t.parquet")
    ref = actlake.open_dataset(uri).query.topk("h", encoder={"W_enc": W, "b_enc": np.zeros(6, np.float32)}, k=4,
                                               dedup="context")
    assert got.equals(ref)
    r = _cli("stats", uri, "--hook", "h", "--unit", "6,2", "--out", str(tmp_path / "s.json"))
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "s.json").read_text())
    assert [row["unit"] for row in rows] == [6, 2]  # labelled with the units asked for, in their order
    np.testing.assert_allclose([row["mean"] for row in rows], x[:, [6, 2]].astype(np.float64).mean(0), rtol=1e-12)
    r = _cli("fetch", uri, "--rows", "3,1", "--hooks", "w", "--out", str(tmp_path / "f.csv"))
    assert r.returncode == 0, r.stderr
    f = pcsv.read_csv(tmp_path / "f.csv")
    assert f.column("row_id").to_pylist() == [3, 1]
    np.testing.assert_allclose([json.loads(v) for v in f.column("w").to_pylist()], x[[3, 1], :4] * 2, rtol=1e-5)


def test_stats_out_files_hold_histograms_and_row_summaries(store, tmp_path):
    """The --out file of `query stats` keeps what the console table folds: histogram counts and the
    shared edges as lists (JSON strings in CSV), values above the threshold, and the row summaries."""
    uri, x = store
    ref = actlake.open_dataset(uri).query.stats("h", histogram_bins=5)
    r = _cli("stats", uri, "--hook", "h", "--histogram-bins", "5", "--out", str(tmp_path / "s.parquet"))
    assert r.returncode == 0, r.stderr
    t = pq.read_table(tmp_path / "s.parquet").to_pydict()
    assert np.array_equal(np.array(t["hist"]), ref["hist"]) and np.array(t["hist"]).sum() == x.size
    np.testing.assert_array_equal(t["hist_edges"][0], ref["hist_edges"])
    np.testing.assert_array_equal(t["active"], ref["active"])
    assert t["row_kurtosis_mean"][0] == pytest.approx(ref["row_kurtosis"]["mean"])
    assert t["row_norm_max"][-1] == pytest.approx(ref["row_norm"]["max"])
    r = _cli("stats", uri, "--hook", "h", "--histogram-bins", "5", "--out", str(tmp_path / "s.csv"))
    assert r.returncode == 0, r.stderr
    c = pcsv.read_csv(tmp_path / "s.csv")
    assert [json.loads(v) for v in c.column("hist").to_pylist()] == ref["hist"].tolist()  # whole counts


def test_bad_query_is_one_error_line(store, tmp_path):
    uri, _ = store
    r = _cli("bottomk", uri, "--hook", "h", "--unit", "99", "--out", str(tmp_path / "b.parquet"))
    assert r.returncode != 0
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: unit")
    assert not list(tmp_path.iterdir())
