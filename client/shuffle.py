"""Pure functions that plan a shuffled epoch: which chunk rows each rank reads, in which order.

The plan is a function of (seed, epoch, rank, world_size, the snapshot's fragment sizes, chunk size,
buffer size) only, so every process derives the same plan without talking to anyone, and a resume
can jump to any batch by arithmetic.

1. Chunks of all fragments are put in a random order (seeded by seed, epoch).
2. The rows of that chunk sequence are split into ``world_size`` contiguous, equal ranges, so each
   rank reads disjoint chunks (no rank re-reads another rank's data).
3. A rank's segments are grouped into windows of about ``buffer_rows`` rows; the rows of a window
   are permuted in memory.  The rank's stream is the concatenation of its permuted windows; batch k
   is rows [k*B, (k+1)*B) of that stream.
Rows inside each chunk are already shuffled across the fragment's contexts at write time."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass(frozen=True)
class Segment:
    """Rows [lo, hi) of chunk ``chunk`` of fragment ``frag``."""

    frag: int
    chunk: int
    lo: int
    hi: int

    @property
    def rows(self) -> int:
        return self.hi - self.lo


def chunk_list(fragment_rows: list[int] | np.ndarray, chunk_rows: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """All chunks in storage order: (fragment index, chunk index, rows in chunk)."""
    frags, chunks, sizes = [], [], []
    for f, n in enumerate(fragment_rows):
        k = -(-int(n) // chunk_rows)
        frags.append(np.full(k, f, dtype=np.int64))
        chunks.append(np.arange(k, dtype=np.int64))
        s = np.full(k, chunk_rows, dtype=np.int64)
        if k:
            s[-1] = int(n) - chunk_rows * (k - 1)
        sizes.append(s)
    cat = lambda xs: np.concatenate(xs) if xs else np.zeros(0, dtype=np.int64)  # noqa: E731
    return cat(frags), cat(chunks), cat(sizes)


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
                  drop_last: bool, shuffle: bool) -> list[Segment]:
    frags, chunks, sizes = chunk_list(fragment_rows, chunk_rows)
    order = _rng(seed, epoch, 0x5EED).permutation(len(sizes)) if shuffle else np.arange(len(sizes))
    starts = np.concatenate([[0], np.cumsum(sizes[order])])
    lo, hi = rank_rows(int(starts[-1]), rank, world_size, drop_last)
    out: list[Segment] = []
    first = int(np.searchsorted(starts, lo, side="right")) - 1
    for j in range(max(first, 0), len(order)):
        s0, s1 = int(starts[j]), int(starts[j + 1])
        if s0 >= hi:
            break
        a, b = max(lo, s0) - s0, min(hi, s1) - s0
        if b > a:
            c = int(order[j])
            out.append(Segment(int(frags[c]), int(chunks[c]), a, b))
    return out


def windows(segments: list[Segment], buffer_rows: int) -> list[list[Segment]]:
    """Group consecutive segments into windows of at least one segment and ≤ buffer_rows rows
    (a single chunk larger than the buffer forms its own window)."""
    out: list[list[Segment]] = []
    cur: list[Segment] = []
    n = 0
    for s in segments:
        if cur and n + s.rows > buffer_rows:
            out.append(cur)
            cur, n = [], 0
        cur.append(s)
        n += s.rows
    if cur:
        out.append(cur)
    return out


def window_permutation(n: int, seed: int, epoch: int, rank: int, window: int, shuffle: bool) -> np.ndarray:
    return _rng(seed, epoch, rank, window, 0xB0F).permutation(n) if shuffle else np.arange(n)


def num_batches(stream_rows: int, batch_size: int, drop_last: bool) -> int:
    return stream_rows // batch_size if drop_last else -(-stream_rows // batch_size)
