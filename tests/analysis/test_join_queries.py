"""Queries across a joined dataset (issue 13: "batches, top-k, stats and correlate work across
models"), each checked against numpy on the arrays loaded through the join: top-k with
dedup="context" and its context column, sample_intervals, stats (plain, by a provenance column, with
histograms), correlate between a hook of model a and a hook of model b; and all of them on a join
whose unmatched rows were dropped explicitly (never returning a dropped row)."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

import actlake
from actlake.query.topk import IntervalSample, interval_of
from actlake.schemas.errors import AlignmentError, QueryError

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "query"))
from query_stores import ref_topk_dedup  # noqa: E402
from test_join import write  # noqa: E402


@pytest.fixture(scope="module")
def joined(tmp_path_factory):
    root = tmp_path_factory.mktemp("jq")
    write(str(root / "a"), "ha", 5, seed=0, frag=100)
    write(str(root / "b"), "hb", 3, seed=1, frag=70)
    write(str(root / "nobos"), "hb", 3, seed=2, drop_first=True)
    a = actlake.open_dataset(str(root / "a"))
    full = actlake.join(a, actlake.open_dataset(str(root / "b")))
    with pytest.raises(AlignmentError):  # rows on one side only: an error unless dropped explicitly
        actlake.join(a, actlake.open_dataset(str(root / "nobos")))
    dropped = actlake.join(a, actlake.open_dataset(str(root / "nobos")), on_mismatch="drop")
    assert len(dropped.report.only_a) > 0 and "only in a" in str(dropped.report)
    return full, dropped


def loaded(j, hook):
    return j.take(np.arange(j.num_rows), hook)[hook].numpy().astype(np.float64)


def ref_intervals(v, rid, bins, per_bin, seed):
    """Per bin of (0, max], the per_bin rows of smallest splitmix64 priority (the documented rule)."""
    b = interval_of(v, float(v.max()), bins)
    prio = IntervalSample(bins, per_bin, 1.0, seed).priority(rid)
    keep = b >= 0
    o = np.lexsort((rid[keep], prio[keep], b[keep]))
    bk, rk = b[keep][o], rid[keep][o]
    first = np.searchsorted(bk, bk)
    sel = np.arange(len(bk)) - first < per_bin
    return bk[sel], rk[sel]


@pytest.mark.parametrize("which", ["full", "dropped"])
def test_topk_dedup_and_intervals_across_join(joined, which):
    j = joined[0] if which == "full" else joined[1]
    XB = loaded(j, "hb")
    ctx = j.provenance(np.arange(j.num_rows)).column("context_id").to_numpy()
    for largest in (True, False):
        fn = j.query.topk if largest else j.query.bottomk
        t = fn("hb", unit=1, k=5, context=2, dedup="context", tasks=3)
        v = XB[:, 1] if largest else -XB[:, 1]
        assert t.column("row_id").to_pylist() == ref_topk_dedup(v, ctx, 5).tolist()
        assert len(set(t.column("context_id").to_pylist())) == 5  # one row per context
        np.testing.assert_array_equal(t.column("value").to_numpy(), XB[t.column("row_id").to_numpy(), 1])
        assert all(isinstance(s, str) and s for s in t.column("context").to_pylist())
        assert t.column("row_id_b").to_pylist() == j.index_b[t.column("row_id").to_numpy()].tolist()
    # the context column is side a's context window around the row
    t = j.query.topk("hb", unit=0, k=3, context=2, dedup="context")
    assert t.column("context").to_pylist() == j.ds_a.query.contexts(j.index_a[t.column("row_id").to_numpy()], 2)
    s = j.query.sample_intervals("hb", unit=0, bins=4, per_bin=3, seed=7, context=1, tasks=4)
    b, rid = ref_intervals(XB[:, 0], np.arange(j.num_rows), 4, 3, 7)
    assert s.column("bin").to_pylist() == b.tolist() and s.column("row_id").to_pylist() == rid.tolist()
    np.testing.assert_array_equal(s.column("value").to_numpy(), XB[rid, 0].astype(np.float32))
    assert ((s.column("lo").to_numpy() <= XB[rid, 0]) & (XB[rid, 0] <= s.column("hi").to_numpy())).all()
    assert s.num_rows and "context" in s.column_names
    if which == "dropped":
        assert not np.isin(j.index_a[t.column("row_id").to_numpy()], j.report.only_a).any()
        assert not np.isin(j.index_a[rid], j.report.only_a).any()
    with pytest.raises(QueryError):
        j.query.sample_intervals("hb", unit=[0, 1])


@pytest.mark.parametrize("which", ["full", "dropped"])
def test_stats_and_cross_model_correlate_across_join(joined, which):
    j = joined[0] if which == "full" else joined[1]
    XA, XB = loaded(j, "ha"), loaded(j, "hb")
    st = j.query.stats("hb", histogram_bins=6, tasks=4)
    np.testing.assert_allclose(st["mean"], XB.mean(0), rtol=1e-9)
    np.testing.assert_allclose(st["var"], XB.var(0), rtol=1e-9)
    np.testing.assert_array_equal(st["max"], XB.max(0))
    np.testing.assert_allclose(st["density"], (XB > 0).mean(0))
    edges = st["hist_edges"]
    assert st["hist"].sum(1).tolist() == [j.num_rows] * 3 and edges[0] == XB.min() and edges[-1] == XB.max()
    norms = np.linalg.norm(XB, axis=1)
    np.testing.assert_allclose(st["row_norm"]["mean"], norms.mean(), rtol=1e-9)
    pos = j.provenance(np.arange(j.num_rows)).column("context_pos").to_numpy()
    by = j.query.stats("ha", by="context_pos", unit=[0, 2])
    assert sorted(by) == sorted(set(pos.tolist()))
    for p in (1, 7):
        np.testing.assert_allclose(by[p]["mean"], XA[pos == p][:, [0, 2]].mean(0), rtol=1e-9)
    with pytest.raises(QueryError):
        j.query.stats("ha", by="no_such_column")
    # correlate: a hook of model a with a hook of model b (and a name both sides have)
    r = j.query.correlate("ha", "hb", units_a=[0, 1, 3], tasks=5)
    ref = np.corrcoef(XA[:, [0, 1, 3]], XB, rowvar=False)[:3, 3:]
    np.testing.assert_allclose(r.matrix, ref, rtol=1e-9, atol=1e-12)
    assert r.best.column("best_unit").to_pylist()[:2] == [0, 1] and r.n == j.num_rows
    SA, SB = loaded(j, "a/shared"), loaded(j, "b/shared")
    np.testing.assert_allclose(j.query.correlate("a/shared", "b/shared").matrix,
                               np.corrcoef(SA, SB, rowvar=False)[:2, 2:], rtol=1e-9, atol=1e-12)
    np.testing.assert_allclose(j.query.covariance("ha"), np.cov(XA, rowvar=False), rtol=1e-9, atol=1e-12)
