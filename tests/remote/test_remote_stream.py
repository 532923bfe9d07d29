"""Remote streams over a real `actlake serve` process equal the local loader, batch for batch."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from remote_server import TOKEN

import actlake
from actlake.client.remote import RemoteDataset
from actlake.schemas.errors import HookError, RowIdError, StreamStateError


def _same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    """Bit-identical: same keys, dtypes, shapes and bytes."""
    return a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and a[k].shape == b[k].shape
        and torch.equal(a[k].view(torch.int16) if a[k].dtype == torch.bfloat16 else a[k],
                        b[k].view(torch.int16) if b[k].dtype == torch.bfloat16 else b[k]) for k in a)


@pytest.fixture(scope="module")
def remote(server) -> RemoteDataset:
    return actlake.open_dataset(server.uri("acts"), storage_options={"token": TOKEN})


@pytest.mark.parametrize("kw", [
    {},
    {"with_provenance": True, "seed": 3, "epoch": 2},
    {"shuffle": False, "drop_last": False, "with_provenance": True},
    {"rank": 1, "world_size": 3, "drop_last": False, "hooks": "g:input"},
    {"filter": {"drop_positions": [0, 1]}, "with_provenance": True, "buffer_rows": 128, "block_rows": 16},
])
def test_remote_equals_local(store, remote, kw):
    local = actlake.open_dataset(store)
    a, b = local.batches(48, **kw), remote.batches(48, **kw)
    assert len(a) == len(b) > 0
    assert a.state_dict() == b.state_dict()
    la, lb = list(a), list(b)
    assert len(la) == len(lb) == len(a)
    assert all(_same(x, y) for x, y in zip(la, lb))
    assert a.state_dict() == b.state_dict()  # both at the end


def test_metadata_and_random_access(store, remote):
    local = actlake.open_dataset(store)
    assert remote.num_rows == len(remote) == local.num_rows
    assert remote.hooks == local.hooks
    assert remote.manifest == local.manifest
    ids = [600, 5, 3, 5, 621, 0]
    assert _same(remote.take(ids), local.take(ids))
    assert _same(remote.take(ids, hooks="h"), local.take(ids, hooks="h"))
    assert remote.provenance(ids).equals(local.provenance(ids))
    assert _same(remote.sample(40, seed=7), local.sample(40, seed=7))
    with pytest.raises(RowIdError):
        remote.take([local.num_rows])
    with pytest.raises(HookError):
        remote.take([1], hooks="nope")


def test_state_resumes_locally_and_remotely(store, remote):
    local = actlake.open_dataset(store)
    ref = list(local.batches(32, seed=5, with_provenance=True))
    s = remote.batches(32, seed=5, with_provenance=True)
    it = iter(s)
    for _ in range(4):
        next(it)
    state = s.state_dict()
    it.close()
    lo = local.batches(32, seed=5, with_provenance=True)
    lo.load_state_dict(state)  # a remote checkpoint resumes a local stream ...
    assert lo.state_dict() == state
    r2 = remote.batches(32, seed=5, with_provenance=True)
    r2.load_state_dict(lo.state_dict())  # ... and a local one a remote stream
    rest = list(r2)
    assert len(rest) == len(ref) - 4 and all(_same(x, y) for x, y in zip(rest, ref[4:]))
    with pytest.raises(StreamStateError):
        remote.batches(32, seed=6).load_state_dict(state)


def test_four_rank_clients_cover_each_row_once(server, store):
    got: dict[int, list[np.ndarray]] = {}
    errors: list[BaseException] = []

    def rank(r: int) -> None:
        try:  # each rank its own client, as DDP ranks on different machines would
            ds = actlake.open_dataset(server.uri("acts"), storage_options={"token": TOKEN})
            got[r] = [b["row_id"].numpy() for b in ds.batches(40, rank=r, world_size=4, drop_last=False,
                                                              with_provenance=True, seed=11)]
        except BaseException as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=rank, args=(r,)) for r in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors
    local = actlake.open_dataset(store)
    rows = np.concatenate([np.concatenate(got[r]) for r in range(4)])
    assert np.array_equal(np.sort(rows), np.arange(local.num_rows))
    for r in range(4):
        ref = [b["row_id"].numpy() for b in local.batches(40, rank=r, world_size=4, drop_last=False,
                                                          with_provenance=True, seed=11)]
        assert all(np.array_equal(x, y) for x, y in zip(got[r], ref)) and len(got[r]) == len(ref)


def test_torch_dataset_matches_local(store, remote):
    local = actlake.open_dataset(store)
    a = [b["row_id"] for b in local.torch_dataset(64, epoch=1, with_provenance=True)]
    b = [b["row_id"] for b in remote.torch_dataset(64, epoch=1, with_provenance=True)]
    assert len(a) == len(b) > 0 and all(torch.equal(x, y) for x, y in zip(a, b))


def test_bf16_bits_survive(tmp_path, start_server):
    import pyarrow as pa
    from stores import make_store

    from actlake.store.writer import DatasetWriter

    rng = np.random.default_rng(0)
    bits = rng.integers(0, 1 << 16, size=(300, 5), dtype=np.uint16)  # every bit pattern, NaNs included
    w = DatasetWriter(str(tmp_path / "bf"), {"x": ((5,), "bfloat16")}, chunk_rows=64)
    rid = np.arange(300)
    w.add({"x": bits}, pa.table({"doc_id": rid // 30, "context_id": rid // 10,
                                 "context_pos": (rid % 10).astype(np.int32), "token_id": rid.astype(np.int32)}))
    uri = w.close()
    fp16 = make_store(str(tmp_path / "half"), dtype="float16")
    srv = start_server([uri, fp16, "--name", "bf", "--name", "half"], token=None)
    for name, path, hook, dtype in (("bf", uri, "x", torch.bfloat16), ("half", fp16, "h", torch.float16)):
        rd = actlake.open_dataset(srv.uri(name))
        loc = actlake.open_dataset(path)
        la, lb = list(loc.batches(50, seed=1)), list(rd.batches(50, seed=1))
        assert len(la) == len(lb) > 0 and all(_same(x, y) for x, y in zip(la, lb))
        assert lb[0][hook].dtype == dtype
