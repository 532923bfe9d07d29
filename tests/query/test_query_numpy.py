"""ds.query against numpy on the fully loaded array of small real stores."""
from __future__ import annotations

import numpy as np
import pytest

import actlake
from actlake.query.topk import IntervalSample, interval_of

from query_stores import ref_topk, ref_topk_dedup, text_store, vision_store


@pytest.fixture(scope="module")
def text(tmp_path_factory):
    uri, x, prov = text_store(str(tmp_path_factory.mktemp("q") / "text"))
    return actlake.open_dataset(uri), x, prov


@pytest.fixture(scope="module")
def bf16(tmp_path_factory):
    uri, x, prov = text_store(str(tmp_path_factory.mktemp("q") / "bf16"), dtype="bfloat16", ties=False, seed=5)
    return actlake.open_dataset(uri), x, prov


def _ids(table, col, j):
    t = table.filter(table.column(col).to_numpy() == j)
    return t.column("row_id").to_numpy(), t.column("value").to_numpy()


@pytest.mark.parametrize("largest", [True, False])
def test_topk_bottomk_units_with_ties(text, largest):
    ds, x, _ = text
    units = [0, 3, 7]
    t = ds.query.topk("h", unit=units, k=12, largest=largest, tasks=5)
    assert t.column_names[:4] == ["unit", "rank", "row_id", "value"] and "context" in t.column_names
    for j in units:
        rid, val = _ids(t, "unit", j)
        np.testing.assert_array_equal(rid, ref_topk(x[:, j], 12, largest))
        np.testing.assert_array_equal(val, x[rid, j])
        assert (np.diff(val) <= 0).all() if largest else (np.diff(val) >= 0).all()


def test_topk_dedup_context_and_provenance(text):
    ds, x, prov = text
    t = ds.query.topk("h", unit=2, k=10, dedup="context", tasks=3)
    rid, _ = _ids(t, "unit", 2)
    np.testing.assert_array_equal(rid, ref_topk_dedup(x[:, 2], prov.column("context_id").to_numpy(), 10))
    np.testing.assert_array_equal(t.column("context_id").to_numpy(), prov.column("context_id").to_numpy()[rid])
    np.testing.assert_array_equal(t.column("token_id").to_numpy(), prov.column("token_id").to_numpy()[rid])
    # the context window holds the row's own token, marked, and only tokens of its context
    tok = prov.column("token_id").to_numpy()
    for r, s in zip(rid, t.column("context").to_pylist()):
        assert f"«[{tok[r]}]»" in s


def test_topk_directions_many_at_once(text):
    ds, x, _ = text
    rng = np.random.default_rng(0)
    dirs = rng.standard_normal((33, x.shape[1])).astype(np.float32)
    t = ds.query.topk("h", direction=dirs, k=7, context=-1, tasks=4)
    assert "context" not in t.column_names
    ref = x @ dirs.T
    for j in range(33):
        rid, val = _ids(t, "direction", j)
        np.testing.assert_array_equal(rid, ref_topk(ref[:, j], 7))
        np.testing.assert_allclose(val, ref[rid, j], rtol=1e-5)


@pytest.mark.parametrize("activation", ["relu", "topk"])
def test_sae_latent_topk_equals_encoding_the_loaded_array(text, activation):
    ds, x, _ = text
    rng = np.random.default_rng(1)
    d, L = x.shape[1], 24
    W, b_enc, b_dec = (rng.standard_normal((d, L)).astype(np.float32), rng.standard_normal(L).astype(np.float32) * 0.1,
                       rng.standard_normal(d).astype(np.float32) * 0.1)
    enc = {"W_enc": W, "b_enc": b_enc, "b_dec": b_dec, "activation": activation,
           "k": 6 if activation == "topk" else None}
    t = ds.query.topk("h", encoder=enc, k=5, context=-1, tasks=3)
    pre = (x - b_dec) @ W + b_enc
    if activation == "relu":
        lat = np.maximum(pre, 0)
    else:
        lat = np.zeros_like(pre)
        keep = np.argsort(-pre, axis=1)[:, :6]
        np.put_along_axis(lat, keep, np.maximum(np.take_along_axis(pre, keep, 1), 0), 1)
    for j in range(L):
        rid, val = _ids(t, "latent", j)
        np.testing.assert_array_equal(rid, ref_topk(lat[:, j], 5))
        np.testing.assert_allclose(val, lat[rid, j], rtol=1e-5, atol=1e-6)


def test_one_task_equals_many_tasks(text):
    ds, x, _ = text
    a = ds.query.topk("h", unit=[1, 4], k=9, dedup="context", tasks=1)
    b = ds.query.topk("h", unit=[1, 4], k=9, dedup="context", tasks=13)
    assert a.equals(b)
    s1, s9 = ds.query.stats("h", tasks=1), ds.query.stats("h", tasks=9)
    for key in ("mean", "var", "skew", "kurtosis", "min", "max", "density"):
        np.testing.assert_allclose(s1[key], s9[key], rtol=1e-12)
    i1 = ds.query.sample_intervals("h", unit=5, tasks=1)
    i7 = ds.query.sample_intervals("h", unit=5, tasks=7)
    assert i1.equals(i7)


def test_stats_match_numpy(text):
    ds, x, _ = text
    s = ds.query.stats("h", threshold=0.3, histogram_bins=8)
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(0)
    var = (r ** 2).mean(0)
    np.testing.assert_array_equal(s["count"], np.full(x.shape[1], len(x)))
    np.testing.assert_allclose(s["mean"], x64.mean(0), rtol=1e-12)
    np.testing.assert_allclose(s["var"], var, rtol=1e-10)
    np.testing.assert_allclose(s["skew"], (r ** 3).mean(0) / var ** 1.5, rtol=1e-8, atol=1e-12)
    np.testing.assert_allclose(s["kurtosis"], (r ** 4).mean(0) / var ** 2 - 3, rtol=1e-8)
    np.testing.assert_array_equal(s["min"], x64.min(0))
    np.testing.assert_array_equal(s["max"], x64.max(0))
    np.testing.assert_allclose(s["density"], (x > 0.3).mean(0))
    lo, hi = float(x.min()), float(x.max())
    np.testing.assert_allclose(s["hist_edges"], np.linspace(lo, hi, 9))
    for j in range(x.shape[1]):
        np.testing.assert_array_equal(s["hist"][j], np.histogram(x[:, j], bins=8, range=(lo, hi))[0])
    np.testing.assert_allclose(s["row_norm"]["mean"], np.linalg.norm(x64, axis=1).mean(), rtol=1e-12)


def test_stats_large_mean_small_variance(tmp_path):
    uri, x, _ = text_store(str(tmp_path / "big-mean"), ties=False, mean=1e4, scale=1e-2, fragments=(500, 333))
    s = actlake.open_dataset(uri).query.stats("h", tasks=6)
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(0)
    var = (r ** 2).mean(0)
    np.testing.assert_allclose(s["var"], var, rtol=1e-9)
    np.testing.assert_allclose(s["skew"], (r ** 3).mean(0) / var ** 1.5, rtol=1e-6, atol=1e-9)
    np.testing.assert_allclose(s["kurtosis"], (r ** 4).mean(0) / var ** 2 - 3, rtol=1e-6, atol=1e-9)


def test_stats_by_position_and_by_label(text, tmp_path):
    ds, x, prov = text
    s = ds.query.stats("h", by="position", unit=[0, 5])
    pos = prov.column("context_pos").to_numpy()
    assert sorted(s) == sorted(np.unique(pos).tolist())
    for p, res in s.items():
        np.testing.assert_allclose(res["mean"], x[pos == p][:, [0, 5]].astype(np.float64).mean(0), rtol=1e-12)
        np.testing.assert_array_equal(res["count"], [np.sum(pos == p)] * 2)
    uri, xv, pv = vision_store(str(tmp_path / "vis"))
    sv = actlake.open_dataset(uri).query.stats("h", by="token_type")
    tt = np.asarray(pv.column("token_type").cast("string").to_pylist())
    assert set(sv) == {"cls", "patch"}
    for key, res in sv.items():
        np.testing.assert_allclose(res["mean"], xv[tt == key].astype(np.float64).mean(0), rtol=1e-12)
        xc = xv[tt == key].astype(np.float64)
        xc = xc - xc.mean(1, keepdims=True)
        kurt = (xc ** 4).mean(1) / (xc ** 2).mean(1) ** 2 - 3
        np.testing.assert_allclose(res["row_kurtosis"]["mean"], kurt.mean(), rtol=1e-10)


def test_sample_intervals_membership_and_sample(text):
    ds, x, _ = text
    t = ds.query.sample_intervals("h", unit=3, bins=11, per_bin=10, seed=4)
    v = x[:, 3]
    vmax = float(v.max())
    rid, val, b = t.column("row_id").to_numpy(), t.column("value").to_numpy(), t.column("bin").to_numpy()
    np.testing.assert_array_equal(val, v[rid])
    assert ((val >= t.column("lo").to_numpy()) & (val <= t.column("hi").to_numpy())).all() and (val > 0).all()
    members = interval_of(v, vmax, 11)
    prio = IntervalSample(11, 10, vmax, seed=4).priority(np.arange(len(v)))
    for i in range(11):
        m = np.flatnonzero(members == i)
        assert ((v[m] >= i * vmax / 11 - 1e-6) & (v[m] <= (i + 1) * vmax / 11 + 1e-6)).all()
        np.testing.assert_array_equal(np.sort(rid[b == i]), np.sort(m[np.argsort(prio[m], kind="stable")][:10]))


def test_bf16_store_reads_bits_as_bfloat16(bf16):
    ds, x, _ = bf16
    t = ds.query.topk("h", unit=1, k=6, context=-1)
    np.testing.assert_array_equal(t.column("row_id").to_numpy(), ref_topk(x[:, 1], 6))
    np.testing.assert_array_equal(t.column("value").to_numpy(), x[t.column("row_id").to_numpy(), 1])
    np.testing.assert_allclose(ds.query.stats("h")["mean"], x.astype(np.float64).mean(0), rtol=1e-12)


def test_fetch_by_every_key(text, tmp_path):
    ds, x, prov = text
    cols = {c: prov.column(c).to_numpy() for c in prov.column_names}
    pick = np.array([5, 600, 0, 321])
    t = ds.query.fetch(pick)
    np.testing.assert_array_equal(t.column("row_id").to_numpy(), pick)
    np.testing.assert_array_equal(np.stack(t.column("h").to_numpy(zero_copy_only=False)), x[pick])
    np.testing.assert_array_equal(np.stack(t.column("w").to_numpy(zero_copy_only=False)), x[pick, :4] * 2)
    by_doc = ds.query.fetch(doc_id=cols["doc_id"][pick], doc_pos=cols["doc_pos"][pick], hooks="h")
    np.testing.assert_array_equal(by_doc.column("row_id").to_numpy(), pick)
    by_ctx = ds.query.fetch(context_id=cols["context_id"][pick], context_pos=cols["context_pos"][pick])
    np.testing.assert_array_equal(by_ctx.column("row_id").to_numpy(), pick)
    by_doc_ctxpos = ds.query.fetch(doc_id=int(cols["doc_id"][5]), context_pos=int(cols["context_pos"][5]))
    ref = np.flatnonzero((cols["doc_id"] == cols["doc_id"][5]) & (cols["context_pos"] == cols["context_pos"][5]))
    np.testing.assert_array_equal(by_doc_ctxpos.column("row_id").to_numpy(), ref)
    whole = ds.query.fetch(context_id=7)
    np.testing.assert_array_equal(whole.column("row_id").to_numpy(), np.flatnonzero(cols["context_id"] == 7))
    uri, xv, pv = vision_store(str(tmp_path / "vis"))
    dv = actlake.open_dataset(uri)
    img, pr, pc = (pv.column(c).to_numpy() for c in ("image_id", "patch_row", "patch_col"))
    sel = np.array([13, 2, 39])
    tv = dv.query.fetch(image_id=img[sel], patch_row=pr[sel], patch_col=pc[sel], context=0)
    np.testing.assert_array_equal(tv.column("row_id").to_numpy(), sel)
    np.testing.assert_array_equal(np.stack(tv.column("h").to_numpy(zero_copy_only=False)), xv[sel])
    assert tv.column("context").to_pylist()[0] == f"image {img[13]} patch ({pr[13]}, {pc[13]})"


def test_vision_topk_context_names_image_and_patch(tmp_path):
    uri, xv, pv = vision_store(str(tmp_path / "vis"))
    t = actlake.open_dataset(uri).query.topk("h", unit=0, k=4)
    rid = t.column("row_id").to_numpy()
    np.testing.assert_array_equal(rid, ref_topk(xv[:, 0], 4))
    img, pr, pc = (pv.column(c).to_numpy() for c in ("image_id", "patch_row", "patch_col"))
    for r, s in zip(rid, t.column("context").to_pylist()):
        assert s == (f"image {img[r]} patch ({pr[r]}, {pc[r]})" if pr[r] >= 0 else f"image {img[r]} cls")


def test_stats_by_hook(text):
    ds, x, _ = text
    s = ds.query.stats(None, rows=False)
    assert set(s) == {"h", "w"}
    np.testing.assert_allclose(s["w"]["mean"], (x[:, :4] * 2).astype(np.float64).mean(0), rtol=1e-12)
    assert ds.query.stats("h", by="hook").keys() == {"h"}


def test_context_window_decoded_and_marked(text):
    ds, x, prov = text
    from actlake.client.query import QueryEngine

    class Tok:  # the one method of a HF tokenizer the context column uses
        def decode(self, ids):
            return "".join(f" t{i}" for i in ids)

    t = QueryEngine(ds, tokenizer=Tok()).topk("h", unit=0, k=5, context=2)
    ctx, pos, tok = (prov.column(c).to_numpy() for c in ("context_id", "context_pos", "token_id"))
    for r, s in zip(t.column("row_id").to_numpy(), t.column("context").to_pylist()):
        near = np.flatnonzero((ctx == ctx[r]) & (np.abs(pos - pos[r]) <= 2))
        near = near[np.argsort(pos[near])]
        assert s == "".join(f"« t{tok[i]}»" if i == r else f" t{tok[i]}" for i in near)
