"""Feature pages of SAE latents: top rows, per-token values and the best neuron equal the queries
with the whole encoder (the pages compute each latent from a one-latent slice of it)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import actlake
from actlake.browse import build_site
from actlake.schemas.errors import QueryError

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browse_store import browse_store  # noqa: E402


def test_sae_latent_pages(tmp_path):
    uri, x, _, tok = browse_store(str(tmp_path / "ds"))
    ds = actlake.open_dataset(uri)
    rng = np.random.default_rng(0)
    enc = {"W_enc": rng.standard_normal((6, 10)).astype(np.float32), "b_enc": np.full(10, -0.1, np.float32),
           "b_dec": rng.standard_normal(6).astype(np.float32) * 0.1, "activation": "relu"}
    feats = build_site(ds, "h", [2, 7], str(tmp_path / "r"), encoder=enc, tokenizer=tok, k=5)
    ref = np.maximum((x - enc["b_dec"]) @ enc["W_enc"] + enc["b_enc"], 0)
    full = ds.query.topk("h", encoder=enc, k=5, context=-1)
    corr = ds.query.correlate("h", "h", encoder_a=enc)
    for f, lat in zip(feats, [2, 7], strict=True):
        t = full.filter(np.asarray(full.column("latent").to_numpy() == lat))
        assert [r["row_id"] for r in f.top] == t.column("row_id").to_pylist()
        np.testing.assert_allclose([r["value"] for r in f.top], ref[t.column("row_id").to_numpy(), lat], rtol=1e-5)
        for r in f.top:  # every token's value is the latent on that token's row
            centre = [v for _, v, c in r["tokens"] if c]
            assert centre == [pytest.approx(r["value"], rel=1e-5)]
        assert f.best_unit == corr.best.column("best_unit")[lat].as_py()
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == [
        "feature_2.html", "feature_2_hist.svg", "feature_7.html", "feature_7_hist.svg", "index.html"]
    with pytest.raises(QueryError):
        build_site(ds, "h", [10], str(tmp_path / "bad"), encoder=enc)
    with pytest.raises(QueryError):
        build_site(ds, "h", [1], str(tmp_path / "bad"), encoder={**enc, "activation": "topk", "k": 2})
    assert not (tmp_path / "bad").exists()
