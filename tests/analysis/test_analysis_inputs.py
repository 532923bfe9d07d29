"""What a new user tried against the analyses (correlate / covariance / PCA), each kind checked:
a one-sided selection is compared with every unit of the hook; counts (tasks, threads) and unit lists
are refused with an error naming the argument; degenerate data gives an error, not a LinAlgError; CLI
output files are checked before the query runs; JSON output is strict; PCA's vectors can be saved."""
from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest
from actlake.schemas.errors import QueryError

import actlake

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from cli_zygote import run_cli  # noqa: E402
from query_stores import text_store  # noqa: E402


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    uri, x, _ = text_store(str(tmp_path_factory.mktemp("inputs") / "ds"), d=8, ties=False)
    return uri, x.astype(np.float64)


def _corr(a, b):
    return np.corrcoef(a, b, rowvar=False)[: a.shape[1], a.shape[1]:]


def test_one_sided_selection_is_compared_with_every_unit(store):
    uri, x = store
    ds = actlake.open_dataset(uri)
    v = np.random.default_rng(0).standard_normal((2, 8)).astype(np.float32)
    r = ds.query.correlate("h", direction_a=v)
    assert r.matrix.shape == (2, 8)
    np.testing.assert_allclose(r.matrix, _corr(x @ v.T.astype(np.float64), x), atol=1e-6)
    r = ds.query.correlate("h", units_a=[3])
    assert r.matrix.shape == (1, 8)
    np.testing.assert_allclose(r.matrix, _corr(x[:, [3]], x), rtol=1e-9, atol=1e-12)
    ref = _corr(x[:, [3]], x)[0]
    ref[3] = -np.inf  # a unit is not its own best match
    assert r.best.column("best_unit").to_pylist() == [int(np.argmax(ref))]
    assert ds.query.correlate("h").matrix.shape == (8, 8)  # no selection on either side: every pair


@pytest.mark.parametrize("kw, arg", [
    ({"tasks": 0}, "tasks"), ({"tasks": -3}, "tasks"), ({"tasks": 1.5}, "tasks"), ({"threads": 0}, "threads"),
    ({"units_a": [1.5]}, "units_a"), ({"units_a": [1, 1]}, "units_a"),
    ({"units_a": [0], "direction_a": np.ones(8, np.float32)}, "direction_a"), ({"precision": "float16"}, "precision"),
])
def test_bad_arguments_name_the_argument(store, kw, arg):
    ds = actlake.open_dataset(store[0])
    with pytest.raises(QueryError, match=f"^{arg}: "):
        ds.query.correlate("h", **kw)


def test_covariance_and_pca_name_their_own_arguments(store):
    ds = actlake.open_dataset(store[0])
    with pytest.raises(QueryError, match="^hook: 'nope'"):
        ds.query.covariance("nope")
    with pytest.raises(QueryError, match="^tasks: "):
        ds.query.pca("h", 2, tasks=0)
    with pytest.raises(QueryError, match="^precision: "):  # checked before n_components
        ds.query.pca("h", 99, precision="float16")
    with pytest.raises(QueryError, match="^tasks: "):
        ds.query.topk("h", unit=0, tasks=0)


def test_pca_of_a_single_row_is_an_error(tmp_path):
    uri, _, _ = text_store(str(tmp_path / "one"), fragments=(1,), d=4, ties=False)
    ds = actlake.open_dataset(uri)
    with pytest.raises(QueryError, match="more than 1 row"):
        ds.query.pca("h", 2)
    r = run_cli(["query", "pca", uri, "--hook", "h", "-n", "2"])
    assert r.returncode == 2 and r.stderr.count("error") == 1 and "Traceback" not in r.stderr, r.stderr


def test_cli_output_files_are_checked_before_the_query(store, tmp_path):
    uri, x = store
    for extra in (["--matrix", str(tmp_path / "no" / "m.npy")], ["--out", str(tmp_path / "no" / "b.csv")],
                  ["--matrix", str(tmp_path / "m.txt")], ["--out", str(tmp_path)]):
        r = run_cli(["query", "correlate", uri, "--hook", "h", *extra])
        assert r.returncode == 2 and r.stderr.count("error") == 1, (extra, r.stderr)
        assert "best matches" not in r.stdout, extra  # refused before the query ran
    with pytest.raises(QueryError, match="^out: folder"):
        actlake.open_dataset(uri).query.plot("density", "h", str(tmp_path / "no" / "d.png"))


def test_json_output_is_strict_and_pca_vectors_are_saved(tmp_path):
    uri, x, _ = text_store(str(tmp_path / "c"), d=4, ties=False)
    ds = actlake.open_dataset(uri)
    # unit 0 against unit 0 alone: no other unit to match, so its best correlation is NaN, written as null
    r = run_cli(["query", "correlate", uri, "--hook", "h", "--units", "0", "--hook-b", "h", "--units-b", "0",
                 "--out", str(tmp_path / "c.json")])
    assert r.returncode == 0, r.stderr
    rows = json.loads((tmp_path / "c.json").read_text(), parse_constant=lambda c: pytest.fail(f"{c} in JSON"))
    assert rows[0]["best_unit"] == -1 and rows[0]["corr"] is None
    r = run_cli(["query", "pca", uri, "--hook", "h", "-n", "2", "--components", str(tmp_path / "pcs.npz")])
    assert r.returncode == 0, r.stderr
    got, want = np.load(tmp_path / "pcs.npz"), ds.query.pca("h", 2)
    np.testing.assert_allclose(got["components"], want.components, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(got["mean"], want.mean, rtol=1e-12)
    np.testing.assert_allclose(got["explained_variance"], want.explained_variance, rtol=1e-12)
    assert got["components"].shape == (2, 4)
