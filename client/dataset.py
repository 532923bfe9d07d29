"""``open_dataset``: a read-only view of one committed snapshot of a store (local, S3, GCS)."""
from __future__ import annotations

import threading
from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import torch

from actlake.client import shuffle as sh
from actlake.client.buffers import BufferCache
from actlake.client.filters import RowFilter
from actlake.schemas.errors import ActlakeError
from actlake.schemas.manifest import Manifest
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.derived import derived_hooks
from actlake.store.dtypes import STORAGE, storage_to_tensor
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS, open_store
from actlake.store.manifest_io import read_manifest

if TYPE_CHECKING:
    from actlake.client.query import QueryEngine
    from actlake.client.torch_data import TorchBatches

PROVENANCE_CACHE = 8  # fragments whose provenance tables are kept in memory
MASK_CACHE = 256  # fragments whose filter masks are kept (1 byte per row)
DEFAULT_SAMPLE_BLOCK = 256


class ActivationDataset:
    """Rows 0..num_rows-1 in commit order; every hook row-aligned.

    The snapshot is fixed at open time: fragments committed later are not seen until re-opened."""

    def __init__(self, store: StoreFS):
        self.store = store
        self.manifest: Manifest = read_manifest(store)
        self.snapshot: Snapshot = CommitLog(store).snapshot()
        self.manifest.hooks.update(derived_hooks(self.snapshot))  # format 2: derived hooks (store/derived.py)
        self.chunk_rows = self.manifest.chunk_rows
        self._hook_infos = self.manifest.hooks
        self._readers: dict[int, FragmentReader] = {}
        self._prov: OrderedDict[int, pa.Table] = OrderedDict()
        self._masks: OrderedDict[tuple, np.ndarray] = OrderedDict()
        self._kept: dict[tuple, np.ndarray] = {}
        self._lock = threading.Lock()
        self._buffers = BufferCache(cap=8)  # warm window buffers / output pools reused across streams

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
            raise KeyError(f"unknown hook(s) {bad}; this dataset has {list(self._hook_infos)}")
        return list(hooks)

    def _reader(self, frag: int) -> FragmentReader:
        r = self._readers.get(frag)
        if r is None:
            r = FragmentReader(self.store, self.snapshot.fragments[frag], self._hook_infos, self.chunk_rows)
            self._readers[frag] = r
        return r

    @property
    def query(self) -> "QueryEngine":
        """Top-k, interval samples, statistics and fetch over this snapshot (see client/query.py)."""
        from actlake.client.query import QueryEngine

        return self.__dict__.setdefault("_query_engine", QueryEngine(self))

    # ---- random access ------------------------------------------------------------------------
    def take(self, row_ids, hooks: list[str] | str | None = None) -> dict[str, torch.Tensor]:
        """Rows by global id, in the order given.  Reads each touched chunk once."""
        hooks = self._check_hooks(hooks)
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
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
        return {h: storage_to_tensor(out[h] if h in out else
                                     np.empty((0, *self._hook_infos[h].shape), dtype=STORAGE[self._hook_infos[h].dtype]),
                                     self._hook_infos[h].dtype) for h in hooks}

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
        """Provenance rows (row_id first) for the given global row ids, in the order given."""
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        frag, local = self.snapshot.locate(ids)
        parts, order = [], []
        for f in np.unique(frag):
            sel = np.nonzero(frag == f)[0]
            parts.append(self._provenance_of(int(f)).take(pa.array(local[sel])))
            order.append(sel)
        if not parts:
            cols = [c for c in self.manifest.provenance_columns if c != "row_id"]
            empty = self._provenance_of(0).schema if self.snapshot.fragments else pa.schema([(c, pa.int64()) for c in cols])
            table = empty.empty_table()
        else:
            table = pa.concat_tables(parts).take(pa.array(np.argsort(np.concatenate(order), kind="stable")))
        return table.add_column(0, "row_id", pa.array(ids))

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

        return BatchStream(self, batch_size, hooks, shuffle, seed, epoch, rank, world_size, drop_last, device,
                           with_provenance, filter=filter, **kw)

    def torch_dataset(self, batch_size: int, **kw) -> "TorchBatches":
        """A ``torch.utils.data.IterableDataset`` of whole batches; use ``DataLoader(ds, batch_size=None)``.
        Work is split across DataLoader workers and DDP ranks (each row once across all of them)."""
        from actlake.client.torch_data import TorchBatches

        return TorchBatches(self, batch_size, **kw)

    def sample(self, n: int, seed: int = 0, hooks: list[str] | str | None = None,
               filter: RowFilter | dict | None = None) -> dict[str, torch.Tensor]:
        """``n`` random rows (``row_id`` included), e.g. for dead-latent resampling.

        Independent of every batch stream.  Reads whole random blocks (rows inside a block are
        already a random sample of their fragment) rather than scattered rows, then subsamples."""
        from actlake.client.batches import BatchStream

        flt = RowFilter.model_validate(filter) if isinstance(filter, dict) else filter
        total = self.num_rows if flt is None else int(self._kept_per_block(flt, DEFAULT_SAMPLE_BLOCK).sum())
        if not 0 < n <= total:
            raise ValueError(f"n must be in [1, {total}], got {n}")
        # a one-rank "epoch" of a private seed space, cut after enough rows
        stream = BatchStream(self, n, hooks, shuffle=True, seed=seed, epoch=-1 - seed, drop_last=False,
                             with_provenance=True, buffer_rows=max(n, 1 << 16), block_rows=DEFAULT_SAMPLE_BLOCK,
                             filter=flt, prefetch=0, prefetch_batches=1)
        return next(iter(stream))


def open_dataset(uri: str, storage_options: dict[str, Any] | None = None) -> ActivationDataset:
    """Open a dataset by path or fsspec URL (``s3://``, ``gs://``).  Never needs Ray."""
    if uri.startswith("grpc://"):
        raise ActlakeError("remote datasets (grpc://) need the Flight client, which is not available in this version")
    store = open_store(uri, storage_options)
    return ActivationDataset(store)
