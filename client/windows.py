"""The two ways a window of blocks reaches batch memory.

``DirectWindow`` (local disk, uncompressed hooks, no filter): nothing is staged.  Each batch reads
its run of every block with one ``preadv`` per run straight from the page cache into the batch
(one copy, like a sequential read); the window's byte ranges are announced to the kernel
with ``posix_fadvise(WILLNEED)`` so a cold disk reads them ahead.

``StagedWindow`` (object stores, compressed chunks, row filters): the window's blocks are read
whole into a reused staging buffer by I/O threads, then each batch copies its runs (or its kept
rows) out of it."""
from __future__ import annotations

import os
import threading
from concurrent.futures import CancelledError, Future, ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np

from actlake.client import shuffle as sh
from actlake.client.buffers import WindowBuffers, as_records
from actlake.client.chunk_checks import RangeChecks
from actlake.schemas.errors import StoreDamagedError

if TYPE_CHECKING:
    from actlake.client.access import SnapshotAccess

try:
    import resource
except ImportError:  # not POSIX
    resource = None


class Window:
    """Segments [s0, s1) of a rank's plan, their stream order, and the batches that read them."""

    def __init__(self, access: SnapshotAccess, hooks: list[str], segments: sh.Segments, s0: int, s1: int,
                 order: Future, rot: np.ndarray | None = None, ranges: RangeChecks | None = None):
        self.access, self.hooks = access, hooks
        self.ranges = ranges  # checksums of the byte ranges read (verify_reads; client/chunk_checks.py)
        self.num_segments = s1 - s0
        self.order = order  # the window's stream order (shuffle.window_order)
        seg = segments
        self.frag, self.chunk = seg.frag[s0:s1], seg.chunk[s0:s1]
        self.lo, self.hi, self.k0 = seg.lo[s0:s1], seg.hi[s0:s1], seg.k0[s0:s1]
        self.used = seg.rows[s0:s1]  # rows each segment gives the stream
        # stream row i of segment j is its used row (i + rot[j]) % used[j] (shuffle.rotations)
        self.rot = np.zeros(self.num_segments, dtype=np.int64) if rot is None else np.asarray(rot, dtype=np.int64)
        self.n = int(self.used.sum())
        # dataset row id of stored row 0 of each segment's chunk
        self.base_rows = np.asarray(access.snapshot.offsets)[self.frag] + self.chunk * access.chunk_rows
        self.readers: list[threading.Event] = []  # set when each batch reading this window is built

    def wait(self) -> None:
        """Block until the window can be read (staged windows: until loaded)."""

    def copy(self, hook: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        """For each (js, i0, i1, dst) of ``parts`` (consecutive batches, in order): rows
        [i0[k], i1[k]) of segment js[k] for every k, one after another into ``dst``."""
        raise NotImplementedError

    def row_ids(self, js: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        """Dataset row ids of what ``copy`` writes."""
        raise NotImplementedError

    def close(self) -> None:
        """Release what the window holds (after every batch reading it is done)."""


class FileHandles:
    """Open chunk files shared by the windows of a stream, closed when the last window using one
    closes (consecutive windows often read other blocks of the same chunks)."""

    def __init__(self):
        self._open: dict[str, list[int]] = {}  # path -> [fd, users]
        self._lock = threading.Lock()
        self.checks: dict[tuple[int, str, int], Future] = {}  # whole-chunk checksum checks in flight

    def acquire(self, path: str) -> int:
        with self._lock:
            entry = self._open.get(path)
            if entry is None:
                try:
                    entry = self._open[path] = [os.open(path, os.O_RDONLY), 0]
                except FileNotFoundError:
                    raise StoreDamagedError(path, "missing chunk") from None
            entry[1] += 1
            return entry[0]

    def release(self, path: str) -> None:
        with self._lock:
            entry = self._open[path]
            entry[1] -= 1
            if entry[1] == 0:
                os.close(entry[0])
                del self._open[path]


def raise_open_file_limit() -> int:
    """Raise this process's soft limit on open files to the hard limit (at most 1 << 16): direct
    windows keep one descriptor per chunk file they read.  Returns the limit now in force."""
    if resource is None:  # not POSIX
        return 512
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    want = min(hard if hard != resource.RLIM_INFINITY else 1 << 16, 1 << 16)
    if soft != resource.RLIM_INFINITY and soft < want:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (want, hard))
            soft = want
        except (ValueError, OSError):
            pass
    return soft if soft != resource.RLIM_INFINITY else 1 << 16


class DirectWindow(Window):
    # verify_reads on the direct path: each chunk is mapped and checked whole once per dataset
    # (large CRCs that release the GIL, on the I/O threads) rather than from the CRC-32C of every
    # run (``range_checks``: one small CRC per preadv under the GIL in the assembly threads), which
    # measured slower on this machine (docs/performance.md, bench/loader_verify.py)
    range_checks = False

    def __init__(self, *a, files: FileHandles, io: ThreadPoolExecutor, lead_rows: int = 0, **kw):
        super().__init__(*a, **kw)
        self._files = files
        self._row_bytes = {h: self.access.manifest.hooks[h].row_bytes for h in self.hooks}
        self._paths = {(h, j): self.access.reader(int(self.frag[j])).chunk_path(h, int(self.chunk[j]))
                       for h in self.hooks for j in range(self.num_segments)}
        self._fds: dict[tuple[str, int], int] = {}
        try:
            for key, path in self._paths.items():
                self._fds[key] = files.acquire(path)
        except BaseException:
            self.close()
            raise
        self._fd_of = {h: [self._fds[h, j] for j in range(self.num_segments)] for h in self.hooks}
        self.advised = io.submit(self._advise, lead_rows)
        # verify_reads: chunks are checked whole once per dataset, and batches of this window wait
        # for those checks; with ``range_checks`` the CRC-32C of every run is computed as it is
        # read and the runs of a chunk combined instead (client/chunk_checks.py)
        todo = {(int(self.frag[j]), h, int(self.chunk[j])): self._fds[h, j]
                for h in self.hooks for j in range(self.num_segments)} if self.access.verify_reads else {}
        ranges = self.ranges if self.range_checks else None
        self._track = {h: [ranges is not None and ranges.wanted((int(self.frag[j]), h, int(self.chunk[j])))
                           for j in range(self.num_segments)] for h in self.hooks}
        if ranges is not None:
            todo = {k: fd for k, fd in todo.items() if not ranges.has_crc(*k)}
        self.checked = []
        for key, fd in todo.items():
            if not self.access.is_verified(key):
                fut = files.checks.get(key)
                if fut is None:
                    fut = files.checks[key] = io.submit(self.access.verify_chunk, *key, fd)
                self.checked.append(fut)

    def wait(self) -> None:
        for f in self.checked:
            f.result()

    def _advise(self, lead_rows: int) -> None:
        """Ask the kernel to read the window's byte ranges ahead (a no-op when they are cached):
        first the leading ``lead_rows`` of every block (what the first batches read), then the
        rest, so a cold start does not wait behind the whole window's read-ahead."""
        if not hasattr(os, "posix_fadvise"):
            return
        items = list(self._fds.items())
        spans = [(0, lead_rows), (lead_rows, None)] if lead_rows else [(0, None)]
        for a, b in spans:
            for (h, j), fd in items:
                rb, lo, hi = self._row_bytes[h], int(self.lo[j]), int(self.hi[j])
                start, end = lo + min(a, hi - lo), hi if b is None else lo + min(b, hi - lo)
                if end <= start:
                    continue
                try:
                    os.posix_fadvise(fd, start * rb, (end - start) * rb, os.POSIX_FADV_WILLNEED)
                except OSError:  # not supported by this file system
                    return

    def copy(self, hook: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        # A segment's runs in consecutive batches are adjacent in its file (the window order takes
        # each segment's rows in sequence), so each segment is one preadv scattering into them all
        # (two where the segment's rotation wraps around its end).
        rb = self._row_bytes[hook]
        reads: dict[int, list] = {}  # segment -> [first row, [destination views]]
        for js, i0, i1, dst in parts:
            view = dst.data.cast("B")  # memoryview(dst); numpy's stubs declare __buffer__ only for Python >= 3.12
            ends = np.cumsum(i1 - i0) * rb
            starts = ends - (i1 - i0) * rb
            for j, first, a, b in zip(js.tolist(), i0.tolist(), starts.tolist(), ends.tolist(), strict=True):
                entry = reads.get(j)
                if entry is None:
                    reads[j] = [first, [view[a:b]]]
                else:
                    entry[1].append(view[a:b])
        fds, lo, rot, used, track = self._fd_of[hook], self.lo, self.rot, self.used, self._track[hook]
        for j, (first, views) in reads.items():
            start = (first + int(rot[j])) % int(used[j])
            want = sum(v.nbytes for v in views)
            tail = (int(used[j]) - start) * rb  # bytes before the rotation wraps to the segment start
            if want <= tail:
                pieces = [(start, views, want)]
            else:
                head, rest = _split_views(views, tail)
                pieces = [(start, head, tail), (0, rest, want - tail)]
            for row, vs, n in pieces:
                if os.preadv(fds[j], vs, (int(lo[j]) + row) * rb) != n:
                    raise StoreDamagedError(self._paths[hook, j], "chunk is truncated")
                if track[j]:  # checksummed while the bytes are still in the CPU cache
                    self.ranges.add((int(self.frag[j]), hook, int(self.chunk[j])),  # type: ignore[union-attr]
                                    (int(lo[j]) + row) * rb, vs)

    def row_ids(self, js: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        return self.base_rows[np.repeat(js, i1 - i0)] + self.lo[np.repeat(js, i1 - i0)] + _rotated(self, js, i0, i1)

    def close(self) -> None:
        for f in [getattr(self, "advised", None), *getattr(self, "checked", [])]:
            if f is None:
                continue
            try:  # never close a descriptor fadvise or a check may still use
                f.result()
            except CancelledError:  # (never ran)
                pass
            except Exception:  # a failed check was raised to the batch that waited for it
                pass
        fds, self._fds = self._fds, {}
        for key in fds:
            self._files.release(self._paths[key])


class StagedWindow(Window):
    """Loaded by ``load`` (in a background thread) into ``buf``; ``after``: the batches of the window
    that used ``buf`` before, which must be done before it is overwritten."""

    def __init__(self, *a, buf: WindowBuffers, filt=None, **kw):
        super().__init__(*a, **kw)
        self.buf, self.filt = buf, filt
        raw = self.hi - self.lo
        self.pos = np.concatenate([[0], np.cumsum(raw)]).astype(np.int64)
        self.kept: list[np.ndarray | None] = [None] * self.num_segments
        self.ready: Future | None = None

    def load(self, io: ThreadPoolExecutor, after: list[threading.Event]) -> None:
        for e in after:
            e.wait()
        b = self.buf
        chunk_rows = self.access.chunk_rows
        base = self.base_rows

        access = self.access
        infos = {h: access.manifest.hooks[h] for h in self.hooks}
        # local uncompressed rows are read with pread on descriptors kept open for a task's segments
        # (one open per chunk file, not per segment; see ``some``)
        preads = self.access.store.is_local and hasattr(os, "preadv")

        def one(j: int, fds: dict[str, int]) -> None:
            f, c, lo, hi, a = int(self.frag[j]), int(self.chunk[j]), int(self.lo[j]), int(self.hi[j]), int(self.pos[j])
            reader = access.reader(f)
            for h in self.hooks:
                info = infos[h]
                part = (lo, hi) != (0, reader.chunk_rows_of(c))
                ranged = reader.verify and info.codec == "none" and part
                track = ranged and self.ranges is not None and self.ranges.wanted((f, h, c))
                if ranged and not track and (self.ranges is None or not self.ranges.has_crc(f, h, c)):
                    access.verify_chunk(f, h, c)  # no CRC-32C recorded: check the chunk whole, once
                dst = b.arrays[h][a:a + hi - lo]
                if preads and info.codec == "none" and (part or not reader.verify):
                    _pread_rows(fds, reader.chunk_path(h, c), lo * info.row_bytes, dst)
                else:
                    reader.read_rows_into(h, c, lo, hi, dst)
                if track and self.ranges is not None:  # its CRC-32C, combined with the chunk's other ranges later
                    self.ranges.add((f, h, c), lo * info.row_bytes, [dst])
                elif reader.verify and not part:  # read whole, hence checked whole
                    access.mark_verified((f, h, c))
            b.row_ids[a:a + hi - lo] = np.arange(lo, hi) + base[j]
            if self.filt is not None:
                start = c * chunk_rows
                hits = np.nonzero(access.filter_mask(f, self.filt)[start + lo:start + hi])[0]
                k0 = int(self.k0[j])
                self.kept[j] = hits[k0:]  # kept rows of the segment, in stored order

        def some(j0: int, j1: int) -> None:
            fds: dict[str, int] = {}
            try:
                for j in range(j0, j1):
                    one(j, fds)
            finally:
                for fd in fds.values():
                    os.close(fd)

        # a few tasks per I/O thread, not one per segment: small blocks (a rank of a few thousand
        # rows is cut into blocks of ~8 rows) made thousands of tiny tasks per window, and the
        # executor's per-task cost dominated the stream's CPU (issue 10: 4 rank clients)
        n = self.num_segments
        cuts = np.linspace(0, n, min(n, 4 * max(1, getattr(io, "_max_workers", 4))) + 1).astype(np.int64).tolist()
        for _ in io.map(some, cuts[:-1], cuts[1:]):
            pass

    def wait(self) -> None:
        assert self.ready is not None
        self.ready.result()

    def _rows(self, js: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        """Positions in the staging buffer of what ``copy`` writes."""
        idx = _rotated(self, js, i0, i1)  # used row of its segment, per element
        seg = np.repeat(js, i1 - i0)
        if self.filt is None:
            return self.pos[seg] + idx
        out = np.empty(len(idx), dtype=np.int64)
        for j in np.unique(js).tolist():
            sel = seg == j
            out[sel] = self.pos[j] + self.kept[j][idx[sel]]
        return out

    def copy(self, hook: str, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]]) -> None:
        # mode="clip": with the default mode="raise" numpy fills a temporary copy of ``out`` and
        # copies it back (a second memcpy and a batch-sized malloc per call, ~3x the CPU; the
        # mallocs stayed resident in per-thread arenas of a server's streams, issue 10); the
        # positions are in range by construction
        for js, i0, i1, dst in parts:
            np.take(self.buf.records[hook], self._rows(js, i0, i1), out=as_records(dst), mode="clip")

    def row_ids(self, js: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
        return self.buf.row_ids[self._rows(js, i0, i1)]


def _rotated(win: Window, js: np.ndarray, i0: np.ndarray, i1: np.ndarray) -> np.ndarray:
    """For runs [i0[k], i1[k]) of stream rows of segments js[k]: each element's used row of its
    segment after the window's rotation ((i + rot[j]) mod used[j])."""
    lengths = i1 - i0
    seg = np.repeat(js, lengths)
    return (_runs_index(i0, lengths) + win.rot[seg]) % np.maximum(win.used[seg], 1)


def _pread_rows(fds: dict[str, int], path: str, offset: int, dst: np.ndarray) -> None:
    """Fill ``dst`` with the bytes of local file ``path`` from ``offset``, through ``fds`` (path ->
    descriptor, opened on first use; the caller closes them).

    Raises:
        StoreDamagedError: the file is missing or too short."""
    fd = fds.get(path)
    if fd is None:
        try:
            fd = fds[path] = os.open(path, os.O_RDONLY)
        except FileNotFoundError:
            raise StoreDamagedError(path, "missing") from None
    if os.preadv(fd, [dst.data.cast("B")], offset) != dst.nbytes:
        raise StoreDamagedError(path, "truncated")


def _split_views(views: list[memoryview], nbytes: int) -> tuple[list[memoryview], list[memoryview]]:
    """Views covering the first ``nbytes`` of the concatenation, and the rest (one view may split)."""
    head: list[memoryview] = []
    for i, v in enumerate(views):
        if nbytes >= v.nbytes:
            head.append(v)
            nbytes -= v.nbytes
            continue
        if nbytes:
            head.append(v[:nbytes])
        return head, [v[nbytes:], *views[i + 1:]]
    return head, []


def _runs_index(starts: np.ndarray, lengths: np.ndarray) -> np.ndarray:
    """Concatenated ranges [starts[k], starts[k] + lengths[k])."""
    total = int(lengths.sum())
    first = np.cumsum(lengths) - lengths
    return np.repeat(starts - first, lengths) + np.arange(total, dtype=np.int64)
