"""``SnapshotAccess``: reading one committed snapshot of a store, below the user-facing API.

``ActivationDataset`` (client/dataset.py) is the public facade; the batch pipeline (client/batches.py,
client/windows.py, client/chunk_checks.py), the query engine and joins read through the ``access``
it holds: fragment readers, provenance tables, filter masks, kept rows per block, chunk
verification state and the warm buffers reused between streams."""
from __future__ import annotations

import dataclasses
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING

import numpy as np
import pyarrow as pa

from actlake.client import shuffle as sh
from actlake.client.buffers import BufferCache
from actlake.schemas.errors import HookError, StoreDamagedError
from actlake.schemas.fragment import DerivedRecord
from actlake.schemas.manifest import HookInfo, Manifest
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.derived import derived_hooks
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest

if TYPE_CHECKING:
    from actlake.client.filters import RowFilter

PROVENANCE_CACHE = 8  # fragments whose provenance tables are kept in memory
MASK_CACHE = 256  # fragments whose filter masks are kept (1 byte per row)

ChunkKey = tuple[int, str, int]  # (fragment, hook, chunk)


class SnapshotAccess:
    """The committed snapshot of ``store`` as of construction, and its read caches.

    Holds the manifest (with the snapshot's derived hooks), the snapshot (fragments, row offsets),
    one ``FragmentReader`` per fragment, an LRU of provenance tables (``PROVENANCE_CACHE``
    fragments), an LRU of filter masks (``MASK_CACHE`` (fragment, filter) pairs), kept rows per
    block per (filter, block size), the documents table, the set of chunks checked whole against
    their checksum, and ``buffers`` (staging windows and output pools that streams borrow).

    Lock policy (one rule for every cache):
        * every mutation of a cache (insert, LRU reorder, eviction) and every lookup in an LRU
          (it reorders) holds ``self._lock``;
        * a lookup in an insert-only cache (readers, kept counts, verified chunks, documents) is one
          dict/set/attribute read and takes no lock (atomic in CPython; free-threaded builds lock
          dicts and sets per object);
        * nothing else runs under the lock: no I/O, no decoding, no checksum, no other lock.  A miss
          is computed outside it and inserted first-writer-wins, so two threads that miss the same key
          together may both compute it (equal results: the snapshot is immutable) and one is kept;
          ``reader`` hands every caller the kept one;
        * ``buffers`` is a ``BufferCache`` with its own lock under the same rule (never taken while
          ``self._lock`` is held).

    Every method may be called from loader threads (I/O, window loader and assembly threads of a
    batch stream, query threads) and from the consumer at once, except ``add_derived``, which the
    caller runs while no stream or query of this dataset is running.

    Raises (construction):
        NotADatasetError: the location holds no actlake dataset (from ``read_manifest``).
        StoreDamagedError: an unreadable manifest or commit, or a complete job whose commit log holds
            fewer (or more) fragments or rows than the manifest records."""

    def __init__(self, store: StoreFS, verify_reads: bool = True):
        self.store = store
        self.verify_reads = verify_reads
        self.manifest: Manifest = read_manifest(store)
        self.snapshot: Snapshot = CommitLog(store).snapshot()
        self._check_complete()
        self.manifest.hooks.update(derived_hooks(self.snapshot))  # format 2: derived hooks (store/derived.py)
        self.chunk_rows: int = self.manifest.chunk_rows
        self.hook_infos: dict[str, HookInfo] = self.manifest.hooks  # the same dict: derived hooks show up
        self._lock = threading.Lock()
        self._readers: dict[int, FragmentReader] = {}
        self._prov: OrderedDict[int, pa.Table] = OrderedDict()
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._kept: dict[tuple, np.ndarray] = {}
        self._verified: set[ChunkKey] = set()  # (fragment, hook, chunk) checked whole
        self._documents: pa.Table | None = None
        self.buffers = BufferCache(cap=8)  # warm window buffers / output pools reused across streams

    def _check_complete(self) -> None:
        m, snap = self.manifest, self.snapshot
        if m.status != "complete":
            return
        problems = []
        if m.num_rows is not None and m.num_rows != snap.num_rows:
            problems.append(f"{m.num_rows:,} rows")
        n_frag = getattr(m, "num_fragments", None)
        if n_frag is not None and n_frag != len(snap.fragments):
            problems.append(f"{n_frag:,} fragments")
        if problems:
            raise StoreDamagedError(self.store.path("_commits"),
                                    f"the job is marked complete with {' and '.join(problems)}, but the commit log "
                                    f"holds {len(snap.fragments):,} fragments and {snap.num_rows:,} rows "
                                    f"(commits missing: an incomplete copy?)")

    # ---- hooks and fragments --------------------------------------------------------------------
    def check_hooks(self, hooks: list[str] | str | None) -> list[str]:
        """Hook names as a list (``None``: every hook).  Raises HookError naming unknown hooks."""
        if hooks is None:
            return list(self.hook_infos)
        if isinstance(hooks, str):
            hooks = [hooks]
        bad = [h for h in hooks if h not in self.hook_infos]
        if bad:
            raise HookError(f"unknown hook(s) {bad}; this dataset has {list(self.hook_infos)}")
        return list(hooks)

    def reader(self, frag: int) -> FragmentReader:
        """The one ``FragmentReader`` of fragment ``frag`` (index in the snapshot)."""
        r = self._readers.get(frag)
        if r is None:
            rec = self.snapshot.fragments[frag]
            derived = {d.info.array: d.checksums[rec.unit_id] for d in self.snapshot.derived
                       if rec.unit_id in d.checksums}
            new = FragmentReader(self.store, rec, self.hook_infos, self.chunk_rows, verify=self.verify_reads,
                                 derived=derived)
            with self._lock:
                r = self._readers.setdefault(frag, new)
        return r

    def contexts_per_fragment(self) -> float | None:
        """Mean contexts (text) or images (vision) per fragment, from the commit log: how long a
        run of one block may be before batches lose distinct contexts (shuffle.auto_layout)."""
        items = [f.num_items for f in self.snapshot.fragments]
        return float(np.mean(items)) if items and min(items) > 1 else None

    def add_derived(self, name: str, rec: DerivedRecord) -> None:
        """Make derived hook ``name``, just committed as log entry ``rec`` (``client/analysis.project``),
        visible to this snapshot; its fragments are all covered.  Not while a stream or query of
        this snapshot runs (the only method with that restriction)."""
        self.manifest.hooks[name] = rec.info
        self.snapshot = dataclasses.replace(self.snapshot, derived=(*self.snapshot.derived, rec))

    # ---- rows -----------------------------------------------------------------------------------
    def gather(self, ids: np.ndarray, hooks: list[str]) -> dict[str, np.ndarray]:
        """Rows ``ids`` (valid int64 global ids) of ``hooks`` in storage dtype, in the order given:
        ``{hook: array[len(ids), *shape]}`` (hooks with no row are left out).  Each touched chunk is
        read (and verified) once, by 8 threads."""
        frag, local = self.snapshot.locate(ids)
        chunk = local // self.chunk_rows
        keys, inverse = np.unique(np.stack([frag, chunk], axis=1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))

        def read(i: int) -> dict[str, np.ndarray]:
            f, c = int(keys[i][0]), int(keys[i][1])
            return {h: self.reader(f).read_chunk(h, c) for h in hooks}

        out: dict[str, np.ndarray] = {}
        with ThreadPoolExecutor(8) as pool:
            for i, data in enumerate(pool.map(read, range(len(keys)))):
                sel = order[bounds[i]:bounds[i + 1]]
                rows = local[sel] - int(keys[i][1]) * self.chunk_rows
                for h in hooks:
                    if h not in out:
                        out[h] = np.empty((len(ids), *self.hook_infos[h].shape), dtype=data[h].dtype)
                    out[h][sel] = data[h][rows]
        return out

    # ---- provenance -----------------------------------------------------------------------------
    def provenance_of(self, frag: int) -> pa.Table:
        """The whole provenance table of fragment ``frag`` (local row order; an LRU of
        ``PROVENANCE_CACHE`` fragments)."""
        with self._lock:
            t = self._prov.get(frag)
            if t is not None:
                self._prov.move_to_end(frag)
                return t
        t = self.reader(frag).read_provenance()
        with self._lock:
            self._prov[frag] = t
            self._prov.move_to_end(frag)
            if len(self._prov) > PROVENANCE_CACHE:
                self._prov.popitem(last=False)
        return t

    def provenance_rows(self, ids: np.ndarray) -> pa.Table:
        """Provenance rows of valid global ``ids`` in the order given, without ``row_id``."""
        frag, local = self.snapshot.locate(ids)
        parts, order = [], []
        for f in np.unique(frag):
            sel = np.nonzero(frag == f)[0]
            parts.append(self.provenance_of(int(f)).take(pa.array(local[sel])))
            order.append(sel)
        if not parts:
            cols = [c for c in self.manifest.provenance_columns if c != "row_id"]
            empty = (self.provenance_of(0).schema if self.snapshot.fragments
                     else pa.schema([(c, pa.int64()) for c in cols]))
            return empty.empty_table()
        return pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))

    def documents_table(self) -> pa.Table:
        """All committed fragments' documents tables, one row per doc id, sorted by doc id (cached)."""
        t = self._documents
        if t is not None:
            return t
        import pyarrow.parquet as pq

        from actlake.store import layout

        def read(rec) -> pa.Table | None:
            try:
                with self.store.fs.open(self.store.path(f"{rec.path}/{layout.DOCUMENTS}"), "rb") as f:
                    return pq.read_table(f, use_threads=False)  # see FragmentReader.read_provenance
            except FileNotFoundError:
                return None  # written before documents tables existed, or from arrays

        with ThreadPoolExecutor(8) as pool:
            parts = [p for p in pool.map(read, self.snapshot.fragments) if p is not None]
        schema = pa.schema([("doc_id", pa.int64()), ("source", pa.string()), ("index", pa.int64()),
                            ("label", pa.string())])
        t = (pa.concat_tables([p.select(schema.names).cast(schema) for p in parts]) if parts
             else schema.empty_table())
        ids = t.column("doc_id").to_numpy()
        _, first = np.unique(ids, return_index=True)  # a document cut across fragments is listed twice
        t = t.take(pa.array(first))
        with self._lock:
            if self._documents is None:
                self._documents = t
            return self._documents

    # ---- filters --------------------------------------------------------------------------------
    def filter_mask(self, frag: int, flt: RowFilter) -> np.ndarray:
        """bool ``[rows of fragment frag]``: rows that pass ``flt`` (an LRU of ``MASK_CACHE``; reads
        only the columns the filter needs)."""
        key = (frag, flt)
        with self._lock:
            m = self._masks.get(key)
            if m is not None:
                self._masks.move_to_end(key)
                return m
        m = flt.mask(self.reader(frag).read_provenance(columns=flt.columns()))
        with self._lock:
            self._masks[key] = m
            if len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        return m

    def kept_per_block(self, flt: RowFilter, block_rows: int) -> np.ndarray:
        """int64 kept rows per block (block order of ``shuffle.block_list``); one provenance scan per
        filter.  Raises KeyError when the filter needs a provenance column the dataset lacks."""
        key = (flt, block_rows)
        missing = [c for c in flt.columns() if c not in self.manifest.provenance_columns]
        if missing:
            raise KeyError(f"filter needs provenance column(s) {missing}; this dataset has "
                           f"{self.manifest.provenance_columns}")
        kept = self._kept.get(key)
        if kept is not None:
            return kept
        rows = [f.num_rows for f in self.snapshot.fragments]
        frag, chunk, lo, n = sh.block_list(rows, self.chunk_rows, block_rows)
        start = chunk * self.chunk_rows + lo
        kept = np.zeros(len(n), dtype=np.int64)
        bounds = np.searchsorted(frag, np.arange(len(rows) + 1))

        def count(f: int) -> None:
            cs = np.concatenate([[0], np.cumsum(self.filter_mask(f, flt))])
            b0, b1 = bounds[f], bounds[f + 1]
            kept[b0:b1] = cs[start[b0:b1] + n[b0:b1]] - cs[start[b0:b1]]

        with ThreadPoolExecutor(8) as pool:
            list(pool.map(count, range(len(rows))))
        with self._lock:
            return self._kept.setdefault(key, kept)

    # ---- verification ---------------------------------------------------------------------------
    def is_verified(self, key: ChunkKey) -> bool:
        """Whether chunk ``(fragment, hook, chunk)`` has been checked whole by this snapshot."""
        return key in self._verified

    def mark_verified(self, key: ChunkKey) -> None:
        """Record that chunk ``key`` matched its committed checksum (read whole, or all its ranges)."""
        with self._lock:
            self._verified.add(key)

    def verified(self) -> frozenset[ChunkKey]:
        """The chunks checked so far (a copy)."""
        with self._lock:
            return frozenset(self._verified)

    def verify_chunk(self, frag: int, hook: str, chunk: int, fd: int | None = None) -> None:
        """Check one chunk whole against its checksum, once per snapshot (for read paths that read
        it in byte ranges); a no-op with ``verify_reads=False``.  ``fd``: an open descriptor of the
        local chunk file to read it through.  Raises StoreDamagedError on a mismatch."""
        key = (frag, hook, chunk)
        if not self.verify_reads or key in self._verified:
            return
        self.reader(frag).verify_chunk_file(hook, chunk, fd)
        self.mark_verified(key)
