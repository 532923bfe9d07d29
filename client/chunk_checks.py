"""Checksums of chunks read in byte ranges, computed over the bytes the loader reads anyway.

A batch stream reads each uncompressed chunk as block ranges (staged path: one ranged GET or
read per block; blocks are usually smaller than chunks) or as many runs (direct path: one
``preadv`` per segment and batch group, when ``DirectWindow.range_checks`` is set).  Instead of
reading every chunk a second time whole (on an object store: a second GET of every chunk), each
read's CRC-32C is computed right after it lands, while the bytes are still in the CPU cache; reads that continue
one another are merged by extending the CRC, the rest by ``crc32c_combine``.  When the stream has
read the last range of a chunk it will read, the ranges it never read (another rank's blocks, a
resume, ``drop_last``) are read and checksummed, the parts combined, and the result compared with
the committed CRC-32C.  A damaged chunk therefore raises ``StoreDamagedError`` at the latest when
the window holding its last block is retired (before the stream ends), not before every batch
that holds its bytes.  Chunks of stores written before CRC-32C was recorded (sha256 only) are
checked whole, as before.

The combination is zlib's ``crc32_combine`` (Mark Adler: multiplication by x^(8·len) modulo the
polynomial), here with the reflected Castagnoli polynomial 0x82F63B78."""
from __future__ import annotations

import threading
from functools import lru_cache
from typing import TYPE_CHECKING

import numpy as np

from actlake.schemas.errors import StoreDamagedError
from actlake.store import layout
from actlake.store.fragment import crc32c

if TYPE_CHECKING:
    from actlake.client.access import SnapshotAccess

_POLY = 0x82F63B78  # CRC-32C, reflected


def _multmodp(a: int, b: int) -> int:
    """a(x)·b(x) modulo the CRC polynomial (reflected bit order, as in zlib)."""
    m, p = 1 << 31, 0
    while True:
        if a & m:
            p ^= b
            if not a & (m - 1):
                return p
        m >>= 1
        b = (b >> 1) ^ _POLY if b & 1 else b >> 1


def _x2n_table() -> list[int]:
    t, p = [], 1 << 30  # x^1
    for _ in range(32):
        t.append(p)
        p = _multmodp(p, p)
    return t


_X2N = _x2n_table()  # x^(2^k) mod p


@lru_cache(maxsize=4096)
def _x8n(nbytes: int) -> int:
    """x^(8·nbytes) mod p."""
    p, k, n = 1 << 31, 3, nbytes
    while n:
        if n & 1:
            p = _multmodp(_X2N[k & 31], p)
        n >>= 1
        k += 1
    return p


def crc32c_combine(crc1: int, crc2: int, len2: int) -> int:
    """CRC-32C of A‖B from crc1 = CRC-32C(A), crc2 = CRC-32C(B) and len2 = len(B) in bytes."""
    return _multmodp(_x8n(len2), crc1) ^ crc2 if len2 else crc1


def crc_of(views, crc: int = 0) -> int:
    """CRC-32C of the concatenation of byte buffers (memoryviews or numpy arrays), continuing
    ``crc`` (the CRC-32C of what precedes them)."""
    for v in views:
        crc = crc32c(np.frombuffer(v, dtype=np.uint8), crc)
    return crc


ChunkKey = tuple[int, str, int]  # (fragment, hook, chunk)


class RangeChecks:
    """Per chunk, the CRC-32C of the byte ranges a stream has read; thread-safe.

    ``add`` is called by the threads that read (assembly or I/O threads), ``finish`` by the
    consumer when a chunk will not be read again by this stream (raises ``StoreDamagedError``).
    ``wanted(key)`` says whether a chunk still needs checking (verify on, CRC-32C recorded, not
    checked yet by this dataset)."""

    def __init__(self, access: SnapshotAccess):
        self.access = access
        self._parts: dict[ChunkKey, dict[int, tuple[int, int]]] = {}  # key -> {start: (end, crc)}
        self._lock = threading.Lock()

    def _rel(self, key: ChunkKey) -> tuple[str, str]:
        """(object key in the store, its name in the fragment's checksum file)."""
        frag, hook, chunk = key
        reader = self.access.reader(frag)
        info = reader.hooks[hook]
        name = layout.chunk_key(info.array, chunk, 1 + len(info.shape))
        return f"{reader.record.path}/{name}", name

    def has_crc(self, frag: int, hook: str, chunk: int) -> bool:
        """Whether the fragment's checksum file records a CRC-32C for this chunk."""
        sums = self.access.reader(frag).checksums()
        return self._rel((frag, hook, chunk))[1] in sums.get("crc32c", {})

    def wanted(self, key: ChunkKey) -> bool:
        return self.access.verify_reads and not self.access.is_verified(key) and self.has_crc(*key)

    def add(self, key: ChunkKey, start: int, views) -> None:
        """Record the bytes at [start, start + total length) of chunk ``key``, held by ``views``."""
        n = sum(memoryview(v).nbytes for v in views)
        if not n:
            return
        with self._lock:
            parts = self._parts.setdefault(key, {})
            left = next((s for s, (e, _) in parts.items() if e == start), None)  # a read this one continues
            prev = parts.pop(left) if left is not None else None
        crc = crc_of(views, 0 if prev is None else prev[1])  # CRC(A‖B) = extend(CRC(A), B)
        begin = start if left is None else left
        with self._lock:
            self._parts.setdefault(key, {})[begin] = (start + n, crc)  # type: ignore[index]

    def pending(self) -> list[ChunkKey]:
        with self._lock:
            return list(self._parts)

    def finish(self, key: ChunkKey) -> None:
        """Check chunk ``key`` whole: its recorded ranges, plus the ranges this stream did not read."""
        with self._lock:
            parts = sorted((s, e, c) for s, (e, c) in self._parts.pop(key, {}).items())
        if not parts or self.access.is_verified(key) or not self.access.verify_reads:
            return  # nothing read (or checked meanwhile by another stream of the dataset)
        frag, hook, chunk = key
        reader = self.access.reader(frag)
        obj, name = self._rel(key)
        sums = reader.checksums()
        size, want = int(sums["files"][name][0]), sums["crc32c"][name]
        crc, at = 0, 0
        for s, e, c in [*parts, (size, size, 0)]:
            if s < at or e > size:  # overlapping or out-of-range reads: fall back to a whole check
                self.access.verify_chunk(frag, hook, chunk)
                return
            if s > at:  # a gap this stream never read
                try:
                    gap = self.access.store.read_range(obj, at, s)
                except FileNotFoundError:
                    raise StoreDamagedError(self.access.store.path(obj), "missing") from None
                if len(gap) != s - at:
                    raise StoreDamagedError(self.access.store.path(obj), f"truncated (committed {size} bytes)")
                crc = crc32c_combine(crc, crc32c(gap), s - at)
            crc, at = crc32c_combine(crc, c, e - s), e
        if crc != want:
            raise StoreDamagedError(self.access.store.path(obj), "checksum mismatch (the bytes changed after commit)")
        self.access.mark_verified(key)
