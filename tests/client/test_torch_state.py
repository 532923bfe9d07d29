"""Issue 7 A11: the torch dataset's state moves with consumed batches, and set_epoch reaches
persistent DataLoader workers (real DataLoader, real worker processes)."""
from __future__ import annotations

import numpy as np
import pytest
from torch.utils.data import DataLoader

import actlake
from actlake.schemas.errors import StreamStateError
from stores import make_store


@pytest.fixture(scope="module")
def ds(tmp_path_factory):
    return actlake.open_dataset(make_store(str(tmp_path_factory.mktemp("t") / "ds"), fragments=(700, 513, 300)))


def _ids(batches) -> list[np.ndarray]:
    return [b["row_id"].numpy().copy() for b in batches]


def test_state_moves_with_batches_in_process(ds):
    tb = ds.torch_dataset(40, seed=3, with_provenance=True)
    it = iter(tb)
    for k in range(1, 6):
        next(it)
        assert tb.state_dict() == {"epoch": 0, "step": k}
    tb.set_epoch(2)
    assert tb.state_dict() == {"epoch": 2, "step": 0}


@pytest.mark.parametrize("workers", [1, 2])
def test_persistent_workers_follow_set_epoch_and_state_is_exact(ds, workers):
    tb = ds.torch_dataset(40, seed=3, with_provenance=True)
    dl = tb.loader(num_workers=workers, persistent_workers=True)
    epochs = []
    for e in range(3):
        tb.set_epoch(e)
        got = []
        for k, b in enumerate(dl, 1):
            got.append(b["row_id"].numpy().copy())
            assert tb.state_dict() == {"epoch": e, "step": k}
        epochs.append(np.concatenate(got))
    n = len(tb) * 40
    for e, flat in enumerate(epochs):
        assert len(flat) == n and len(np.unique(flat)) == n
        # exactly what a fresh in-process stream of that epoch gives
        ref = ds.torch_dataset(40, seed=3, with_provenance=True, num_workers=workers)
        ref.set_epoch(e)
        assert np.array_equal(np.concatenate(_ids(DataLoader(ref, batch_size=None, num_workers=workers))), flat)
    assert not np.array_equal(epochs[0], epochs[1]) and not np.array_equal(epochs[1], epochs[2])


def test_resume_from_a_mid_epoch_state_with_workers(ds):
    tb = ds.torch_dataset(40, seed=5, with_provenance=True)
    tb.set_epoch(1)
    dl = tb.loader(num_workers=2, persistent_workers=True)
    full = _ids(dl)
    it = iter(dl)
    for _ in range(7):
        next(it)
    state = tb.state_dict()
    assert state == {"epoch": 1, "step": 7}
    del it
    tb2 = ds.torch_dataset(40, seed=5, with_provenance=True)
    tb2.load_state_dict(state)
    rest = _ids(tb2.loader(num_workers=2))
    assert len(rest) == len(full) - 7 and all(np.array_equal(x, y) for x, y in zip(rest, full[7:]))
    assert tb2.state_dict() == {"epoch": 1, "step": len(full)}


def test_plain_dataloader_with_workers_refuses_a_wrong_state(ds):
    tb = ds.torch_dataset(40, seed=3)
    for _ in DataLoader(tb, batch_size=None, num_workers=1):
        pass
    with pytest.raises(StreamStateError):
        tb.state_dict()
