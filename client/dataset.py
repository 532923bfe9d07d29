"""``open_dataset``: a read-only view of one committed snapshot of a store (local, S3, GCS)."""
from __future__ import annotations

import os
import sys
import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actlake.client import shuffle as sh
from actlake.client.buffers import BufferCache
from actlake.client.filters import RowFilter
from actlake.schemas.errors import HookError, NotADatasetError, RowIdError, StoreDamagedError
from actlake.schemas.manifest import Manifest
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.derived import derived_hooks
from actlake.store.dtypes import STORAGE, storage_to_tensor
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS, open_store
from actlake.store.manifest_io import read_manifest

if TYPE_CHECKING:  # torch and the loader load on first use: opening a dataset (`actlake info`) needs neither
    import torch

    from actlake.client.query import QueryEngine
    from actlake.client.torch_data import TorchBatches

PROVENANCE_CACHE = 8  # fragments whose provenance tables are kept in memory
MASK_CACHE = 256  # fragments whose filter masks are kept (1 byte per row)


class ActivationDataset:
    """Rows 0..num_rows-1 in commit order; every hook row-aligned.

    The snapshot is fixed at open time: fragments committed later are not seen until re-opened.
    ``verify_reads`` (default on): every chunk is checked against its fragment's CRC-32C the first
    time this object reads it (whole reads on every read), raising ``StoreDamagedError``.

    Raises:
        NotADatasetError: the location holds no actlake dataset.
        StoreDamagedError: the manifest says the job is complete but the commit log holds fewer
            (or more) fragments or rows than it records (an incomplete copy or lost commits)."""

    def __init__(self, store: StoreFS, verify_reads: bool = True):
        self.store = store
        self.verify_reads = verify_reads
        self.manifest: Manifest = read_manifest(store)
        self.snapshot: Snapshot = CommitLog(store).snapshot()
        self._check_complete()
        self.manifest.hooks.update(derived_hooks(self.snapshot))  # format 2: derived hooks (store/derived.py)
        self.chunk_rows = self.manifest.chunk_rows
        self._hook_infos = self.manifest.hooks
        self._readers: dict[int, FragmentReader] = {}
        self._prov: OrderedDict[int, pa.Table] = OrderedDict()
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._kept: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self._buffers = BufferCache(cap=8)  # warm window buffers / output pools reused across streams
        self._verified: set[tuple[int, str, int]] = set()  # (fragment, hook, chunk) checked whole

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
    # ---- metadata -----------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self.store.uri

    @property
    def num_rows(self) -> int:
        return self.snapshot.num_rows

    def __len__(self) -> int:
        return self.num_rows

    @property
    def hooks(self) -> dict[str, dict[str, Any]]:
        return {n: {"shape": tuple(h.shape), "dtype": h.dtype, "codec": h.codec} for n, h in self._hook_infos.items()}

    def __repr__(self) -> str:
        return (f"ActivationDataset({self.uri!r}, rows={self.num_rows:,}, fragments={len(self.snapshot.fragments)}, "
                f"hooks={list(self._hook_infos)})")

    def _check_hooks(self, hooks: list[str] | str | None) -> list[str]:
        if hooks is None:
            return list(self._hook_infos)
        if isinstance(hooks, str):
            hooks = [hooks]
        bad = [h for h in hooks if h not in self._hook_infos]
        if bad:
            raise HookError(f"unknown hook(s) {bad}; this dataset has {list(self._hook_infos)}")
        return list(hooks)

    def _reader(self, frag: int) -> FragmentReader:
        r = self._readers.get(frag)
        if r is None:
            rec = self.snapshot.fragments[frag]
            derived = {d.info.array: d.checksums[rec.unit_id] for d in self.snapshot.derived
                       if rec.unit_id in d.checksums}
            r = FragmentReader(self.store, rec, self._hook_infos, self.chunk_rows, verify=self.verify_reads,
                               derived=derived)
            self._readers[frag] = r
        return r

    def _verify_chunk(self, frag: int, hook: str, chunk: int, fd: int | None = None) -> None:
        """Check one chunk whole against its checksum, once per dataset object (for read paths
        that read it in byte ranges); a no-op with ``verify_reads=False``."""
        key = (frag, hook, chunk)
        if not self.verify_reads or key in self._verified:
            return
        self._reader(frag).verify_chunk_file(hook, chunk, fd)
        with self._lock:
            self._verified.add(key)

    def _row_ids(self, row_ids) -> np.ndarray:
        """Row ids as a flat int64 array.  Integral floats (1.0) pass; fractional, non-finite,
        boolean or non-numeric ids and ids outside [0, num_rows) raise ``RowIdError``."""
        tmod = sys.modules.get("torch")  # a tensor argument means torch is loaded: never load it for this check
        if tmod is not None and isinstance(row_ids, tmod.Tensor):
            row_ids = row_ids.detach().cpu().numpy()
        try:
            arr = np.asarray(row_ids).reshape(-1)
        except ValueError as e:  # ragged nested lists
            raise RowIdError(f"row ids must be a flat list of integers ({e})") from None
        if arr.size and arr.dtype.kind not in "iu":
            if arr.dtype.kind == "f" and np.all(np.isfinite(arr)) and np.all(arr == np.round(arr)):
                arr = arr.astype(np.int64)
            else:
                shown = [v.item() if hasattr(v, "item") else v for v in arr[:3]]
                raise RowIdError(f"row ids must be integers, got {arr.dtype} values such as {shown}")
        ids = arr.astype(np.int64)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_rows):
            bad = ids[(ids < 0) | (ids >= self.num_rows)][0]
            raise RowIdError(f"row id {int(bad)} out of range [0, {self.num_rows})")
        return ids

    @property
    def query(self) -> QueryEngine:
        """Top-k, interval samples, statistics and fetch over this snapshot (see client/query.py)."""
        from actlake.client.query import QueryEngine

        # same class at run time; pyright takes client/dataset.py and its actlake.client link for two modules
        return self.__dict__.setdefault("_query_engine", QueryEngine(self))  # pyright: ignore[reportArgumentType]

    # ---- random access ------------------------------------------------------------------------
    def weights(self, name: str | None = None):
        """Exported model weight ``name`` → torch.Tensor (``None``: the stored names); see client/weights.py."""
        from actlake.client.weights import load_weight
        return load_weight(self.store, name)

    def take(self, row_ids, hooks: list[str] | str | None = None) -> dict[str, torch.Tensor]:
        """Rows by global id, in the order given: ``{hook: tensor[len(row_ids), *shape]}`` in the hook's
        dtype.  Reads (and verifies) each touched chunk once.

        Raises:
            RowIdError: a row id that is not an integer or is outside [0, num_rows).
            HookError: an unknown hook.  StoreDamagedError: a chunk fails its checksum."""
        hooks = self._check_hooks(hooks)
        ids = self._row_ids(row_ids)
        frag, local = self.snapshot.locate(ids)
        chunk = local // self.chunk_rows
        keys, inverse = np.unique(np.stack([frag, chunk], axis=1), axis=0, return_inverse=True)
        inverse = inverse.reshape(-1)
        order = np.argsort(inverse, kind="stable")
        bounds = np.searchsorted(inverse[order], np.arange(len(keys) + 1))

        def read(i: int) -> dict[str, np.ndarray]:
            f, c = int(keys[i][0]), int(keys[i][1])
            return {h: self._reader(f).read_chunk(h, c) for h in hooks}

        out: dict[str, np.ndarray] = {}
        with ThreadPoolExecutor(8) as pool:
            for i, data in enumerate(pool.map(read, range(len(keys)))):
                sel = order[bounds[i]:bounds[i + 1]]
                rows = local[sel] - int(keys[i][1]) * self.chunk_rows
                for h in hooks:
                    if h not in out:
                        out[h] = np.empty((len(ids), *self._hook_infos[h].shape), dtype=data[h].dtype)
                    out[h][sel] = data[h][rows]
        infos = self._hook_infos
        return {h: storage_to_tensor(out[h] if h in out else
                                     np.empty((0, *infos[h].shape), dtype=STORAGE[infos[h].dtype]),
                                     infos[h].dtype) for h in hooks}

    def _provenance_of(self, frag: int) -> pa.Table:
        t = self._prov.get(frag)
        if t is None:
            t = self._reader(frag).read_provenance()
            self._prov[frag] = t
            if len(self._prov) > PROVENANCE_CACHE:
                self._prov.popitem(last=False)
        else:
            self._prov.move_to_end(frag)
        return t

    def provenance(self, row_ids) -> pa.Table:
        """Provenance rows (row_id first) for the given global row ids, in the order given.

        Raises:
            RowIdError: a row id that is not an integer or is outside [0, num_rows)."""
        ids = self._row_ids(row_ids)
        frag, local = self.snapshot.locate(ids)
        parts, order = [], []
        for f in np.unique(frag):
            sel = np.nonzero(frag == f)[0]
            parts.append(self._provenance_of(int(f)).take(pa.array(local[sel])))
            order.append(sel)
        if not parts:
            cols = [c for c in self.manifest.provenance_columns if c != "row_id"]
            empty = (self._provenance_of(0).schema if self.snapshot.fragments
                     else pa.schema([(c, pa.int64()) for c in cols]))
            table = empty.empty_table()
        else:
            table = pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        return table.add_column(0, "row_id", pa.array(ids))

    def _documents_table(self) -> pa.Table:
        """All committed fragments' documents tables, one row per doc id (cached)."""
        t = getattr(self, "_documents", None)
        if t is None:
            import pyarrow.parquet as pq

            from actlake.store import layout

            def read(rec) -> pa.Table | None:
                try:
                    with self.store.fs.open(self.store.path(f"{rec.path}/{layout.DOCUMENTS}"), "rb") as f:
                        return pq.read_table(f)
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
            t = self._documents = t.take(pa.array(first))  # sorted by doc_id
        return t

    def documents(self, doc_ids) -> pa.Table:
        """Where documents came from: ``doc_id`` (int64), ``source`` (file path or URI of the document
        or image), ``index`` (0-based line of a .jsonl / row of a .parquet; null for whole-file
        documents and images), ``label`` — one row per id, in the order given (ids may repeat).

        Only committed fragments are read.  Raises RowIdError for ids that are not integers or
        that no committed fragment holds."""
        raw = np.asarray(doc_ids).reshape(-1)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            from actlake.schemas.errors import RowIdError

            raise RowIdError(f"doc ids must be integers, got {raw.dtype}")
        ids = raw.astype(np.int64)
        table = self._documents_table()
        have = table.column("doc_id").to_numpy()
        if len(ids) and not len(have):
            from actlake.schemas.errors import RowIdError

            raise RowIdError("this dataset records no documents (written from arrays, or before documents "
                             "tables existed); provenance doc_id is all it has")
        pos = np.searchsorted(have, ids)
        ok = ((pos < len(have)) & (have[np.minimum(pos, max(len(have) - 1, 0))] == ids) if len(have)
              else np.zeros(len(ids), bool))
        if not ok.all():
            from actlake.schemas.errors import RowIdError

            raise RowIdError(f"doc id(s) {ids[~ok][:5].tolist()} are not in this dataset's committed documents")
        return table.take(pa.array(pos))

    def _contexts_per_fragment(self) -> float | None:
        """Mean contexts (text) or images (vision) per fragment, from the commit log: how long a
        run of one block may be before batches lose distinct contexts (shuffle.auto_layout)."""
        items = [f.num_items for f in self.snapshot.fragments]
        return float(np.mean(items)) if items and min(items) > 1 else None

    # ---- filters ------------------------------------------------------------------------------
    def _filter_mask(self, frag: int, flt: RowFilter) -> np.ndarray:
        """Rows of fragment ``frag`` that pass ``flt`` (a small LRU; reads only needed columns)."""
        key = (frag, flt)
        with self._lock:
            m = self._masks.get(key)
            if m is not None:
                self._masks.move_to_end(key)
                return m
        m = flt.mask(self._reader(frag).read_provenance(columns=flt.columns()))
        with self._lock:
            self._masks[key] = m
            if len(self._masks) > MASK_CACHE:
                self._masks.popitem(last=False)
        return m

    def _kept_per_block(self, flt: RowFilter, block_rows: int) -> np.ndarray:
        """Kept rows per block (block order of shuffle.block_list); one provenance scan per filter."""
        key = (flt, block_rows)
        missing = [c for c in flt.columns() if c not in self.manifest.provenance_columns]
        if missing:
            raise KeyError(f"filter needs provenance column(s) {missing}; this dataset has "
                           f"{self.manifest.provenance_columns}")
        if key not in self._kept:
            rows = [f.num_rows for f in self.snapshot.fragments]
            frag, chunk, lo, n = sh.block_list(rows, self.chunk_rows, block_rows)
            start = chunk * self.chunk_rows + lo
            kept = np.zeros(len(n), dtype=np.int64)
            bounds = np.searchsorted(frag, np.arange(len(rows) + 1))

            def count(f: int) -> None:
                cs = np.concatenate([[0], np.cumsum(self._filter_mask(f, flt))])
                b0, b1 = bounds[f], bounds[f + 1]
                kept[b0:b1] = cs[start[b0:b1] + n[b0:b1]] - cs[start[b0:b1]]

            with ThreadPoolExecutor(8) as pool:
                list(pool.map(count, range(len(rows))))
            self._kept[key] = kept
        return self._kept[key]

    # ---- streaming ----------------------------------------------------------------------------
    def batches(self, batch_size: int, hooks: list[str] | str | None = None, shuffle: bool = True, seed: int = 0,
                epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True, device=None,
                with_provenance: bool = False, filter: RowFilter | dict | None = None, **kw):
        """Batches ``{hook: tensor[B, ...]}`` (+ ``row_id`` with provenance), shuffled across the
        whole dataset, deterministic in (seed, epoch), resumable; see client/batches.py."""
        from actlake.client.batches import BatchStream

        # same class at run time; pyright takes client/dataset.py and its actlake.client link for two modules
        return BatchStream(self, batch_size, hooks, shuffle, seed, epoch,  # pyright: ignore[reportArgumentType]
                           rank, world_size, drop_last, device, with_provenance, filter=filter, **kw)

    def torch_dataset(self, batch_size: int, **kw) -> TorchBatches:
        """A ``torch.utils.data.IterableDataset`` of whole batches; use ``DataLoader(ds, batch_size=None)``.
        Work is split across DataLoader workers and DDP ranks (each row once across all of them)."""
        from actlake.client.torch_data import TorchBatches

        # same class at run time; pyright takes client/dataset.py and its actlake.client link for two modules
        return TorchBatches(self, batch_size, **kw)  # pyright: ignore[reportArgumentType]

    def sample(self, n: int, seed: int = 0, hooks: list[str] | str | None = None,
               filter: RowFilter | dict | None = None) -> dict[str, torch.Tensor]:
        """``n`` distinct rows drawn uniformly at random (without replacement) from the whole
        dataset, or from the rows passing ``filter``: ``{hook: tensor[n, *shape], "row_id": int64[n]}``,
        e.g. for dead-latent resampling.

        Independent of every batch stream, and draws for different seeds are independent: two
        seeds share about n²/N rows, as independent uniform samples do.  Rows come from
        ``take`` (each touched chunk read once), so a large ``n`` on a large store costs a
        scattered read.

        Raises:
            ValueError: ``n`` outside [1, rows available]."""
        flt = RowFilter.model_validate(filter) if isinstance(filter, dict) else filter
        rng = np.random.default_rng([int(seed) & 0xFFFFFFFF, 0x5A3E1E])
        if flt is None:
            total = self.num_rows
            if not 0 < n <= total:
                raise ValueError(f"n must be in [1, {total}], got {n}")
            ids = rng.choice(total, size=n, replace=False).astype(np.int64)
        else:
            ids = self._sample_filtered(n, rng, flt)
        import torch

        out = self.take(ids, hooks)
        out["row_id"] = torch.from_numpy(ids)
        return out

    def _sample_filtered(self, n: int, rng: np.random.Generator, flt: RowFilter) -> np.ndarray:
        """``n`` uniform draws without replacement among the rows passing ``flt`` (global ids)."""
        rows = [f.num_rows for f in self.snapshot.fragments]
        kept = np.array([int(self._filter_mask(f, flt).sum()) for f in range(len(rows))], dtype=np.int64)
        total = int(kept.sum())
        if not 0 < n <= total:
            raise ValueError(f"n must be in [1, {total}] (rows passing the filter), got {n}")
        picks = rng.choice(total, size=n, replace=False).astype(np.int64)  # k-th kept row overall
        cum = np.concatenate([[0], np.cumsum(kept)])
        frag = np.searchsorted(cum, picks, side="right") - 1
        ids = np.empty(n, dtype=np.int64)
        for f in np.unique(frag):
            sel = frag == f
            ids[sel] = np.flatnonzero(self._filter_mask(int(f), flt))[picks[sel] - cum[f]] + self.snapshot.offsets[f]
        return ids


def open_dataset(uri: str, storage_options: dict[str, Any] | None = None, verify_reads: bool = True
                 ) -> ActivationDataset:
    """Open a dataset by path or fsspec URL (``s3://``, ``gs://``), or ``grpc://host:port/name`` /
    ``grpc+tls://…`` served by ``actlake serve`` (a ``RemoteDataset``, client/remote.py).  Never needs Ray.

    ``verify_reads`` (default True): check chunks against their fragment's CRC-32C as they are read
    (each chunk once per opened dataset when read in ranges; pass False to skip the check).  A remote
    dataset is checked by its server.

    Raises:
        NotADatasetError: ``uri`` is missing, a plain file, or a folder without a manifest.
        StoreDamagedError: an unreadable manifest or commit, or a complete job whose commit log
            lacks commits.
        RemoteError: a ``grpc://`` server that refuses the token or does not serve that name."""
    if uri.startswith(("grpc://", "grpc+tls://")):
        from actlake.client.remote import RemoteDataset

        return RemoteDataset(uri, storage_options)  # type: ignore[return-value]
    store = open_store(uri, storage_options)
    if store.is_local:
        if os.path.isfile(store.root):
            raise NotADatasetError(f"not an actlake dataset: {uri} is a file (give the dataset's folder)")
        if not os.path.isdir(store.root):
            raise NotADatasetError(f"not an actlake dataset: {uri} does not exist")
    return ActivationDataset(store, verify_reads=verify_reads)
