"""``open_dataset``: a read-only view of one committed snapshot of a store (local, S3, GCS)."""
from __future__ import annotations

from collections import OrderedDict
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np
import pyarrow as pa
import torch

from actlake.schemas.errors import ActlakeError
from actlake.schemas.manifest import Manifest
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.dtypes import storage_to_tensor
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS, open_store
from actlake.store.manifest_io import read_manifest

PROVENANCE_CACHE = 8  # fragments whose provenance tables are kept in memory


class ActivationDataset:
    """Rows 0..num_rows-1 in commit order; every hook row-aligned.

    The snapshot is fixed at open time: fragments committed later are not seen until re-opened."""

    def __init__(self, store: StoreFS):
        self.store = store
        self.manifest: Manifest = read_manifest(store)
        self.snapshot: Snapshot = CommitLog(store).snapshot()
        self.chunk_rows = self.manifest.chunk_rows
        self._hook_infos = self.manifest.hooks
        self._readers: dict[int, FragmentReader] = {}
        self._prov: OrderedDict[int, pa.Table] = OrderedDict()

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

    # ---- random access ------------------------------------------------------------------------
    def take(self, row_ids, hooks: list[str] | str | None = None) -> dict[str, torch.Tensor]:
        """Rows by global id, in the order given.  Reads each touched chunk once."""
        hooks = self._check_hooks(hooks)
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        frag, local = self.snapshot.locate(ids)
        chunk = local // self.chunk_rows
        keys = sorted(set(zip(frag.tolist(), chunk.tolist())))

        def read(key):
            f, c = key
            return key, {h: self._reader(f).read_chunk(h, c) for h in hooks}

        with ThreadPoolExecutor(8) as pool:
            chunks = dict(pool.map(read, keys))
        out = {}
        for h in hooks:
            info = self._hook_infos[h]
            first = next(iter(chunks.values()))[h] if chunks else None
            dt = first.dtype if first is not None else np.float32
            arr = np.empty((len(ids), *info.shape), dtype=dt)
            for (f, c), data in chunks.items():
                sel = np.nonzero((frag == f) & (chunk == c))[0]
                arr[sel] = data[h][local[sel] - c * self.chunk_rows]
            out[h] = storage_to_tensor(arr, info.dtype)
        return out

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

    # ---- streaming ----------------------------------------------------------------------------
    def batches(self, batch_size: int, hooks: list[str] | str | None = None, shuffle: bool = True, seed: int = 0,
                epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True, device=None,
                with_provenance: bool = False, **kw):
        """Batches ``{hook: tensor[B, ...]}`` (+ ``row_id`` with provenance); see BatchStream."""
        from actlake.client.batches import BatchStream

        return BatchStream(self, batch_size, hooks, shuffle, seed, epoch, rank, world_size, drop_last, device,
                           with_provenance, **kw)


def open_dataset(uri: str, storage_options: dict[str, Any] | None = None) -> ActivationDataset:
    """Open a dataset by path or fsspec URL (``s3://``, ``gs://``).  Never needs Ray."""
    if uri.startswith("grpc://"):
        raise ActlakeError("remote datasets (grpc://) need the Flight client, which is not available in this version")
    store = open_store(uri, storage_options)
    return ActivationDataset(store)
