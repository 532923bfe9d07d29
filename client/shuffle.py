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
3. A rank's segments are grouped into windows of about ``buffer_rows`` rows; the segments of a
   window are interleaved in proportion (``window_order``), so every batch takes a short contiguous
   run from every block of its window.  The rank's stream is the concatenation of its windows;
   batch k is positions [k*B, (k+1)*B) of that stream."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.ma  # noqa: F401  (numpy loads these lazily (np.unique needs np.ma): at import time,
import numpy.random  # noqa: F401  not inside the first batch of a fresh process)

from actlake.client.args import seed_words


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
    return np.random.default_rng([seed_words(k) for k in key])


def interleave(sizes: np.ndarray, phase: np.ndarray) -> np.ndarray:
    """Group index per position when groups of ``sizes`` are spread evenly over one sequence:
    item i of group g sits at key (i + phase[g]) / sizes[g] (phase in [0, 1)); equal keys keep
    groups of equal size in phase order, then in order of first appearance of their size.  Any
    stretch of consecutive positions then holds every group in proportion to its size, within one
    item.

    Groups of one size interleave round-robin in phase order, so each size class is generated
    already sorted and only a handful of sorted runs is merged (milliseconds per window)."""
    sizes = np.asarray(sizes, dtype=np.int64)
    if len(sizes) <= 1:
        return np.repeat(np.arange(len(sizes), dtype=np.int32), sizes)
    phase = np.asarray(phase, dtype=np.float64)
    classes, first = np.unique(sizes, return_index=True)
    keys, groups = [], []
    for n in classes[np.argsort(first, kind="stable")]:
        if n == 0:
            continue
        members = np.flatnonzero(sizes == n)
        members = members[np.argsort(phase[members], kind="stable")]
        keys.append(((np.arange(n)[:, None] + phase[members][None, :]) / n).ravel())
        groups.append(np.broadcast_to(members.astype(np.int32), (n, len(members))).ravel())
    key, group = np.concatenate(keys), np.concatenate(groups)
    return group[np.argsort(key, kind="stable")]


def stratified_order(group: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """A random order of items (blocks) in which every stretch holds each group (fragment) in
    proportion: each group's items are permuted, then the groups are interleaved with random phases.
    A window of consecutive blocks is then a stratified sample of the fragments, so batches draw
    rows from each fragment as evenly as a perfect permutation does (or more evenly), instead of
    however many of its blocks a uniform block order happened to put in the window."""
    group = np.asarray(group, dtype=np.int64)
    if not len(group):
        return np.zeros(0, dtype=np.int64)
    n_groups = int(group.max()) + 1
    sizes = np.bincount(group, minlength=n_groups)
    # items of each group in a random order: sort by (group, random key)
    members = np.lexsort((rng.random(len(group)), group))
    seq = interleave(sizes, rng.random(n_groups))
    first = np.concatenate([[0], np.cumsum(sizes)[:-1]]).astype(np.int64)
    nth = np.empty(len(seq), dtype=np.int64)  # occurrence number of each position's group so far
    order_by_group = np.argsort(seq, kind="stable")
    nth[order_by_group] = np.arange(len(seq)) - np.repeat(first, sizes)
    return members[first[seq] + nth]


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
    order = stratified_order(frags, _rng(seed, epoch, 0x5EED)) if shuffle else np.arange(len(sizes))
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
    """Window boundaries (indices into ``segments``): consecutive segments grouped into the fewest
    windows of ≤ buffer_rows rows in memory (a larger segment forms its own window), cut as evenly
    as segment sizes allow.  Even cuts keep the epoch's last window as full of blocks as the others
    (a greedy cut leaves a last window of a few blocks, whose batches mix few fragments)."""
    raw = np.asarray(segments.raw_rows, dtype=np.int64)
    n = len(raw)
    if n == 0:
        return np.zeros(1, dtype=np.int64)
    cum = np.concatenate([[0], np.cumsum(raw)]).astype(np.int64)
    total = int(cum[-1])
    for n_w in range(max(1, -(-total // max(buffer_rows, 1))), n + 1):
        # cut at the segment boundary nearest each even split point
        targets = np.arange(1, n_w) * (total / n_w)
        right = np.clip(np.searchsorted(cum, targets, side="left"), 1, n)
        left = right - 1
        cut = np.where(targets - cum[left] <= cum[right] - targets, left, right)
        bounds = np.unique(np.concatenate([[0], cut[(cut > 0) & (cut < n)], [n]]))
        sizes = np.diff(cum[bounds])
        if np.all((sizes <= buffer_rows) | (np.diff(bounds) == 1)):
            return bounds.astype(np.int64)
    return np.arange(n + 1, dtype=np.int64)


def window_order(rows: np.ndarray, seed: int, epoch: int, rank: int, window: int, shuffle: bool) -> np.ndarray:
    """Which segment of the window each stream position takes its next row from (int32, one entry
    per row of the window).

    Shuffled: the window's segments are interleaved in proportion to their sizes with a random
    phase each (row i of segment j sits at key (i + u_j) / n_j; positions follow the sorted keys).
    So any B consecutive positions take a contiguous run of about B·n_j/n rows from *every* segment
    of the window: a stratified sample of all its blocks, which mixes at least as well as permuting
    the window's rows (rows inside a block are already a random sample of their fragment), while
    each run can be read with one contiguous copy.  Unshuffled: segments one after another."""
    rows = np.asarray(rows, dtype=np.int64)
    if not shuffle:
        return np.repeat(np.arange(len(rows), dtype=np.int32), rows)
    return interleave(rows, _rng(seed, epoch, rank, window, 0xB0F).random(len(rows)))


def rotations(rows: np.ndarray, seed: int, epoch: int, rank: int, window: int, shuffle: bool) -> np.ndarray:
    """Per segment of a window, where its stream starts (int64 in [0, rows_j)): stream row i of
    segment j is its row (i + rot_j) mod rows_j.  Without it the run boundaries inside a block
    would sit at the same rows every epoch (the phases of ``window_order`` move them by less than
    a row), so the same rows would share a batch in every epoch; a uniform rotation per (seed,
    epoch) moves them anywhere.  Zeros when not shuffled."""
    rows = np.asarray(rows, dtype=np.int64)
    if not shuffle or not len(rows):
        return np.zeros(len(rows), dtype=np.int64)
    u = _rng(seed, epoch, rank, window, 0x7071).random(len(rows))
    return np.minimum((u * rows).astype(np.int64), np.maximum(rows - 1, 0))


def runs(order: np.ndarray, n_segments: int, p0: int, p1: int, done: np.ndarray | None = None
         ) -> tuple[np.ndarray, np.ndarray]:
    """Per segment, the run [start, start + count) of its rows that stream positions [p0, p1) of
    the window take (``done``: rows of each segment taken before p0, if already known)."""
    if done is None:
        done = np.bincount(order[:p0], minlength=n_segments)
    return done, np.bincount(order[p0:p1], minlength=n_segments)


def num_batches(stream_rows: int, batch_size: int, drop_last: bool) -> int:
    return stream_rows // batch_size if drop_last else -(-stream_rows // batch_size)


def predicted_quality(batch: int, run: float, blocks_per_window: float, n_fragments: int, rows: int,
                      contexts_per_fragment: float) -> float:
    """Expected distinct contexts per batch relative to a perfect permutation, for batches made of
    runs of ``run`` rows from each block of a stratified window (docs/shuffle.md).

    A fragment of F rows holding C contexts of L = F / C rows shows d(x) = C (1 - (1 - x/F)^L)
    distinct contexts among x random rows of it.  A window of m blocks over n fragments holds
    floor(m/n) or ceil(m/n) blocks of each (stratified), so a batch takes run * k rows from a
    fragment with k blocks; a perfect permutation takes about batch / n from each."""
    n = max(n_fragments, 1)
    frag_rows = rows / n
    c = max(float(contexts_per_fragment), 1.0)
    ctx_len = frag_rows / c

    def d(x: float) -> float:
        return c * (1.0 - max(0.0, 1.0 - x / frag_rows) ** ctx_len)

    a = blocks_per_window / n
    lo, frac = int(a), a - int(a)
    ours = (1 - frac) * d(run * lo) + frac * d(run * (lo + 1))
    return ours / d(batch / n)


def _mean_block_rows(fragment_rows: float, chunk_rows: int, block_rows: int) -> float:
    """Mean rows per block of a fragment of ``fragment_rows`` rows (blocks never cross a chunk)."""
    n_chunks = max(1, -(-int(round(fragment_rows)) // chunk_rows))
    per_chunk = fragment_rows / n_chunks
    return fragment_rows / (n_chunks * max(1, -(-int(round(per_chunk)) // max(block_rows, 1))))


SMALL_RANK_ROWS = 1 << 16  # a rank with at most this many rows per epoch is shuffled row by row


def min_blocks_per_window(batch: int) -> int:
    """Blocks every window mixes at least (a batch of B rows takes runs from ≈ all of them)."""
    return int(np.clip(batch // 8, 2, 32))


def auto_layout(batch: int, n_fragments: int, rows: int, contexts_per_fragment: float | None,
                chunk_rows: int, buffer_rows: int | None, block_rows: int | None,
                target: float = 0.99, rank_rows: int | None = None) -> tuple[int, int]:
    """(block_rows, buffer_rows) giving the longest runs (fewest, largest copies) whose predicted
    quality reaches ``target``; values the caller set are kept.  The window keeps ``buffer_rows``
    (default 131,072 rows, at least one batch) and blocks shrink until runs are short enough.
    ``contexts_per_fragment`` None: unknown, 256 assumed.

    The result depends only on these arguments (the snapshot and the stream's settings), never on
    where or how the rows are read: the order of a stream is the same on local disk, an object
    store, a compressed copy or a remote server (each read path picks its own I/O granularity
    within this layout).

    ``rank_rows`` (rows one rank streams per epoch, shuffled streams only) adds two floors that
    keep every (seed, epoch) a fresh order at any size: every window mixes at least
    ``min_blocks_per_window(batch)`` blocks, and a rank of at most ``SMALL_RANK_ROWS`` rows is cut
    into blocks of ⌈rows / batch⌉ rows or fewer, so each batch takes about one row from each block
    (a stratified random sample of the rank's rows; one fragment of a few thousand rows no longer
    streams as one block in storage order)."""
    if block_rows is not None and buffer_rows is not None:
        return min(block_rows, chunk_rows), max(buffer_rows, batch)
    cpf = contexts_per_fragment or 256.0
    window = max(buffer_rows or 1 << 17, batch)
    block = 0
    for run in (128, 64, 32, 16, 8, 4):
        block = min(block_rows or max(64, window * run // batch), chunk_rows)
        # blocks are cut at chunk ends, so a fragment's blocks average fewer rows than block_rows:
        # more, smaller blocks per window, and some fragments with an extra block in it
        eff = _mean_block_rows(rows / max(n_fragments, 1), chunk_rows, block)
        if predicted_quality(batch, max(1.0, batch * eff / window), window / eff, n_fragments, rows,
                             cpf) >= target:
            break
    if rank_rows is not None and block_rows is None:
        m = min_blocks_per_window(batch)
        span = max(1, min(window, rank_rows))
        block = min(block, max(1, -(-span // m)))
        if rank_rows <= SMALL_RANK_ROWS:
            block = min(block, max(1, -(-span // max(batch, 1))))
    return block, window
