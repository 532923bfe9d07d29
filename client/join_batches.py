"""Shuffled batches over a joined dataset: block order shuffle + in-window row shuffle.

The joined rows are cut into blocks of ``block_rows`` consecutive rows (each block is read with one
``take`` per side, which reads whole chunks, never scattered rows); blocks are permuted by
``(seed, epoch)``, dealt to ranks round-robin, read ``window_blocks`` at a time, and the rows of a
window are permuted before being cut into batches.  Deterministic in (seed, epoch, rank,
world_size); ``state_dict()`` / ``load_state_dict()`` resume after the last batch handed out."""
from __future__ import annotations

from typing import Any

import numpy as np
import torch

from actlake.schemas.errors import ArgumentError, StreamStateError


class JoinedBatches:
    """Iterable of ``{hook: tensor[B, ...]}`` (+ ``row_id`` int64 with provenance)."""

    def __init__(self, joined: Any, batch_size: int, hooks: list[str], shuffle: bool, seed: int, epoch: int,
                 rank: int, world_size: int, drop_last: bool, with_provenance: bool, block_rows: int,
                 window_blocks: int):
        if batch_size <= 0 or not 0 <= rank < world_size:
            raise ArgumentError("batch_size must be > 0 and 0 <= rank < world_size; "
                             f"got {batch_size}, {rank}, {world_size}")
        self.j, self.batch_size, self.hooks = joined, batch_size, hooks
        self.shuffle, self.seed, self.epoch = shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.with_provenance, self.block_rows, self.window_blocks = with_provenance, block_rows, window_blocks
        self._done = 0  # batches handed out

    def _identity(self) -> dict[str, Any]:
        return {"rows": self.j.num_rows, "batch_size": self.batch_size, "seed": self.seed, "epoch": self.epoch,
                "rank": self.rank, "world_size": self.world_size, "shuffle": self.shuffle}

    def state_dict(self) -> dict[str, Any]:
        return {**self._identity(), "batches": self._done}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Raises StreamStateError if ``state`` belongs to another stream."""
        mine = self._identity()
        if {k: state.get(k) for k in mine} != mine:
            raise StreamStateError("state_dict belongs to another stream "
                                   "(rows, batch size, seed, epoch or rank differ)")
        self._done = int(state["batches"])

    def __iter__(self):
        n = self.j.num_rows
        nblocks = -(-n // self.block_rows)
        rng = np.random.default_rng([self.seed, self.epoch, 0x10E])
        blocks = rng.permutation(nblocks) if self.shuffle else np.arange(nblocks)
        mine = blocks[self.rank::self.world_size]
        skip, emitted, carry = self._done, 0, None
        for w in range(0, len(mine), self.window_blocks):
            ids = np.concatenate([np.arange(b * self.block_rows, min(n, (b + 1) * self.block_rows))
                                  for b in mine[w:w + self.window_blocks]])
            if self.shuffle:
                ids = ids[np.random.default_rng([self.seed, self.epoch, 0x10E, w]).permutation(len(ids))]
            if carry is not None:
                ids = np.concatenate([carry, ids])
            full = len(ids) // self.batch_size * self.batch_size
            carry = ids[full:]
            for lo in range(0, full, self.batch_size):
                if emitted < skip:
                    emitted += 1
                    continue
                yield self._batch(ids[lo:lo + self.batch_size])
                emitted += 1
                self._done = emitted
        if carry is not None and len(carry) and not self.drop_last and emitted >= skip:
            yield self._batch(carry)
            self._done = emitted + 1

    def _batch(self, ids: np.ndarray) -> dict[str, torch.Tensor]:
        order = np.argsort(ids, kind="stable")  # read in row order, hand out in shuffled order
        inv = np.empty_like(order)
        inv[order] = np.arange(len(order))
        got = self.j.take(ids[order], hooks=self.hooks)
        out = {h: t[torch.from_numpy(inv)] for h, t in got.items()}
        if self.with_provenance:
            out["row_id"] = torch.from_numpy(ids.astype(np.int64))
        return out
