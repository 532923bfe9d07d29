"""Shuffled, deterministic, resumable batch streams over a dataset snapshot.

Pipeline (memory bounded by the buffer settings): the consumer plans batch k + prefetch_batches
(pure arithmetic over the epoch plan: which run of which block of which window), assembly
threads fill each batch straight from the page cache (``DirectWindow``) or from a staging window
loaded ahead by I/O threads (``StagedWindow``), and the consumer takes finished batches in order.
Batch outputs are recycled once the trainer has dropped them.  Batch k is a pure function of the
plan, so resuming at step k is arithmetic (no replay).  This module is the plan and the public
contract; the threads, events and buffers that run it are a ``StreamRuntime`` (client/runtime.py),
whose docstring states who owns which buffer and the shutdown order."""
from __future__ import annotations

import os
import warnings
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from actlake.client import shuffle as sh
from actlake.client.args import whole_number
from actlake.client.buffers import OutputPool, WindowBuffers
from actlake.client.filters import RowFilter
from actlake.client.runtime import StreamRuntime
from actlake.client.windows import DirectWindow, StagedWindow, Window, raise_open_file_limit
from actlake.schemas.errors import ArgumentError, StreamStateError
from actlake.store.dtypes import STORAGE, storage_to_tensor

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset

Piece = tuple[Window, np.ndarray, np.ndarray, np.ndarray]  # a window; per run: segment, first, end row


class EmptyStreamWarning(UserWarning):
    """A batch stream that will yield no batches (no rows, or fewer than one batch with drop_last)."""


class _Cursor:
    """Where planning stands (one per ``__iter__``): the window and offset of the next row to plan
    and, per segment of that window, the rows already planned."""

    def __init__(self):
        self.w, self.off, self.done = -1, -1, np.zeros(0, dtype=np.int64)


class BatchStream:
    """``for batch in stream`` yields ``{hook: tensor[B, ...]}`` (+ ``row_id`` with provenance).

    Every row of the snapshot appears exactly once per epoch across all ranks (minus the
    ``drop_last`` remainder); ``(seed, epoch)`` fixes the order; ranks read disjoint blocks and get
    equal batch counts with ``drop_last``.  ``block_rows`` sets the read granularity (smaller:
    more fragments mixed per batch, more, smaller reads; compressed chunks are decoded whole and
    cut), ``buffer_rows`` the shuffle window, ``prefetch`` the windows read ahead.  The layout, hence
    the order, never depends on the backend, the read path, the codecs or ``verify_reads``.

    Raises ArgumentError (a ValueError) for a ``batch_size``, ``seed``, ``epoch``, ``rank``, ``world_size``,
    ``buffer_rows`` or ``block_rows`` that is not a whole number (or out of range)."""

    def __init__(self, ds: ActivationDataset, batch_size: int, hooks: list[str] | str | None = None,
                 shuffle: bool = True, seed: int = 0, epoch: int = 0, rank: int = 0, world_size: int = 1,
                 drop_last: bool = True, device: str | torch.device | None = None, with_provenance: bool = False,
                 buffer_rows: int | None = None, block_rows: int | None = None, io_threads: int | None = None,
                 prefetch: int = 1, prefetch_batches: int = 6, filter: RowFilter | dict | None = None):
        batch_size = whole_number("batch_size", batch_size, 1)
        seed, epoch = whole_number("seed", seed), whole_number("epoch", epoch)
        rank, world_size = whole_number("rank", rank), whole_number("world_size", world_size)
        buffer_rows = None if buffer_rows is None else whole_number("buffer_rows", buffer_rows, 1)
        block_rows = None if block_rows is None else whole_number("block_rows", block_rows, 1)
        if world_size <= 0 or not 0 <= rank < world_size:
            raise ArgumentError(f"need 0 <= rank < world_size, got rank={rank}, world_size={world_size}")
        self.ds = ds
        self.hooks = ds.access.check_hooks(hooks)
        self.batch_size, self.shuffle, self.seed, self.epoch = batch_size, shuffle, seed, epoch
        self.rank, self.world_size, self.drop_last = rank, world_size, drop_last
        self.device = torch.device(device) if device is not None else None
        self.with_provenance = with_provenance
        # cold local disks want a few reads in flight; object stores are latency-bound and want many
        self.io_threads = io_threads or (4 if ds.store.is_local else 16)
        self.prefetch, self.prefetch_batches = max(0, prefetch), max(1, prefetch_batches)
        self._dtypes = {h: ds.manifest.hooks[h].dtype for h in self.hooks}
        self.filter = RowFilter.model_validate(filter) if isinstance(filter, dict) else filter
        self._plan_epoch(buffer_rows, block_rows)
        self._direct = self._direct_possible() and self._fds_fit()  # how to read, not what
        # assembly threads copy runs into batches (the direct path's reads happen there too)
        self.assembly_threads = max(2, min(self.io_threads, os.cpu_count() or 2))
        self.group_batches = 2
        self.step = 0

    def _plan_epoch(self, buffer_rows: int | None, block_rows: int | None) -> None:
        ds = self.ds
        rows = [f.num_rows for f in ds.snapshot.fragments]
        rank_rows = sum(rows) // self.world_size if self.shuffle else None
        needs_estimate = self.shuffle and (block_rows is None or buffer_rows is None)
        # the layout (hence the order) depends only on the snapshot and the arguments: never on the
        # backend, the read path, the codecs of the hooks or verify_reads (issues 8, 10)
        self.block_rows, self.buffer_rows = sh.auto_layout(
            self.batch_size, len(rows), max(sum(rows), 1),
            ds.access.contexts_per_fragment() if needs_estimate else None, ds.chunk_rows, buffer_rows, block_rows,
            rank_rows=rank_rows)
        kept = ds.access.kept_per_block(self.filter, self.block_rows) if self.filter is not None else None
        self.segments = sh.rank_segments(rows, ds.chunk_rows, self.seed, self.epoch, self.rank, self.world_size,
                                         self.drop_last, self.shuffle, self.block_rows, kept)
        self.bounds = sh.windows(self.segments, self.buffer_rows)
        seg_cum = np.concatenate([[0], np.cumsum(self.segments.rows)]).astype(np.int64)
        self.window_starts = seg_cum[self.bounds]
        # the chunks (fragment · M + chunk) sorted by the window holding their last segment in this
        # stream: their range checksums are complete once that window is retired (verify_reads)
        self._chunk_m = int(self.segments.chunk.max()) + 1 if len(self.segments) else 1
        self._last_key = self._last_window = np.zeros(0, dtype=np.int64)
        if ds.verify_reads and len(self.segments):
            seg_window = np.repeat(np.arange(len(self.bounds) - 1), np.diff(self.bounds))[::-1]
            key = (self.segments.frag.astype(np.int64) * self._chunk_m + self.segments.chunk)[::-1]
            keys, first = np.unique(key, return_index=True)  # first in reverse: the last segment
            order = np.argsort(seg_window[first], kind="stable")
            self._last_key, self._last_window = keys[order], seg_window[first][order]
        # every window fits max(buffer_rows, one block): a size that does not depend on the epoch's
        # permutation, so buffers cached by the dataset fit the next epoch's windows too
        self._max_window_rows = max(self.buffer_rows, self.block_rows)
        self.num_rows = int(self.window_starts[-1])
        self.num_batches = sh.num_batches(self.num_rows, self.batch_size, self.drop_last)
        if self.num_batches == 0:
            where = f"rank {self.rank} of {self.world_size} gets" if self.world_size > 1 else "the stream has"
            why = ("the dataset has no rows" if ds.num_rows == 0 else
                   f"{where} {self.num_rows:,} rows, fewer than one batch of {self.batch_size:,}, and "
                   f"drop_last=True drops them: use a smaller batch_size or drop_last=False" if self.drop_last else
                   f"{where} no rows (every row was filtered out?)")
            warnings.warn(f"ds.batches({self.batch_size}) yields no batches: {why}", EmptyStreamWarning, stacklevel=4)

    @property
    def num_windows(self) -> int:
        return len(self.bounds) - 1

    def __len__(self) -> int:
        return self.num_batches

    # ---- resume -------------------------------------------------------------------------------
    def _identity(self) -> dict[str, Any]:
        return {"batch_size": self.batch_size, "shuffle": self.shuffle, "seed": self.seed, "epoch": self.epoch,
                "rank": self.rank, "world_size": self.world_size, "drop_last": self.drop_last,
                "buffer_rows": self.buffer_rows, "block_rows": self.block_rows,
                "filter": self.filter.model_dump() if self.filter is not None else None,
                "snapshot_version": self.ds.snapshot.version, "hooks": list(self.hooks)}

    def state_dict(self) -> dict[str, Any]:
        """Batches consumed so far plus everything that defines the order."""
        return {**self._identity(), "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Jump to the saved step (O(1): the plan is arithmetic, nothing is replayed).

        Raises:
            StreamStateError: ``state`` is not a dict from ``state_dict()``, belongs to another stream
                (any setting that defines the order differs, or another snapshot), or its step is
                outside [0, len(self)]."""
        if not isinstance(state, dict):
            raise StreamStateError(
                f"load_state_dict needs the dict returned by state_dict(), got {type(state).__name__}")
        mine = self._identity()
        diff = {k: (state.get(k, "<missing>"), v) for k, v in mine.items() if state.get(k, "<missing>") != v}
        if diff:
            shown = ", ".join(f"{k}: saved {a!r}, this stream {b!r}" for k, (a, b) in diff.items())
            raise StreamStateError(f"state_dict is for a different stream ({shown})")
        try:
            step = int(state["step"])
        except (KeyError, TypeError, ValueError):
            raise StreamStateError(f"state_dict has no valid 'step': {state.get('step')!r}") from None
        if not 0 <= step <= self.num_batches:
            raise StreamStateError(f"step {step} outside [0, {self.num_batches}]")
        self.step = step

    # ---- reading ------------------------------------------------------------------------------
    def _buffer_key(self) -> tuple:
        infos = self.ds.manifest.hooks
        return self._max_window_rows, tuple((h, tuple(infos[h].shape), self._dtypes[h]) for h in self.hooks)

    def _direct_possible(self) -> bool:
        """Runs go straight from local files into batches when nothing needs staging."""
        ds = self.ds
        if not ds.store.is_local or self.filter is not None or not hasattr(os, "preadv"):
            return False
        return all(ds.manifest.hooks[h].codec == "none" for h in self.hooks)

    def _fds_fit(self) -> bool:
        """Whether the descriptors of the windows in flight fit this process's open-file limit."""
        per_window = len(self.hooks) * (int(np.diff(self.bounds).max()) if self.num_windows else 0)
        return per_window * (self.prefetch + 3) <= raise_open_file_limit() // 2

    def _window(self, w: int, rt: StreamRuntime) -> Window:
        win = rt.windows.get(w)
        if win is not None:
            return win
        s0, s1 = int(self.bounds[w]), int(self.bounds[w + 1])
        # computed ahead on the loader thread (a sort of the window's rows: milliseconds)
        order = rt.loader.submit(sh.window_order, self.segments.rows[s0:s1], self.seed, self.epoch, self.rank, w,
                                 self.shuffle)
        rot = sh.rotations(self.segments.rows[s0:s1], self.seed, self.epoch, self.rank, w, self.shuffle)
        args = (self.ds.access, self.hooks, self.segments, s0, s1, order, rot, rt.ranges)
        if self._direct:
            # rows of each block the first few batches of the window read
            lead = 4 * -(-self.batch_size * self.block_rows // max(self.buffer_rows, 1))
            win = DirectWindow(*args, files=rt.files, io=rt.io, lead_rows=lead)
        else:
            k = w % len(rt.ring)
            win = StagedWindow(*args, buf=rt.staging(k), filt=self.filter)
            # the slot's previous window must be fully read out before its buffer is overwritten
            rt.load(win, k)
        rt.windows[w] = win
        return win

    def _new_buffers(self) -> WindowBuffers:
        infos = self.ds.manifest.hooks
        return WindowBuffers(self._max_window_rows, {h: tuple(infos[h].shape) for h in self.hooks}, self._dtypes)

    def _pieces(self, k: int, cur: _Cursor, rt: StreamRuntime, ahead: bool = True) -> list[Piece]:
        """The runs batch ``k`` is made of, in order (also opens/loads windows ahead, unless this
        is the stream's first batch: then nothing competes with it)."""
        pos = k * self.batch_size
        need = min(self.batch_size, self.num_rows - pos)
        w = int(np.searchsorted(self.window_starts, pos, side="right")) - 1
        off = pos - int(self.window_starts[w])
        pieces: list[Piece] = []
        while need:
            for j in range(w, min(w + 1 + (self.prefetch if ahead else 0), self.num_windows)):
                self._window(j, rt)
            win = rt.windows[w]
            take = min(need, win.n - off)
            known = cur.done if (cur.w, cur.off) == (w, off) else None
            done, counts = sh.runs(win.order.result(), win.num_segments, off, off + take, known)
            js = np.flatnonzero(counts)
            pieces.append((win, js, done[js], done[js] + counts[js]))
            cur.w, cur.off, cur.done = w, off + take, done + counts
            need -= take
            w, off = w + 1, 0
        return pieces

    def _fill(self, batches: list[list[Piece]], pool: OutputPool
              ) -> list[tuple[dict[str, torch.Tensor], list[np.ndarray]]]:
        for win in dict.fromkeys(p[0] for pieces in batches for p in pieces):
            win.wait()
        sizes = [[int((i1 - i0).sum()) for _, _, i0, i1 in pieces] for pieces in batches]
        results: list[tuple[dict[str, torch.Tensor], list[np.ndarray]]] = [({}, []) for _ in batches]
        infos = self.ds.manifest.hooks
        for h in self.hooks:
            parts: dict[Window, list] = {}  # per window, the runs of every batch, batch after batch
            for (out, arrays), pieces, sz in zip(results, batches, sizes, strict=True):
                dst = pool.get((sum(sz), *infos[h].shape), STORAGE[self._dtypes[h]])
                r = 0
                for (win, js, i0, i1), size in zip(pieces, sz, strict=True):
                    parts.setdefault(win, []).append((js, i0, i1, dst[r:r + size]))
                    r += size
                arrays.append(dst)
                out[h] = storage_to_tensor(dst, self._dtypes[h])
            for win, runs in parts.items():
                win.copy(h, runs)
        if self.with_provenance:
            for (out, _), pieces in zip(results, batches, strict=True):
                ids = [win.row_ids(js, i0, i1) for win, js, i0, i1 in pieces]
                out["row_id"] = torch.from_numpy(np.concatenate(ids))
        return results

    def _retire(self, rt: StreamRuntime) -> None:
        """Close windows whose every batch the consumer has received."""
        for w in [w for w in rt.windows if (int(self.window_starts[w + 1]) - 1) // self.batch_size < self.step]:
            rt.retire(w)
            a, b = np.searchsorted(self._last_window, [w, w + 1])
            for k in self._last_key[a:b].tolist():  # read for the last time: check what was read
                for h in self.hooks:
                    rt.ranges.finish((k // self._chunk_m, h, k % self._chunk_m))

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.step >= self.num_batches:
            return
        cuda = self.device is not None and self.device.type == "cuda"
        to_device = self.device is not None and self.device.type != "cpu"
        cur = _Cursor()
        planned = self.step
        # a job fills `group` consecutive batches: each block's runs for them are adjacent on disk,
        # so the direct path reads them with one preadv that scatters into all of them
        group = max(1, min(self.group_batches, self.prefetch_batches))
        with StreamRuntime(self.ds.access, io_threads=self.io_threads, assembly_threads=self.assembly_threads,
                           ring=self.prefetch + 2, pool_cap=self.prefetch_batches + 8, cuda=cuda,
                           buffer_key=self._buffer_key(), make_buffers=self._new_buffers) as rt:
            while self.step < self.num_batches:
                while planned < self.num_batches and len(rt.inflight) * group < self.prefetch_batches:
                    first = planned == self.step and not rt.inflight  # the stream's first job: one batch, fast
                    batches = [self._pieces(k, cur, rt, ahead=not first)
                               for k in range(planned, min(planned + (1 if first else group), self.num_batches))]
                    rt.submit(self._fill, batches, dict.fromkeys(p[0] for pieces in batches for p in pieces))
                    planned += len(batches)
                for out, arrays in rt.next_filled():
                    if to_device:
                        out = rt.to_device(out, arrays, self.device)  # type: ignore[arg-type]
                    self.step += 1
                    self._retire(rt)
                    yield out
            rt.finish_checks()
