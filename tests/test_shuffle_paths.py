"""The run-based shuffle: interleaving math, stratified block order, predicted quality against
measured batches, and the two read paths (direct preadv / staged window) giving the same stream."""
from __future__ import annotations

import os

import numpy as np
import pytest
import torch

import actlake
from actlake.client import quality
from actlake.client import shuffle as sh
from actlake.schemas.errors import ActlakeError
from stores import make_store


@pytest.mark.parametrize("sizes", [[5, 5, 5], [1, 7, 3, 64], [1024] * 8 + [988], [3]])
def test_interleave_keeps_every_group_in_proportion(sizes):
    sizes = np.array(sizes)
    seq = sh.interleave(sizes, np.random.default_rng(0).random(len(sizes)))
    assert np.array_equal(np.bincount(seq, minlength=len(sizes)), sizes)
    n = sizes.sum()
    cum = np.zeros((n + 1, len(sizes)))
    np.add.at(cum, (np.arange(1, n + 1), seq), 1)
    cum = cum.cumsum(axis=0)
    # any stretch [p0, p1) holds each group within 2 of its exact share
    for p0, p1 in [(0, n), (0, n // 3), (n // 4, n // 2), (n // 2, n)]:
        share = (p1 - p0) * sizes / n
        assert np.all(np.abs(cum[p1] - cum[p0] - share) <= 2)


def test_stratified_order_is_a_balanced_permutation():
    group = np.repeat(np.arange(10), [40, 40, 40, 40, 40, 40, 40, 40, 40, 4])
    o = sh.stratified_order(group, np.random.default_rng(1))
    assert np.array_equal(np.sort(o), np.arange(len(group)))
    first_half = np.bincount(group[o[:182]], minlength=10)
    assert np.all(np.abs(first_half - np.bincount(group) / 2) <= 1.5)
    o2 = sh.stratified_order(group, np.random.default_rng(2))
    assert not np.array_equal(o, o2)  # random within the strata
    # a group's items are in a random order, not storage order
    assert not np.array_equal(o[group[o] == 0], np.arange(40))


def test_window_order_runs_are_contiguous_and_cover_the_window():
    rows = np.array([64, 64, 50, 64])
    order = sh.window_order(rows, 3, 0, 0, 0, True)
    done = np.zeros(4, dtype=np.int64)
    seen = [[] for _ in rows]
    for p0 in range(0, rows.sum(), 40):
        d, c = sh.runs(order, 4, p0, min(p0 + 40, rows.sum()), done)
        assert np.array_equal(d, np.bincount(order[:p0], minlength=4))  # the cursor agrees with a fresh count
        for j in range(4):
            seen[j].extend(range(d[j], d[j] + c[j]))
        done = d + c
    assert all(s == list(range(n)) for s, n in zip(seen, rows))
    assert np.array_equal(sh.window_order(rows, 0, 0, 0, 0, False), np.repeat(np.arange(4), rows))


def _ctx_store(path, n_frag: int, frag_rows: int, ctx_len: int) -> str:
    """Fragments of whole contexts, rows shuffled inside each fragment (as extraction writes them)."""
    import pyarrow as pa

    from actlake.store.writer import DatasetWriter

    w = DatasetWriter(str(path), {"h": ((2,), "float32")}, chunk_rows=1024, row_shuffle=True)
    start = 0
    for f in range(n_frag):
        rid = np.random.default_rng(f).permutation(np.arange(start, start + frag_rows))
        ctx = rid // ctx_len
        w.add({"h": np.stack([rid, ctx], 1).astype(np.float32)},
              pa.table({"doc_id": ctx, "context_id": ctx, "context_pos": (rid % ctx_len).astype(np.int32),
                        "token_id": np.zeros(frag_rows, np.int32)}))
        start += frag_rows
    return w.close()


@pytest.mark.parametrize("block_rows,buffer_rows", [(512, 8192), (256, 16384), (1024, 4096)])
def test_predicted_quality_matches_measured_batches(tmp_path, block_rows, buffer_rows):
    n_frag, frag_rows, ctx_len, batch = 24, 4000, 50, 512
    ds = actlake.open_dataset(_ctx_store(tmp_path / "q", n_frag, frag_rows, ctx_len))
    ctx = [b["h"][:, 1].numpy().astype(np.int64) for b in
           ds.batches(batch, seed=0, block_rows=block_rows, buffer_rows=buffer_rows)]
    sizes = np.full(n_frag * frag_rows // ctx_len, ctx_len)
    measured = quality.report(ctx, sizes, batch)["distinct_ratio"]
    run = batch * block_rows // buffer_rows
    predicted = sh.predicted_quality(batch, run, buffer_rows // block_rows, n_frag, n_frag * frag_rows,
                                     frag_rows / ctx_len)
    assert abs(measured - predicted) < 0.03, (measured, predicted)


def test_default_layout_meets_the_quality_target(tmp_path):
    """Few contexts per fragment force short runs; the defaults must still mix well."""
    ds = actlake.open_dataset(_ctx_store(tmp_path / "d", 40, 2000, 100))
    s = ds.batches(256, seed=1)
    run = 256 * s.block_rows // s.buffer_rows
    assert run < 64  # shortened from the longest run because fragments hold only 20 contexts
    ctx = [b["h"][:, 1].numpy().astype(np.int64) for b in s]
    assert quality.report(ctx, np.full(800, 100), 256)["distinct_ratio"] >= 0.95


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return make_store(str(tmp_path_factory.mktemp("p") / "ds"), fragments=(300, 257, 64, 1, 400))


def _stream(ds, direct: bool, **kw):
    s = ds.batches(37, with_provenance=True, block_rows=16, buffer_rows=128, **kw)
    if not direct:
        s._direct = False  # force the staged window path on a local store
    return s


@pytest.mark.parametrize("kw", [{}, {"shuffle": False}, {"rank": 1, "world_size": 3}, {"drop_last": False, "epoch": 4}])
def test_direct_and_staged_paths_give_the_same_batches(store, kw):
    ds = actlake.open_dataset(store)
    direct, staged = _stream(ds, True, **kw), _stream(ds, False, **kw)
    assert direct._direct
    a, b = list(direct), list(staged)
    assert len(a) == len(b) == len(direct)
    for x, y in zip(a, b):
        for k in x:
            assert np.array_equal(x[k].numpy(), y[k].numpy())
        assert np.array_equal(x["h"][:, 0].numpy(), x["row_id"].numpy().astype(np.float32))


def test_compressed_store_streams_every_row_once(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "z"), codec="zstd"))
    s = ds.batches(50, seed=2, with_provenance=True, drop_last=False)
    assert not s._direct and s.block_rows <= ds.chunk_rows  # small ranks: blocks below a chunk
    got = []
    for b in s:
        assert np.array_equal(b["h"][:, 0].numpy(), b["row_id"].numpy().astype(np.float32))
        got.append(b["row_id"].numpy())
    assert np.array_equal(np.sort(np.concatenate(got)), np.arange(ds.num_rows))


def test_truncated_chunk_is_reported_not_served(tmp_path):
    uri = make_store(str(tmp_path / "t"))
    ds = actlake.open_dataset(uri)
    victim = ds.access.reader(0).chunk_path("h", 0)
    with open(victim, "r+b") as f:
        f.truncate(os.path.getsize(victim) // 2)
    with pytest.raises(ActlakeError, match="truncated"):
        for _ in ds.batches(64, seed=0):
            pass


def test_abandoned_streams_close_their_files(store):
    ds = actlake.open_dataset(store)
    before = len(os.listdir("/proc/self/fd"))
    for _ in range(20):
        it = iter(ds.batches(37, seed=0, block_rows=16, buffer_rows=128))
        next(it)
        it.close()
    assert len(os.listdir("/proc/self/fd")) <= before + 2


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (pinned memory, non-blocking copies)")
def test_cuda_batches_equal_cpu_batches(store):
    """Pinned outputs are reused only after their non-blocking copy ran: keeping every GPU batch
    must still give exactly the CPU stream."""
    ds = actlake.open_dataset(store)
    cpu = [{k: v.clone() for k, v in b.items()} for b in ds.batches(37, seed=4, with_provenance=True)]
    gpu = list(ds.batches(37, seed=4, with_provenance=True, device="cuda"))
    torch.cuda.synchronize()
    assert len(cpu) == len(gpu)
    for c, g in zip(cpu, gpu):
        assert all(g[k].is_cuda and torch.equal(c[k], g[k].cpu()) for k in c)
