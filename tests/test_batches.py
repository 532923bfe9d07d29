"""Shuffled batch streams: deterministic, every row once per epoch, epochs differ, exact resume, sharding."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import actlake
from stores import make_store


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return actlake.open_dataset(make_store(str(tmp_path_factory.mktemp("s") / "ds")))


def _ids(stream) -> list[np.ndarray]:
    return [b["row_id"].numpy().copy() for b in stream]


def test_rows_and_hooks_are_aligned(ds):
    for b in ds.batches(50, seed=3, with_provenance=True, drop_last=False):
        rid = b["row_id"].numpy()
        assert np.array_equal(b["h"][:, 0].numpy(), rid.astype(np.float32))
        assert np.array_equal(b["g:input"][:, 0].numpy(), -rid.astype(np.float32))


def test_same_seed_same_batches_and_every_row_once(ds):
    a = _ids(ds.batches(64, seed=7, with_provenance=True, drop_last=False))
    b = _ids(ds.batches(64, seed=7, with_provenance=True, drop_last=False))
    assert all(np.array_equal(x, y) for x, y in zip(a, b)) and len(a) == len(b)
    flat = np.concatenate(a)
    assert np.array_equal(np.sort(flat), np.arange(ds.num_rows))
    assert not np.array_equal(flat, np.arange(ds.num_rows))  # actually shuffled


def test_epochs_and_seeds_differ(ds):
    e0 = np.concatenate(_ids(ds.batches(64, seed=7, epoch=0, with_provenance=True)))
    e1 = np.concatenate(_ids(ds.batches(64, seed=7, epoch=1, with_provenance=True)))
    s1 = np.concatenate(_ids(ds.batches(64, seed=8, epoch=0, with_provenance=True)))
    assert not np.array_equal(e0, e1) and not np.array_equal(e0, s1)
    assert len(e0) == len(e1) == (ds.num_rows // 64) * 64


def test_unshuffled_is_commit_order(ds):
    flat = np.concatenate(_ids(ds.batches(100, shuffle=False, with_provenance=True, drop_last=False)))
    assert np.array_equal(flat, np.arange(ds.num_rows))


@pytest.mark.parametrize("k", [0, 1, 5, 9])
def test_resume_from_state_dict(ds, k):
    full = _ids(ds.batches(60, seed=1, with_provenance=True, buffer_rows=100))
    s = ds.batches(60, seed=1, with_provenance=True, buffer_rows=100)
    it = iter(s)
    for _ in range(k):
        next(it)
    state = s.state_dict()
    fresh = ds.batches(60, seed=1, with_provenance=True, buffer_rows=100)
    fresh.load_state_dict(state)
    rest = _ids(fresh)
    assert len(rest) == len(full) - k
    assert all(np.array_equal(x, y) for x, y in zip(rest, full[k:]))


def test_resume_rejects_a_different_stream(ds):
    state = ds.batches(60, seed=1).state_dict()
    with pytest.raises(ValueError, match="different stream"):
        ds.batches(60, seed=2).load_state_dict(state)


@pytest.mark.parametrize("world", [2, 3])
def test_ranks_are_disjoint_with_equal_batch_counts(ds, world):
    per_rank = [_ids(ds.batches(40, seed=4, rank=r, world_size=world, with_provenance=True)) for r in range(world)]
    assert len({len(p) for p in per_rank}) == 1
    flat = [np.concatenate(p) for p in per_rank]
    for i in range(world):
        for j in range(i + 1, world):
            assert not np.intersect1d(flat[i], flat[j]).size
    # no drop_last: all rows covered exactly once across ranks
    every = np.concatenate([np.concatenate(_ids(ds.batches(40, seed=4, rank=r, world_size=world,
                                                             with_provenance=True, drop_last=False)))
                            for r in range(world)])
    assert np.array_equal(np.sort(every), np.arange(ds.num_rows))


def test_bfloat16_and_float16_round_trip(tmp_path):
    ds = actlake.open_dataset(make_store(str(tmp_path / "f16"), fragments=(40,), dtype="float16"))
    got = ds.take([0, 39, 7])["h"]
    assert got.dtype == torch.float16 and got[:, 0].tolist() == [0.0, 39.0, 7.0]


def test_take_and_provenance_order(ds):
    ids = [5, 600, 0, 301, 5]
    t = ds.take(ids)
    assert t["h"][:, 0].tolist() == [float(i) for i in ids]
    p = ds.provenance(ids).to_pydict()
    assert p["row_id"] == ids and p["context_id"] == [i // 10 for i in ids]
    with pytest.raises(IndexError):
        ds.take([ds.num_rows])
    with pytest.raises(KeyError, match="unknown hook"):
        ds.take([0], hooks=["nope"])
