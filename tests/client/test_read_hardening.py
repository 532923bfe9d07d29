"""Issue 7, read side: shuffles are fresh permutations per (seed, epoch) at every size and layout
(A1), side samples are independent uniform draws (A2), shuffle quality holds in every batch of
every rank split (A12), and streams that yield nothing say so (C19)."""
from __future__ import annotations

import warnings

import numpy as np
import pyarrow as pa
import pytest

import actlake
from actlake.client import quality
from actlake.client.batches import EmptyStreamWarning
from actlake.store.writer import DatasetWriter
from stores import make_store


def _flat(stream) -> tuple[np.ndarray, list[np.ndarray]]:
    batches = []
    for b in stream:
        rid = b["row_id"].numpy().copy()
        assert np.array_equal(b["h"][:, 0].numpy(), rid.astype(np.float32))  # data is that row's data
        batches.append(rid)
    return (np.concatenate(batches) if batches else np.zeros(0, np.int64)), batches


# (fragments, chunk_rows, batch, drop_last, codec): one fragment and one chunk, fewer rows than a
# block / window / batch, sizes divisible by nothing, a compressed store (staged path)
LAYOUTS = [((3770,), 8192, 64, True, "none"),
           ((10,), 32, 64, False, "none"),
           ((7, 13, 1), 5, 4, True, "none"),
           ((1000,), 1000, 1000, False, "none"),
           ((97, 89, 211), 1024, 30, True, "none"),
           ((3770,), 8192, 64, True, "zstd"),
           ((50_000,), 8192, 512, True, "none")]


@pytest.mark.parametrize("frags,chunk,batch,drop_last,codec", LAYOUTS)
def test_every_seed_and_epoch_is_a_fresh_permutation(tmp_path, frags, chunk, batch, drop_last, codec):
    ds = actlake.open_dataset(make_store(str(tmp_path / "s"), fragments=frags, chunk_rows=chunk, codec=codec))
    n = ds.num_rows
    expect = n if not drop_last else n // batch * batch
    orders, firsts = {}, {}
    for seed in (0, 1):
        for epoch in (0, 1):
            flat, batches = _flat(ds.batches(batch, seed=seed, epoch=epoch, with_provenance=True,
                                             drop_last=drop_last))
            assert len(flat) == expect and len(np.unique(flat)) == expect  # rows once each
            if not drop_last:
                assert np.array_equal(np.sort(flat), np.arange(n))  # a permutation of all rows
            orders[seed, epoch], firsts[seed, epoch] = flat, set(batches[0].tolist())
    keys = list(orders)
    for i, a in enumerate(keys):
        for b in keys[i + 1:]:
            assert not np.array_equal(orders[a], orders[b]), (a, b)
    if n >= 100:
        for key, flat in orders.items():
            # not storage order in disguise: few consecutive row ids follow each other
            assert np.mean(np.diff(flat) == 1) < 0.2, key
            assert abs(np.corrcoef(np.arange(len(flat)), flat)[0, 1]) < 0.5, key
    if n >= 4 * batch and batch >= 30:
        # the rows that share the first batch change with (seed, epoch): overlap near B^2 / N
        for i, a in enumerate(keys):
            for b in keys[i + 1:]:
                assert len(firsts[a] & firsts[b]) < 0.5 * batch, (a, b)


def test_the_same_rows_do_not_share_batches_every_epoch(tmp_path):
    """Beyond the first batch: over a whole epoch, rows that shared a batch in epoch 0 mostly do not
    in epoch 1 (a perfect shuffle: a pair shares a batch with probability (B - 1) / (N - 1))."""
    ds = actlake.open_dataset(make_store(str(tmp_path / "p"), fragments=(20_000, 20_000), chunk_rows=4096))
    b = 256

    def batch_of(epoch: int) -> np.ndarray:
        where = np.full(ds.num_rows, -1)
        for k, rid in enumerate(_flat(ds.batches(b, seed=3, epoch=epoch, with_provenance=True))[1]):
            where[rid] = k
        return where

    w0, w1 = batch_of(0), batch_of(1)
    rng = np.random.default_rng(0)
    # pairs that were together in epoch 0: a row and another row of its epoch-0 batch
    rows = rng.choice(np.flatnonzero(w0 >= 0), 4000, replace=False)
    partners = np.array([rng.choice(np.flatnonzero(w0 == w0[r])) for r in rows[:400]])
    together = np.mean(w1[rows[:400]] == w1[partners])
    assert together < 0.1, together  # a fixed run layout keeps ~all of them together


def test_sample_is_an_independent_uniform_draw(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "u"), fragments=(6000, 6000, 4000, 4000), chunk_rows=4096))
    n, total = 1000, ds.num_rows
    draws = [ds.sample(n, seed=s, hooks="h") for s in (0, 12345, *range(1, 9))]
    for d in draws:
        rid = d["row_id"].numpy()
        assert len(np.unique(rid)) == n and rid.min() >= 0 and rid.max() < total
        assert np.array_equal(d["h"][:, 0].numpy(), rid.astype(np.float32))
    expected = n * n / total  # 50 shared rows between two independent draws
    shared = len(np.intersect1d(draws[0]["row_id"].numpy(), draws[1]["row_id"].numpy()))
    assert abs(shared - expected) < 5 * np.sqrt(expected), (shared, expected)
    distinct = len(np.unique(np.concatenate([d["row_id"].numpy() for d in draws])))
    assert abs(distinct - total * (1 - (1 - n / total) ** 10)) < 150, distinct
    # uniform over the store: each quarter of the row range gets about a quarter of all draws
    counts = np.bincount(np.concatenate([d["row_id"].numpy() for d in draws]) * 4 // total, minlength=4)
    assert np.all(np.abs(counts - 2500) < 250), counts
    assert np.array_equal(ds.sample(n, seed=7)["row_id"], ds.sample(n, seed=7)["row_id"])  # deterministic


def test_filtered_sample_draws_only_kept_rows(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "f"), fragments=(3000, 2000), chunk_rows=512))
    got = ds.sample(400, seed=1, filter={"min_position": 5})
    rid = got["row_id"].numpy()
    assert len(np.unique(rid)) == 400 and np.all(rid % 10 >= 5)  # context_pos = row % 10 in make_store
    with pytest.raises(ValueError):
        ds.sample(2501, filter={"min_position": 5})


def _ctx_store(path, n_frag: int, frag_rows: int, ctx_len: int) -> str:
    """Fragments of whole contexts, rows shuffled inside each fragment (as extraction writes them);
    column 1 holds the context id.  Fragment sizes vary so no size divides another."""
    w = DatasetWriter(str(path), {"h": ((2,), "float32")}, chunk_rows=2048, row_shuffle=True)
    start = 0
    for f in range(n_frag):
        n = frag_rows + 37 * f
        n -= n % ctx_len
        rid = np.random.default_rng(f).permutation(np.arange(start, start + n))
        ctx = rid // ctx_len
        w.add({"h": np.stack([rid, ctx], 1).astype(np.float32)},
              pa.table({"doc_id": ctx, "context_id": ctx, "context_pos": (rid % ctx_len).astype(np.int32),
                        "token_id": np.zeros(n, np.int32)}))
        start += n
    return w.close()


@pytest.fixture(scope="module")
def ctx_ds(tmp_path_factory):
    return actlake.open_dataset(_ctx_store(tmp_path_factory.mktemp("q") / "ds", 30, 6000, 40))


@pytest.mark.parametrize("rank,world_size", [(0, 1), (1, 2), (0, 3), (2, 3), (4, 5), (6, 7)])
def test_quality_holds_in_every_batch_of_every_split(ctx_ds, rank, world_size):
    """Per batch, through the end of the epoch, for every split (not only on average)."""
    batch = 1024
    sizes = np.bincount(ctx_ds.take(np.arange(ctx_ds.num_rows), "h")["h"][:, 1].numpy().astype(np.int64))
    ctx = [b["h"][:, 1].numpy().astype(np.int64)
           for b in ctx_ds.batches(batch, seed=5, epoch=2, rank=rank, world_size=world_size)]
    rep = quality.report(ctx, sizes, batch)
    # what a perfect permutation scores on the same number of batches (per-batch noise included)
    perm = np.random.default_rng(0).permutation(ctx_ds.num_rows)
    ctx_of_row = ctx_ds.take(perm[:len(ctx) * batch], "h")["h"][:, 1].numpy().astype(np.int64)
    ref = quality.report(list(ctx_of_row.reshape(-1, batch)), sizes, batch)
    assert rep["distinct_ratio_min"] >= 0.95, (rep, ref["distinct_ratio_min"])
    assert rep["distinct_ratio_last10"] >= 0.97, rep
    assert rep["distinct_ratio_min"] >= ref["distinct_ratio_min"] - 0.03, (rep, ref)
    per = quality.per_batch_distinct_ratio(ctx, sizes, batch)
    assert len(per) == rep["batches"] and np.isclose(per.min(), rep["distinct_ratio_min"])


def test_last_window_is_not_a_sliver():
    from actlake.client import shuffle as sh

    segs = sh.rank_segments([5000] * 7 + [333], 1024, 0, 0, 0, 1, True, True, 256)
    bounds = sh.windows(segs, 4096)
    sizes = np.diff(np.concatenate([[0], np.cumsum(segs.raw_rows)])[bounds])
    assert sizes.sum() == segs.raw_rows.sum() and sizes.max() <= 4096
    assert sizes.min() >= 0.8 * sizes.max(), sizes  # greedy cuts left a last window of a few rows


def test_a_stream_with_no_batches_warns(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "w"), fragments=(3770,), chunk_rows=8192))
    with pytest.warns(EmptyStreamWarning, match="drop_last"):
        s = ds.batches(4096)
    assert len(s) == 0 and list(s) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert len(ds.batches(4096, drop_last=False)) == 1
        assert len(ds.batches(1000)) == 3
