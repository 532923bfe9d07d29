"""Issue 7 B17, the kind of ``take([1.5])``: a fraction where the read API means an integer is refused
by name, never truncated (``rank=0.5`` once gave fractional row ids, ``seed=1.5`` / ``epoch=1.5``
the order of 1); integral values of any integer type still work, and seeds >= 2**32 get their own
order instead of the order of their low 32 bits."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from stores import make_store

import actlake
from actlake.schemas.errors import ActlakeError, ArgumentError, RowIdError, StreamStateError


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return actlake.open_dataset(make_store(str(tmp_path_factory.mktemp("w") / "s")))


def _ids(ds, **kw) -> np.ndarray:
    return np.concatenate([b["row_id"].numpy() for b in ds.batches(16, with_provenance=True, **kw)])


@pytest.mark.parametrize("kw", [{"seed": 1.5}, {"epoch": 0.5}, {"rank": 0.5, "world_size": 2}, {"world_size": 1.5},
                                {"seed": "1"}, {"epoch": True}, {"block_rows": 0}, {"buffer_rows": 2.5},
                                {"seed": float("nan")}])
def test_fractional_stream_arguments_are_refused(ds, kw):
    with pytest.raises(ArgumentError, match=next(iter(kw))) as e:
        ds.batches(16, **kw)
    assert isinstance(e.value, ValueError) and isinstance(e.value, ActlakeError)  # one typed, user-facing error


def test_out_of_range_arguments_are_typed(ds):
    with pytest.raises(ArgumentError, match="rank"):
        ds.batches(16, rank=2, world_size=2)
    with pytest.raises(ArgumentError, match="n must be in"):
        ds.sample(ds.num_rows + 1)
    with pytest.raises(ArgumentError, match="n must be in"):
        ds.sample(-1)


def test_batch_size_and_sample_arguments(ds):
    for bad in (2.5, 0, "16", None):
        with pytest.raises(ValueError, match="batch_size"):
            ds.batches(bad)
        with pytest.raises(ValueError, match="batch_size"):
            ds.torch_dataset(bad)
    with pytest.raises(ValueError, match="seed"):
        ds.sample(10, seed=1.5)
    with pytest.raises(ValueError, match="n "):
        ds.sample(2.5)
    tb = ds.torch_dataset(16)
    with pytest.raises(ValueError, match="epoch"):
        tb.set_epoch(1.5)
    with pytest.raises(StreamStateError):
        tb.load_state_dict({"epoch": 1.5, "step": 0})
    with pytest.raises(StreamStateError):
        tb.load_state_dict({"epoch": 0, "step": 0.5})


def test_integral_values_of_any_integer_type_are_the_integer(ds):
    want = _ids(ds, seed=3, epoch=1, rank=1, world_size=2)
    for seed, epoch, rank, world in [(3.0, 1.0, 1.0, 2.0), (np.int32(3), np.int64(1), np.uint8(1), np.int16(2)),
                                     (torch.tensor(3), torch.tensor(1), torch.tensor(1), torch.tensor(2))]:
        assert np.array_equal(_ids(ds, seed=seed, epoch=epoch, rank=rank, world_size=world), want)
    got = np.concatenate([b["row_id"].numpy() for b in ds.batches(16.0, seed=3, with_provenance=True)])
    assert np.array_equal(got, _ids(ds, seed=3))
    assert np.array_equal(ds.sample(10.0, seed=np.int64(4))["row_id"], ds.sample(10, seed=4)["row_id"])


def test_large_seeds_have_their_own_order(ds):
    base = _ids(ds, seed=0)
    for big in (2**32, 2**40, 2**64 + 5):
        assert not np.array_equal(_ids(ds, seed=big), base), big
        assert len(np.unique(_ids(ds, seed=big))) == len(base)  # still every row once
        assert not np.array_equal(ds.sample(50, seed=big)["row_id"], ds.sample(50, seed=big % 2**32)["row_id"])
    assert np.array_equal(_ids(ds, seed=2**40), _ids(ds, seed=2**40))  # deterministic


def test_unsigned_row_ids_beyond_int64_name_their_value(ds):
    with pytest.raises(RowIdError, match=str(2**63)):
        ds.take(np.array([2**63], dtype=np.uint64))
    assert ds.take(np.array([5], dtype=np.uint64), "h")["h"][0, 0] == 5
