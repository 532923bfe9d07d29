"""examples/tense_inputs.py on --quick: bottom-k ≤ top-k, both equal numpy on the loaded array, and
the most negative units are the argmin of the per-unit minimum."""
from __future__ import annotations

import numpy as np
import pytest
from wfutil import check_report, load

import actlake

pytestmark = pytest.mark.slow
HOOK = "encoder.stages.1.layers.2:pre"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("tense")
    t = load("tense_inputs")
    return t, out, t.main(["--out", str(out), "--quick"])


def test_topk_bottomk_match_numpy(run):
    t, out, fig = run
    s = check_report(out, fig)
    ds = actlake.open_dataset(str(out / "store"))
    x = ds.take(np.arange(ds.num_rows), hooks=[HOOK])[HOOK].float().numpy().reshape(ds.num_rows, -1).astype(np.float64)
    assert s["units"] == x.shape[1] == 128
    assert s["frac_negative"] == pytest.approx(float((x <= 0).mean()), abs=1e-6)
    assert s["most_negative_units"] == [int(u) for u in np.argsort(x.min(0))[:2]]
    img = ds.provenance(np.arange(ds.num_rows)).column("image_id").to_numpy()
    dirs = np.load(out / "directions.npy")
    cols = {f"unit{u}": x[:, u] for u in s["most_negative_units"]}
    cols.update({n: x @ dirs[i].astype(np.float64) for i, n in enumerate(s["directions"])})
    for name, v in cols.items():
        q = s["queries"][name]
        assert max(q["bottom_values"]) <= min(q["top_values"])
        hi = {i: v[img == i].max() for i in np.unique(img)}
        lo = {i: v[img == i].min() for i in np.unique(img)}
        assert q["top_images"] == sorted(hi, key=lambda i: -hi[i])[:4]
        assert q["bottom_images"] == sorted(lo, key=lambda i: lo[i])[:4]
        np.testing.assert_allclose(q["top_values"], sorted(hi.values(), reverse=True)[:4], rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(q["bottom_values"], sorted(lo.values())[:4], rtol=1e-4, atol=1e-5)
    labels = ds.provenance(np.arange(ds.num_rows)).column("label").to_pylist()
    for g, mins in s["min_by_label"].items():
        sel = np.array([lab == g for lab in labels])
        np.testing.assert_allclose(mins, x[sel][:, s["most_negative_units"]].min(0), rtol=1e-5)
