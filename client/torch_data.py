"""A torch IterableDataset over batch streams, sharded across DDP ranks and DataLoader workers."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any, Iterator

import torch
from torch.utils.data import IterableDataset, get_worker_info

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset


def _ddp_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TorchBatches(IterableDataset):
    """Yields whole batches (dicts of tensors): wrap in ``DataLoader(tb, batch_size=None, num_workers=W)``.

    The rank's data is split into W shards (``world_size * W`` stream ranks in all), so every row
    is read once across all workers and ranks, and (with drop_last) every shard has the same number
    of batches.  DataLoader returns worker batches round-robin, so global batch g is batch g // W of
    shard g % W: after consuming g batches, save ``{"epoch": e, "step": g}`` and pass it to
    ``load_state_dict`` to resume exactly.  Call ``set_epoch(e)`` before each epoch.
    ``rank``/``world_size`` default to torch.distributed's."""

    def __init__(self, ds: "ActivationDataset", batch_size: int, rank: int | None = None,
                 world_size: int | None = None, epoch: int = 0, num_workers: int | None = None, **stream_kw: Any):
        super().__init__()
        auto_rank, auto_world = _ddp_rank_world()
        self.ds, self.batch_size = ds, batch_size
        self.rank = auto_rank if rank is None else rank
        self.world_size = auto_world if world_size is None else world_size
        self.epoch, self.stream_kw = epoch, stream_kw
        self.step = 0  # global batches already consumed (for resume)
        self._workers_hint = num_workers

    def set_epoch(self, epoch: int) -> None:
        self.epoch, self.step = epoch, 0

    def state_dict(self) -> dict[str, Any]:
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.epoch, self.step = int(state["epoch"]), int(state["step"])

    def _stream(self, worker: int, workers: int):
        # Global batch g is batch g // W of shard g % W.  After resuming at step k the DataLoader's
        # i-th batch comes from worker i % W and must be global batch k + i, so worker w serves
        # shard (k + w) % W starting at its batch (k + w) // W.
        k = self.step
        shard = (k + worker) % workers
        s = self.ds.batches(self.batch_size, epoch=self.epoch, rank=self.rank * workers + shard,
                            world_size=self.world_size * workers, **self.stream_kw)
        s.load_state_dict({**s.state_dict(), "step": min((k + worker) // workers, len(s))})
        return s

    def __len__(self) -> int:
        workers = self._workers_hint or 1
        return sum(len(self._stream(w, workers)) for w in range(workers))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        yield from self._stream(worker, workers)
