"""Issue 3 loader features: block plan, filters, DataLoader workers × DDP ranks, side samples."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

import actlake
from actlake.client import shuffle as sh
from actlake.client.filters import RowFilter
from stores import make_store


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return actlake.open_dataset(make_store(str(tmp_path_factory.mktemp("s") / "ds"), fragments=(300, 257, 64, 1, 400)))


def _ids(stream) -> np.ndarray:
    return np.concatenate([b["row_id"].numpy() for b in stream])


def test_block_list_covers_every_row_once():
    frag, chunk, lo, n = sh.block_list([70, 0, 33, 64], chunk_rows=32, block_rows=10)
    seen = set()
    for f, c, a, k in zip(frag, chunk, lo, n):
        assert 0 < k <= 10 and a + k <= 32
        for r in range(a, a + k):
            seen.add((int(f), int(c) * 32 + int(r)))
    assert seen == {(f, r) for f, rows in enumerate([70, 0, 33, 64]) for r in range(rows)}


@pytest.mark.parametrize("world", [1, 2, 5])
def test_plan_ranks_partition_the_epoch(world):
    rows = [1000, 37, 512, 999]
    segs = [sh.rank_segments(rows, 64, 3, 1, r, world, False, True, 16) for r in range(world)]
    got = sorted((int(s.frag[i]), int(s.chunk[i]) * 64 + x) for s in segs for i in range(len(s))
                 for x in range(int(s.lo[i]), int(s.hi[i])))
    assert got == sorted((f, r) for f, n in enumerate(rows) for r in range(n))
    eq = [int(sh.rank_segments(rows, 64, 3, 1, r, world, True, True, 16).rows.sum()) for r in range(world)]
    assert len(set(eq)) == 1 and eq[0] == sum(rows) // world


def test_windows_respect_the_buffer():
    segs = sh.rank_segments([5000], 256, 0, 0, 0, 1, True, True, 100)
    b = sh.windows(segs, 1000)
    raw = np.concatenate([[0], np.cumsum(segs.raw_rows)])
    assert (np.diff(raw[b]) <= 1000).all() and b[-1] == len(segs)


def test_small_blocks_mix_more_fragments(ds):
    def frags_per_batch(**kw):
        counts = []
        for b in ds.batches(100, seed=0, with_provenance=True, buffer_rows=400, **kw):
            frag, _ = ds.snapshot.locate(b["row_id"].numpy())
            counts.append(len(np.unique(frag)))
        return np.mean(counts)
    assert frags_per_batch(block_rows=8) > frags_per_batch(block_rows=32)


def test_kept_batches_stay_intact(ds):
    kept = list(ds.batches(64, seed=2, with_provenance=True, buffer_rows=128, prefetch_batches=1))
    for b in kept:
        assert np.array_equal(b["h"][:, 0].numpy(), b["row_id"].numpy().astype(np.float32))


@pytest.mark.parametrize("flt", [RowFilter(min_position=2, max_position=7), RowFilter(drop_positions=(0, 9)),
                                 RowFilter(exclude_token_ids=tuple(range(0, 97, 2)))])
def test_filters_keep_exactly_the_matching_rows(ds, flt):
    prov = ds.provenance(np.arange(ds.num_rows))
    want = np.nonzero(flt.mask(prov))[0]
    got = _ids(ds.batches(32, seed=5, with_provenance=True, filter=flt, drop_last=False, buffer_rows=200,
                          block_rows=16))
    assert np.array_equal(np.sort(got), want)
    # two ranks: disjoint, equal counts, resume mid-way
    r0 = ds.batches(32, seed=5, rank=0, world_size=2, with_provenance=True, filter=flt)
    r1 = ds.batches(32, seed=5, rank=1, world_size=2, with_provenance=True, filter=flt)
    a, b = _ids(r0), _ids(r1)
    assert len(a) == len(b) and not np.intersect1d(a, b).size and np.isin(a, want).all()
    s = ds.batches(32, seed=5, rank=0, world_size=2, with_provenance=True, filter=flt)
    s.load_state_dict({**s.state_dict(), "step": 3})
    assert np.array_equal(_ids(s), a[3 * 32:])


def test_filter_on_a_column_the_store_lacks(ds):
    with pytest.raises(KeyError, match="token_type"):
        ds.batches(32, filter={"token_types": ["patch"]})


@pytest.mark.parametrize("workers", [0, 2])
def test_dataloader_workers_and_ranks_read_each_row_once(ds, workers):
    seen = []
    for rank in range(2):
        tb = ds.torch_dataset(50, rank=rank, world_size=2, seed=1, with_provenance=True, drop_last=False)
        dl = DataLoader(tb, batch_size=None, num_workers=workers)
        seen.append(np.concatenate([b["row_id"].numpy() for b in dl]))
    every = np.concatenate(seen)
    assert np.array_equal(np.sort(every), np.arange(ds.num_rows))


def test_dataloader_resume_after_g_batches(ds):
    tb = ds.torch_dataset(40, seed=9, with_provenance=True)
    full = [b["row_id"].numpy() for b in DataLoader(tb, batch_size=None, num_workers=2)]
    tb2 = ds.torch_dataset(40, seed=9, with_provenance=True)
    tb2.load_state_dict({"epoch": 0, "step": 5})
    rest = [b["row_id"].numpy() for b in DataLoader(tb2, batch_size=None, num_workers=2)]
    assert len(rest) == len(full) - 5
    assert all(np.array_equal(x, y) for x, y in zip(rest, full[5:]))


def test_side_samples_are_random_deterministic_and_do_not_disturb_streams(ds):
    stream = ds.batches(64, seed=3, with_provenance=True)
    it = iter(stream)
    first = next(it)["row_id"].numpy()
    s1 = ds.sample(200, seed=11)
    s2 = ds.sample(200, seed=11)
    s3 = ds.sample(200, seed=12)
    assert torch.equal(s1["row_id"], s2["row_id"]) and not torch.equal(s1["row_id"], s3["row_id"])
    assert len(np.unique(s1["row_id"].numpy())) == 200
    assert np.array_equal(s1["h"][:, 0].numpy(), s1["row_id"].numpy().astype(np.float32))
    rest = np.concatenate([first] + [b["row_id"].numpy() for b in it])
    assert np.array_equal(rest, _ids(ds.batches(64, seed=3, with_provenance=True)))
    with pytest.raises(ValueError):
        ds.sample(ds.num_rows + 1)
