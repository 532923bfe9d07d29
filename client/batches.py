"""Shuffled, deterministic, resumable batch streams over a dataset snapshot.

Whole chunks are read (never random rows: on a chunked layout that costs a full scan), a window of
chunks is assembled in memory and its rows permuted, and the next window is prefetched in the
background while the current one is consumed.  Memory is bounded by about two windows."""
from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import torch

from actlake.client import shuffle as sh
from actlake.store.dtypes import storage_to_tensor

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset

DEFAULT_BUFFER_ROWS = 1 << 17


class Window:
    """The rows of one window, concatenated in segment order, plus their in-memory permutation."""

    def __init__(self, arrays: dict[str, np.ndarray], row_ids: np.ndarray, perm: np.ndarray):
        self.arrays, self.row_ids, self.perm = arrays, row_ids, perm


class BatchStream:
    def __init__(self, ds: "ActivationDataset", batch_size: int, hooks: list[str] | None = None,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True, device: str | torch.device | None = None, with_provenance: bool = False,
                 buffer_rows: int | None = None, io_threads: int = 4):
        if batch_size <= 0:
            raise ValueError(f"batch_size must be positive, got {batch_size}")
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.ds = ds
        self.hooks = ds._check_hooks(hooks)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device) if device is not None else None
        self.with_provenance = with_provenance
        self.buffer_rows = max(buffer_rows or DEFAULT_BUFFER_ROWS, batch_size)
        self.io_threads = io_threads
        snap = ds.snapshot
        segs = sh.rank_segments([f.num_rows for f in snap.fragments], ds.chunk_rows, seed, epoch, rank,
                                world_size, drop_last, shuffle)
        self.windows = sh.windows(segs, self.buffer_rows)
        sizes = [sum(s.rows for s in w) for w in self.windows]
        self.window_starts = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.num_rows = int(self.window_starts[-1])
        self.num_batches = sh.num_batches(self.num_rows, batch_size, drop_last)
        self.step = 0

    def __len__(self) -> int:
        return self.num_batches

    # ---- resume -------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "shuffle": self.shuffle, "seed": self.seed, "epoch": self.epoch,
                "rank": self.rank, "world_size": self.world_size, "drop_last": self.drop_last,
                "buffer_rows": self.buffer_rows, "snapshot_version": self.ds.snapshot.version,
                "hooks": list(self.hooks)}

    def state_dict(self) -> dict[str, Any]:
        return {**self._identity(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Jump to the saved step (O(1): the plan is arithmetic, nothing is replayed)."""
        mine = self._identity()
        diff = {k: (state.get(k), v) for k, v in mine.items() if state.get(k) != v}
        if diff:
            raise ValueError(f"state_dict is for a different stream: {diff}")
        step = int(state["step"])
        if not 0 <= step <= self.num_batches:
            raise ValueError(f"step {step} outside [0, {self.num_batches}]")
        self.step = step

    # ---- reading ------------------------------------------------------------------------------
    def _load_window(self, w: int, io: ThreadPoolExecutor) -> Window:
        segs = self.windows[w]
        offsets = self.ds.snapshot.offsets
        chunk_rows = self.ds.chunk_rows

        def read(seg: sh.Segment) -> dict[str, np.ndarray]:
            reader = self.ds._reader(seg.frag)
            return {h: reader.read_chunk(h, seg.chunk)[seg.lo:seg.hi] for h in self.hooks}

        parts = list(io.map(read, segs))
        arrays = {h: np.concatenate([p[h] for p in parts]) if len(parts) > 1 else np.ascontiguousarray(parts[0][h])
                  for h in self.hooks}
        row_ids = np.concatenate([
            np.arange(s.lo, s.hi, dtype=np.int64) + offsets[s.frag] + s.chunk * chunk_rows for s in segs
        ])
        perm = sh.window_permutation(len(row_ids), self.seed, self.epoch, self.rank, w, self.shuffle)
        return Window(arrays, row_ids, perm)

    def _to_tensor(self, a: np.ndarray, hook: str) -> torch.Tensor:
        t = storage_to_tensor(a, self.ds.hooks[hook]["dtype"])
        if self.device is not None and self.device.type != "cpu":
            t = t.pin_memory().to(self.device, non_blocking=True)
        return t

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.step >= self.num_batches:
            return
        pos = self.step * self.batch_size
        w = int(np.searchsorted(self.window_starts, pos, side="right")) - 1
        off = pos - int(self.window_starts[w])
        with ThreadPoolExecutor(self.io_threads) as io, ThreadPoolExecutor(1) as pre:
            pending: dict[int, Future] = {}

            def get(i: int) -> Window:
                for j in (i, i + 1):  # keep one window of look-ahead in flight
                    if j < len(self.windows) and j not in pending:
                        pending[j] = pre.submit(self._load_window, j, io)
                return pending.pop(i).result()

            win = get(w)
            while self.step < self.num_batches:
                need = min(self.batch_size, self.num_rows - self.step * self.batch_size)
                pieces: list[tuple[Window, np.ndarray]] = []
                while need:
                    take = min(need, len(win.perm) - off)
                    pieces.append((win, win.perm[off:off + take]))
                    off += take
                    need -= take
                    if off == len(win.perm) and w + 1 < len(self.windows):
                        w, off = w + 1, 0
                        win = get(w)
                batch = {}
                for h in self.hooks:
                    rows = [p.arrays[h][idx] for p, idx in pieces]
                    batch[h] = self._to_tensor(rows[0] if len(rows) == 1 else np.concatenate(rows), h)
                if self.with_provenance:
                    ids = [p.row_ids[idx] for p, idx in pieces]
                    batch["row_id"] = torch.from_numpy(ids[0] if len(ids) == 1 else np.concatenate(ids))
                self.step += 1
                yield batch
            for f in pending.values():
                f.cancel()
