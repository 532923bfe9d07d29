"""actlake.join: alignment through provenance (a one-token shift is detected and named), rows on one
side only reported / dropped, and take / batches / top-k / stats / correlate across the two sides."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from actlake.schemas.errors import AlignmentError, QueryError
from actlake.store.writer import DatasetWriter

import actlake

COLS = ["row_id", "doc_id", "context_id", "context_pos", "doc_pos", "token_id"]
DOCS, LEN = 12, 40


def tokens(doc):
    return (np.arange(LEN) * 7 + doc * 13) % 101


def write(uri, hook, d, seed, shift=0, drop_first=False, frag=100, perm=True):
    """All rows of DOCS documents (one context per document), permuted; activations are a fixed
    function of (doc, pos) plus noise, so the two sides correlate.  ``shift`` makes every token
    the next one of its document (a one-token shift)."""
    rng = np.random.default_rng(seed)
    doc = np.repeat(np.arange(DOCS), LEN)
    pos = np.tile(np.arange(LEN), DOCS)
    keep = ~(drop_first & (pos == 0))
    doc, pos = doc[keep], pos[keep]
    tok = np.array([tokens(dd)[min(p + shift, LEN - 1)] for dd, p in zip(doc, pos)])
    order = rng.permutation(len(doc)) if perm else np.arange(len(doc))
    base = np.stack([np.sin(doc * 1.3 + pos * 0.7), np.cos(pos * 0.3 + doc)], 1)
    x = np.concatenate([base, rng.standard_normal((len(doc), d - 2)) * 0.1], 1).astype(np.float32)
    w = DatasetWriter(uri, {hook: ((d,), "float32"), "shared": ((2,), "float32")}, chunk_rows=16, provenance_columns=COLS)
    for lo in range(0, len(doc), frag):
        s = order[lo:lo + frag]
        w.add({hook: x[s], "shared": x[s, :2] * (1 if seed == 0 else -1)},
              pa.table({"doc_id": doc[s], "context_id": doc[s], "context_pos": pos[s].astype(np.int32),
                        "doc_pos": pos[s].astype(np.int32), "token_id": tok[s].astype(np.int32)}))
    w.close()
    return x, doc, pos


@pytest.fixture(scope="module")
def pair(tmp_path_factory):
    root = tmp_path_factory.mktemp("join")
    xa, doc_a, pos_a = write(str(root / "a"), "ha", 5, seed=0, frag=100)
    xb, doc_b, pos_b = write(str(root / "b"), "hb", 3, seed=1, frag=70)
    return root, (xa, doc_a, pos_a), (xb, doc_b, pos_b)


def test_join_aligns_rows_and_queries_work(pair):
    root, _, _ = pair
    a, b = actlake.open_dataset(str(root / "a")), actlake.open_dataset(str(root / "b"))
    j = actlake.join(a, b)
    assert j.num_rows == DOCS * LEN and set(j.hooks) == {"ha", "hb", "a/shared", "b/shared"}
    pa_ = a.provenance(j.index_a)
    pb_ = b.provenance(j.index_b)
    for c in ("doc_id", "doc_pos", "token_id"):
        assert pa_.column(c).to_pylist() == pb_.column(c).to_pylist()
    XA = j.take(np.arange(j.num_rows), "ha")["ha"].numpy()
    XB = j.take(np.arange(j.num_rows), "hb")["hb"].numpy()
    assert np.array_equal(XA, a.take(j.index_a, "ha")["ha"].numpy())
    assert np.array_equal(XB, b.take(j.index_b, "hb")["hb"].numpy())
    r = j.query.correlate("ha", "hb")
    ref = np.corrcoef(XA.astype(np.float64), XB.astype(np.float64), rowvar=False)[:5, 5:]
    np.testing.assert_allclose(r.matrix, ref, rtol=1e-9, atol=1e-12)
    assert r.best.column("best_unit").to_pylist()[:2] == [0, 1] and r.matrix[0, 0] > 0.99
    np.testing.assert_allclose(j.query.correlate("ha", "hb", tasks=1).matrix,
                               j.query.correlate("ha", "hb", tasks=9).matrix, rtol=1e-12, atol=1e-14)
    np.testing.assert_allclose(j.query.correlate("a/shared", "b/shared").matrix, -np.corrcoef(XA[:, :2], rowvar=False),
                               atol=1e-6)
    top = j.query.topk("hb", unit=1, k=7, context=2)
    assert top.column("row_id").to_pylist() == np.lexsort((np.arange(len(XB)), -XB[:, 1]))[:7].tolist()
    assert top.column("row_id_b").to_pylist() == j.index_b[top.column("row_id").to_numpy()].tolist()
    st = j.query.stats("hb")
    np.testing.assert_allclose(st["mean"], XB.astype(np.float64).mean(0), rtol=1e-9)
    seen = []
    for batch in j.batches(50, hooks=["ha", "hb"], with_provenance=True, drop_last=False, block_rows=32):
        rid = batch["row_id"].numpy()
        assert np.array_equal(batch["ha"].numpy(), XA[rid]) and np.array_equal(batch["hb"].numpy(), XB[rid])
        seen.append(rid)
    assert np.array_equal(np.sort(np.concatenate(seen)), np.arange(j.num_rows))


def test_one_token_shift_is_detected(pair, tmp_path):
    root, _, _ = pair
    write(str(tmp_path / "s"), "hb", 3, seed=1, shift=1)
    a, s = actlake.open_dataset(str(root / "a")), actlake.open_dataset(str(tmp_path / "s"))
    with pytest.raises(AlignmentError) as e:
        actlake.join(a, s)
    # the message names the first differing row of a: the smallest row id whose token differs
    ta = a.provenance(np.arange(a.num_rows))
    first = int(np.flatnonzero(ta.column("doc_pos").to_numpy() < LEN - 1)[0])
    assert f"at row {first} of a" in str(e.value)
    with pytest.raises(AlignmentError):
        actlake.join(a, s, on_mismatch="drop")  # dropping never hides a shift


def test_rows_on_one_side_reported_and_dropped(pair, tmp_path):
    root, _, _ = pair
    write(str(tmp_path / "nobos"), "hb", 3, seed=1, drop_first=True)
    a, nb = actlake.open_dataset(str(root / "a")), actlake.open_dataset(str(tmp_path / "nobos"))
    with pytest.raises(AlignmentError):
        actlake.join(a, nb)
    j = actlake.join(a, nb, on_mismatch="drop")
    assert j.num_rows == DOCS * (LEN - 1) and len(j.report.only_a) == DOCS and len(j.report.only_b) == 0
    assert (a.provenance(j.report.only_a).column("doc_pos").to_numpy() == 0).all()
    assert (a.provenance(j.index_a).column("doc_pos").to_numpy() > 0).all()
    with pytest.raises(QueryError):
        actlake.join(a, nb, on_mismatch="ignore")


def test_side_prefixes_name_every_hook(pair):
    """`a/NAME` and `b/NAME` are accepted for every hook, not only for names both sides have."""
    root, (xa, _, _), (xb, _, _) = pair
    a, b = actlake.open_dataset(str(root / "a")), actlake.open_dataset(str(root / "b"))
    j = actlake.join(a, b)
    assert set(j.hooks) == {"ha", "hb", "a/shared", "b/shared"}  # listed once, by their joined names
    got = j.take([0, 5], hooks=["a/ha", "b/hb"])
    np.testing.assert_array_equal(got["a/ha"].numpy(), j.take([0, 5], hooks="ha")["ha"].numpy())
    np.testing.assert_array_equal(got["b/hb"].numpy(), j.take([0, 5], hooks="hb")["hb"].numpy())
    c1 = j.query.correlate("a/ha", "b/hb").matrix
    np.testing.assert_allclose(c1, j.query.correlate("ha", "hb").matrix, rtol=0, atol=0)
    with pytest.raises(QueryError, match="a/NAME"):
        j.take([0], hooks="c/ha")
