"""examples/monosemanticity.py on --quick: SAE metrics are consistent with the store, interval
samples fall in their bins, the two SAEs' best matches beat a random SAE."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from wfutil import check_report, load

import actlake

pytestmark = pytest.mark.slow
HOOK = "transformer.h.0.mlp.c_proj:input"


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("mono")
    m = load("monosemanticity")
    return m, out, m.main(["--out", str(out), "--quick"])


def test_metrics(run):
    m, out, fig = run
    s = check_report(out, fig)
    assert s["universality.matrix_shape"] == [4 * s["neurons"]] * 2
    assert s["universality.best_match_median"] > s["universality.random_baseline_median"]
    bm = np.load(out / "best_match.npz")
    live = bm["live"]
    assert live.sum() > 0 and bm["best"].shape == bm["random"].shape == (4 * s["neurons"],)
    assert np.median(bm["best"][live]) == pytest.approx(s["universality.best_match_median"], abs=1e-5)
    assert np.all(bm["best"] <= 1 + 1e-5) and np.all(bm["random"] <= 1 + 1e-5)
    for i in (0, 1):
        assert 0 < s[f"sae{i}.L0"] < 4 * s["neurons"] and 0 <= s[f"sae{i}.nmse"] < 0.5
    loss = s["loss"]
    # figures are rounded to 6 decimals in summary.json
    assert loss["zero_gap"] == pytest.approx(loss["zero"] - loss["clean"], abs=1e-5)
    assert loss["recovered"] == pytest.approx((loss["zero"] - loss["sae"]) / (loss["zero"] - loss["clean"]), rel=1e-3)
    # the tiny LM must rely on the hooked MLP, else loss recovered is a ratio of noise (issue 14)
    assert loss["zero_gap"] > 0.2
    assert 0 <= loss["recovered"] <= 1
    assert (out / "features.html").read_text().count("<h2>latent") == 4
    assert s["pages"] == ["features.html"]  # linked from index.html (check_report)


def test_density_and_intervals_match_the_sae(run):
    m, out, fig = run
    ds = actlake.open_dataset(str(out / "store"))
    st = torch.load(out / "sae0.pt", weights_only=False)
    sae = m.SAE(256, 1024, "relu", 0)
    sae.load_state_dict(st["sae"])
    x = ds.take(np.arange(ds.num_rows), hooks=[HOOK])[HOOK].float()
    with torch.no_grad():
        f = sae.encode(x / st["scale"]).numpy()
    dens = np.load(out / "sae0_density.npy")
    np.testing.assert_allclose(dens, (f > 0).mean(0), atol=2 / ds.num_rows)  # float32 rounding at 0
    assert fig["sae0.dead_frac"] == pytest.approx(float((dens == 0).mean()))
    enc = m.encoder_of(sae, st["scale"])
    for lat in fig["feature_latents"]:
        iv = ds.query.sample_intervals(HOOK, encoder=m.one_latent(enc, lat), bins=11, per_bin=2)
        assert iv.num_rows > 0
        vmax = f[:, lat].max()
        for r in iv.to_pylist():
            assert r["lo"] <= r["value"] <= r["hi"] + 1e-6 and r["value"] > 0
            assert r["lo"] == pytest.approx(r["bin"] * vmax / 11, rel=1e-4, abs=1e-6)
            assert f[r["row_id"], lat] == pytest.approx(r["value"], rel=1e-4, abs=1e-5)
    best = np.load(out / "latent_best_neuron.npy")  # each latent's best-correlated neuron (ds.query.correlate)
    xs = x.numpy().astype(np.float64)
    for lat in fig["feature_latents"]:
        c = np.corrcoef(f[:, lat].astype(np.float64), xs.T)[0, 1:]
        assert c[best[lat]] >= np.nanmax(c) - 1e-5
    top = ds.query.topk(HOOK, encoder=enc, k=20)
    for lat in fig["feature_latents"]:
        t = top.filter(top.column("latent").to_numpy() == lat)
        np.testing.assert_allclose(t.column("value").to_numpy(), np.sort(f[:, lat])[::-1][:20], rtol=1e-4, atol=1e-5)
