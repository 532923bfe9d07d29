"""Pure functions that plan a shuffled epoch: which chunk rows each rank reads, in which order.

The plan is a function of (seed, epoch, rank, world_size, the snapshot's fragment sizes, chunk size,
buffer size) only, so every process derives the same plan without talking to anyone, and a resume
can jump to any batch by arithmetic.

1. Every chunk is cut into blocks of ``block_rows`` contiguous rows (whole chunks by default); all
   blocks of all fragments are put in a random order (seeded by seed, epoch).  Rows inside a chunk
   were already shuffled across the fragment's contexts at write time, so a block is a random
   sample of its fragment, and a window of many blocks mixes many fragments.
2. The rows of that block sequence are split into ``world_size`` contiguous, equal ranges, so each
   rank reads disjoint blocks (no rank re-reads another rank's data).
3. A rank's segments are grouped into windows of about ``buffer_rows`` rows; the rows of a window
   are permuted in memory.  The rank's stream is the concatenation of its permuted windows; batch k
   is rows [k*B, (k+1)*B) of that stream.
Rows inside each chunk are already shuffled across the fragment's contexts at write time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segments:
    """One entry per block read, as arrays (tens of bytes per block, no Python object per block):
    stored rows [lo, hi) of chunk ``chunk`` of fragment ``frag``, of which the stream uses the
    rows that pass the filter numbered [k0, k1) (all of them, in order, without a filter)."""

    frag: np.ndarray
    chunk: np.ndarray
    lo: np.ndarray
    hi: np.ndarray
    k0: np.ndarray
    k1: np.ndarray

    def __len__(self) -> int:
        return len(self.frag)

    @property
    def rows(self) -> np.ndarray:
        """Rows each segment contributes to the stream."""
        return self.k1 - self.k0

    @property
    def raw_rows(self) -> np.ndarray:
        """Rows each segment occupies in memory while its window is loaded."""
        return self.hi - self.lo


def block_list(fragment_rows: list[int] | np.ndarray, chunk_rows: int, block_rows: int | None = None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """All blocks in storage order: (fragment, chunk, first row in chunk, rows).  Blocks never
    cross a chunk boundary; ``block_rows`` None means whole chunks."""
    block_rows = min(block_rows or chunk_rows, chunk_rows)
    rows = np.asarray(fragment_rows, dtype=np.int64)
    n_chunks = -(-rows // chunk_rows)
    frag = np.repeat(np.arange(len(rows)), n_chunks)
    first = np.concatenate([[0], np.cumsum(n_chunks)[:-1]]) if len(rows) else np.zeros(0, dtype=np.int64)
    chunk = np.arange(int(n_chunks.sum())) - np.repeat(first, n_chunks)
    c_rows = np.minimum(chunk_rows, rows[frag] - chunk * chunk_rows)
    per = -(-c_rows // block_rows)
    b_frag, b_chunk = np.repeat(frag, per), np.repeat(chunk, per)
    starts = np.concatenate([[0], np.cumsum(per)[:-1]]) if len(per) else np.zeros(0, dtype=np.int64)
    b_lo = (np.arange(int(per.sum())) - np.repeat(starts, per)) * block_rows
    b_n = np.minimum(block_rows, np.repeat(c_rows, per) - b_lo)
    return b_frag, b_chunk, b_lo, b_n


def _rng(*key: int) -> np.random.Generator:
    return np.random.default_rng([int(k) & 0xFFFFFFFF for k in key])


def rank_rows(num_rows: int, rank: int, world_size: int, drop_last: bool) -> tuple[int, int]:
    """The [lo, hi) range of the permuted chunk sequence owned by ``rank``.

    With drop_last every rank gets exactly num_rows // world_size rows (equal batch counts for DDP);
    otherwise the remainder is spread one row each over the first ranks."""
    if drop_last:
        per = num_rows // world_size
        return rank * per, (rank + 1) * per
    base, extra = divmod(num_rows, world_size)
    lo = rank * base + min(rank, extra)
    return lo, lo + base + (1 if rank < extra else 0)


def rank_segments(fragment_rows, chunk_rows: int, seed: int, epoch: int, rank: int, world_size: int,
                  drop_last: bool, shuffle: bool, block_rows: int | None = None,
                  kept: np.ndarray | None = None) -> Segments:
    """The blocks (possibly cut at the rank's range ends) that ``rank`` reads, in stream order.

    ``kept`` (rows passing a filter, per block of ``block_list``) makes the split and the batch
    arithmetic count only kept rows."""
    frags, chunks, b_lo, n_raw = block_list(fragment_rows, chunk_rows, block_rows)
    sizes = n_raw if kept is None else np.asarray(kept, dtype=np.int64)
    if len(sizes) != len(n_raw):
        raise ValueError("kept counts do not match the block list")
    order = _rng(seed, epoch, 0x5EED).permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    starts = np.concatenate([[0], np.cumsum(sizes[order])]).astype(np.int64)
    lo, hi = rank_rows(int(starts[-1]), rank, world_size, drop_last)
    j0 = max(int(np.searchsorted(starts, lo, side="right")) - 1, 0)
    j1 = int(np.searchsorted(starts, hi, side="left"))
    sel = order[j0:j1]
    s0, s1 = starts[j0:j1], starts[j0 + 1:j1 + 1]
    a = np.maximum(lo, s0) - s0
    b = np.minimum(hi, s1) - s0
    keep = b > a
    sel, a, b = sel[keep], a[keep], b[keep]
    if kept is None:  # read only the rows used
        return Segments(frags[sel], chunks[sel], b_lo[sel] + a, b_lo[sel] + b, np.zeros_like(a), b - a)
    return Segments(frags[sel], chunks[sel], b_lo[sel], b_lo[sel] + n_raw[sel], a, b)


def windows(segments: Segments, buffer_rows: int) -> np.ndarray:
    """Window boundaries (indices into ``segments``): consecutive segments grouped greedily into
    windows of ≤ buffer_rows rows in memory (a larger segment forms its own window)."""
    cum = np.concatenate([[0], np.cumsum(segments.raw_rows)]).astype(np.int64)
    bounds = [0]
    while bounds[-1] < len(segments):
        i = bounds[-1]
        j = int(np.searchsorted(cum, cum[i] + buffer_rows, side="right")) - 1
        bounds.append(max(j, i + 1))
    return np.asarray(bounds, dtype=np.int64)


def window_permutation(n: int, seed: int, epoch: int, rank: int, window: int, shuffle: bool) -> np.ndarray:
    return _rng(seed, epoch, rank, window, 0xB0F).permutation(n) if shuffle else np.arange(n)


def num_batches(stream_rows: int, batch_size: int, drop_last: bool) -> int:
    return stream_rows // batch_size if drop_last else -(-stream_rows // batch_size)
