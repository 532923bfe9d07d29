"""Row sources: contiguous ranges of a (possibly joined) row space read as float32 blocks.

A row source answers ``read(hook, r0, r1) -> float32 [r1 - r0, d]`` for rows ``r0 .. r1-1`` of its
row space.  :class:`StoreRows` is one store's snapshot (rows in commit order, read chunk by chunk
with ``FragmentReader.read_rows_into``, never row by row); :class:`MappedRows` is a row space whose
row r is row ``index[r]`` of an underlying source (a join's side).  Both are picklable, so Ray tasks
receive them with the scan context."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from actlake.query.values import to_float32, widen_into
from actlake.schemas.errors import QueryError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store.dtypes import STORAGE
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS


@dataclass
class StoreRows:
    """Rows 0..num_rows-1 of one snapshot.

    Attributes:
        store: the dataset root.  fragments: committed records in order.  offsets: int ``[F + 1]``
        first global row of each fragment.  hooks: name → HookInfo.  chunk_rows: rows per chunk.
    """

    store: StoreFS
    fragments: Sequence[FragmentRecord]
    offsets: list[int]
    hooks: dict[str, HookInfo]
    chunk_rows: int
    _readers: dict[int, FragmentReader] = field(default_factory=dict, repr=False, compare=False)

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def width(self, hook: str) -> int:
        return int(np.prod(self.hooks[hook].shape))

    def _reader(self, f: int) -> FragmentReader:
        r = self._readers.get(f)
        if r is None:
            r = self._readers[f] = FragmentReader(self.store, self.fragments[f], self.hooks, self.chunk_rows)
        return r

    def read(self, hook: str, r0: int, r1: int, bufs: dict | None = None, raw: bool = False) -> np.ndarray:
        """Rows ``[r0, r1)`` of ``hook`` as float32 ``[n, d]`` (bf16/fp16 widened).

        Args: bufs: optional dict of reusable storage buffers (hook → array), filled on first use;
            the result may be a view of such a buffer (valid until the next read with it).
            raw: return the rows in their storage dtype instead (uint16 bits of bfloat16, float16
            or float32 ``[n, d]``; with ``bufs``, possibly a read-only view of the mapped chunk), for
            a consumer that widens them itself (``query.values.widen_into``).
        Raises: StoreDamagedError / ActlakeError from the reader (missing or truncated chunks)."""
        info = self.hooks[hook]
        d = self.width(hook)
        n = r1 - r0
        dt = STORAGE[info.dtype]
        mapped = self._mapped(hook, r0, r1) if bufs is not None else None
        if mapped is not None:  # the range is one chunk's rows on a local disk: no copy
            rows = mapped.reshape(n, d)
            return rows if raw or info.dtype == "float32" else _widen_into(rows, info.dtype, bufs, hook)  # type: ignore[arg-type]
        buf = None if bufs is None else bufs.get(hook)
        if buf is None or buf.size < n * d:
            buf = np.empty(n * d, dt)
            if bufs is not None:
                bufs[hook] = buf
        out = buf[: n * d].reshape(n, *info.shape)
        offs = np.asarray(self.offsets)
        f = int(np.searchsorted(offs, r0, side="right") - 1)
        pos = r0
        while pos < r1:
            lo = pos - int(offs[f])
            hi = min(r1, int(offs[f + 1])) - int(offs[f])
            reader = self._reader(f)
            for c in range(lo // self.chunk_rows, -(-hi // self.chunk_rows)):
                c0, c1 = max(lo, c * self.chunk_rows), min(hi, (c + 1) * self.chunk_rows)
                o = int(offs[f]) + c0 - r0
                reader.read_rows_into(hook, c, c0 - c * self.chunk_rows, c1 - c * self.chunk_rows,
                                      out[o:o + c1 - c0])
            pos = int(offs[f]) + hi
            f += 1
        if raw:
            return out.reshape(n, d)
        if bufs is None or info.dtype == "float32":
            return to_float32(out, info.dtype).reshape(n, d)
        return _widen_into(out.reshape(n, d), info.dtype, bufs, hook)

    def prefetch(self, hook: str, r0: int, r1: int) -> None:
        """Start reading the chunks of rows ``[r0, r1)`` of ``hook`` in the background (local
        stores; ``FragmentReader.prefetch``).  Rows past the end are ignored."""
        r1 = min(r1, self.num_rows)
        if r0 >= r1:
            return
        offs = np.asarray(self.offsets)
        f = int(np.searchsorted(offs, r0, side="right") - 1)
        while f < len(self.fragments) and int(offs[f]) < r1:
            lo, hi = max(r0, int(offs[f])) - int(offs[f]), min(r1, int(offs[f + 1])) - int(offs[f])
            for c in range(lo // self.chunk_rows, -(-hi // self.chunk_rows)):
                self._reader(f).prefetch(hook, c)
            f += 1

    def _mapped(self, hook: str, r0: int, r1: int) -> np.ndarray | None:
        """Rows ``[r0, r1)`` as a read-only view of their mapped chunk file when they lie in one chunk
        of a local, uncompressed fragment (``FragmentReader.map_rows``: checked in place), else None."""
        offs = self.offsets
        f = int(np.searchsorted(np.asarray(offs), r0, side="right") - 1)
        lo, hi = r0 - int(offs[f]), r1 - int(offs[f])
        c = lo // self.chunk_rows
        if hi > int(offs[f + 1]) - int(offs[f]) or (hi - 1) // self.chunk_rows != c:
            return None
        rows = self._reader(f).map_rows(hook, c)
        if rows is None:
            return None
        return rows[lo - c * self.chunk_rows:hi - c * self.chunk_rows]


def _widen_into(raw: np.ndarray, dtype: str, bufs: dict, hook: str) -> np.ndarray:
    """``to_float32(raw, dtype)`` written into a float32 buffer kept in ``bufs`` (no allocation or
    page faults per block; same bits).  Args: raw ``[n, d]`` uint16 (bf16 bits) or float16."""
    key = f"{hook}\0f32"
    buf = bufs.get(key)
    if buf is None or buf.size < raw.size:
        buf = bufs[key] = np.empty(raw.size, np.float32)
    return widen_into(raw, dtype, buf[: raw.size].reshape(raw.shape))


@dataclass
class MappedRows:
    """Row r of this space is row ``index[r]`` of ``base`` (a join's side); hook ``name`` here is
    hook ``names.get(name, name)`` of ``base``.

    Ranges whose base rows ascend densely are read as the span they cover (one sequential read,
    then a gather); other ranges are read in sorted order, one span per run of nearby rows."""

    base: StoreRows
    index: np.ndarray  # int64 [num_rows]
    names: dict[str, str] = field(default_factory=dict)  # name here -> name in base

    @property
    def num_rows(self) -> int:
        return len(self.index)

    @property
    def hooks(self) -> dict[str, HookInfo]:
        inv = {v: k for k, v in self.names.items()}
        return {inv.get(k, k): v for k, v in self.base.hooks.items()}

    def width(self, hook: str) -> int:
        return self.base.width(self.names.get(hook, hook))

    def read(self, hook: str, r0: int, r1: int, bufs: dict | None = None) -> np.ndarray:
        hook = self.names.get(hook, hook)
        ids = self.index[r0:r1]
        if not len(ids):
            return np.empty((0, self.base.width(hook)), np.float32)
        if np.all(ids[1:] > ids[:-1]) and ids[-1] - ids[0] < 2 * len(ids) + self.base.chunk_rows:
            span = self.base.read(hook, int(ids[0]), int(ids[-1]) + 1, bufs)
            return span[ids - ids[0]]
        order = np.argsort(ids, kind="stable")
        sids = ids[order]
        out = np.empty((len(ids), self.base.width(hook)), np.float32)
        cuts = np.flatnonzero(np.diff(sids) > self.base.chunk_rows) + 1
        for part in np.split(np.arange(len(sids)), cuts):
            a, b = int(sids[part[0]]), int(sids[part[-1]]) + 1
            out[order[part]] = self.base.read(hook, a, b, bufs)[sids[part] - a]
        return out


def check_hook_in(source, hook: str, arg: str = "hook") -> HookInfo:
    """The HookInfo of ``hook`` or a QueryError naming ``arg`` and the hooks there are."""
    if hook not in source.hooks:
        raise QueryError(f"{arg}: {hook!r} is not in this dataset; it has {', '.join(source.hooks)}")
    return source.hooks[hook]
