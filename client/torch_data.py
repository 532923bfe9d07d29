"""A torch IterableDataset over batch streams, sharded across DDP ranks and DataLoader workers."""
from __future__ import annotations

from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import torch
from torch.utils.data import DataLoader, IterableDataset, get_worker_info

from actlake.client.args import whole_number
from actlake.schemas.errors import StreamStateError

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset


def _ddp_rank_world() -> tuple[int, int]:
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        return dist.get_rank(), dist.get_world_size()
    return 0, 1


class TorchBatches(IterableDataset):
    """Yields whole batches (dicts of tensors): iterate it directly, or through
    ``tb.loader(num_workers=W, ...)`` (a ``DataLoader`` with ``batch_size=None``).

    The rank's data is split into W shards (``world_size * W`` stream ranks in all), so every row
    is read once across all workers and ranks, and (with drop_last) every shard has the same number
    of batches.  DataLoader returns worker batches round-robin, so global batch g is batch g // W of
    shard g % W.

    State is exact: ``state_dict()`` is ``{"epoch": e, "step": g}`` with g the batches the trainer
    has received this epoch, counted in the trainer's process (direct iteration, or ``tb.loader``);
    ``load_state_dict`` resumes there.  ``set_epoch(e)`` reaches DataLoader workers that already
    run (``persistent_workers=True``): epoch and start step live in shared memory that each worker
    reads when a new pass begins.  With a plain ``DataLoader`` and workers, the trainer's process
    never sees the batches, so ``state_dict()`` raises ``StreamStateError`` (use ``tb.loader``).
    Each pass (``iter``) starts at the step set by ``set_epoch`` (0) or ``load_state_dict``.
    ``rank``/``world_size`` default to torch.distributed's."""

    def __init__(self, ds: ActivationDataset, batch_size: int, rank: int | None = None,
                 world_size: int | None = None, epoch: int = 0, num_workers: int | None = None, **stream_kw: Any):
        super().__init__()
        auto_rank, auto_world = _ddp_rank_world()
        self.ds, self.batch_size = ds, whole_number("batch_size", batch_size, 1)
        self.rank = auto_rank if rank is None else rank
        self.world_size = auto_world if world_size is None else world_size
        self.stream_kw = stream_kw
        # [epoch, start step, used by worker processes]: shared with DataLoader workers (fork or spawn)
        self._shared = torch.zeros(3, dtype=torch.int64).share_memory_()
        self._shared[0] = whole_number("epoch", epoch)
        self.step = 0  # global batches received this epoch (trainer's process)
        self._counted = False  # a TorchLoader counts batches for us
        self._workers_hint = num_workers

    @property
    def epoch(self) -> int:
        return int(self._shared[0])

    def set_epoch(self, epoch: int) -> None:
        """Start epoch ``epoch`` from its first batch (also in already running workers)."""
        self._shared[0], self._shared[1] = whole_number("epoch", epoch), 0
        self.step = 0

    def state_dict(self) -> dict[str, Any]:
        """``{"epoch": e, "step": g}``: g global batches of epoch e received so far.

        Raises:
            StreamStateError: batches went through DataLoader workers without ``tb.loader`` (the
                count lives in the trainer's process, which a plain DataLoader never tells)."""
        if int(self._shared[2]) and not self._counted:
            raise StreamStateError("this dataset was iterated by DataLoader workers through a plain DataLoader, "
                                   "which does not report consumed batches: iterate tb.loader(num_workers=..., ...) "
                                   "instead (same DataLoader, counts batches) to get an exact state_dict")
        return {"epoch": self.epoch, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume at ``state`` (from ``state_dict``): the next pass starts at its step.

        Raises:
            StreamStateError: not such a dict, or a negative epoch or step."""
        if not isinstance(state, dict) or not {"epoch", "step"} <= set(state):
            raise StreamStateError(f"load_state_dict needs {{'epoch': e, 'step': g}} from state_dict(), got {state!r}")
        try:
            epoch, step = whole_number("epoch", state["epoch"]), whole_number("step", state["step"])
        except ValueError:
            raise StreamStateError(f"epoch and step must be integers, got {state!r}") from None
        if step < 0:
            raise StreamStateError(f"step must be >= 0, got {step}")
        self._shared[0], self._shared[1] = epoch, step
        self.step = step

    def loader(self, num_workers: int = 0, **dataloader_kw: Any) -> TorchLoader:
        """A ``torch.utils.data.DataLoader`` over this dataset (``batch_size=None``: batches are
        already whole) that counts the batches it hands out, so ``state_dict()`` is exact."""
        self._workers_hint = num_workers
        return TorchLoader(self, batch_size=None, num_workers=num_workers, **dataloader_kw)

    def _stream(self, worker: int, workers: int, epoch: int, k: int):
        # Global batch g is batch g // W of shard g % W.  After resuming at step k the DataLoader's
        # i-th batch comes from worker i % W and must be global batch k + i, so worker w serves
        # shard (k + w) % W starting at its batch (k + w) // W.
        shard = (k + worker) % workers
        s = self.ds.batches(self.batch_size, epoch=epoch, rank=self.rank * workers + shard,
                            world_size=self.world_size * workers, **self.stream_kw)
        s.load_state_dict({**s.state_dict(), "step": min((k + worker) // workers, len(s))})
        return s

    def __len__(self) -> int:
        workers = self._workers_hint or 1
        return sum(len(self._stream(w, workers, self.epoch, 0)) for w in range(workers))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        info = get_worker_info()
        worker, workers = (info.id, info.num_workers) if info is not None else (0, 1)
        epoch, k = int(self._shared[0]), int(self._shared[1])
        if info is not None:  # a worker process: the trainer's copy counts (TorchLoader)
            self._shared[2] = 1
            yield from self._stream(worker, workers, epoch, k)
            return
        self.step = k
        for batch in self._stream(worker, workers, epoch, k):
            self.step += 1  # counted as handed out: the generator resumes only when the next is asked for
            yield batch


class TorchLoader(DataLoader):
    """``DataLoader`` over a ``TorchBatches`` that counts batches in the trainer's process."""

    def __iter__(self):
        tb: TorchBatches = self.dataset  # type: ignore[assignment]
        if self.num_workers == 0:  # the dataset runs here and counts itself
            yield from super().__iter__()
            return
        tb._counted = True
        tb.step = int(tb._shared[1])
        for batch in super().__iter__():
            tb.step += 1
            yield batch
