"""``open_dataset``: a read-only view of one committed snapshot of a store (local, S3, GCS)."""
from __future__ import annotations

import os
import sys
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actlake.client.access import SnapshotAccess
from actlake.client.args import seed_words, whole_number
from actlake.client.filters import RowFilter
from actlake.schemas.errors import ArgumentError, NotADatasetError, RowIdError
from actlake.schemas.manifest import Manifest
from actlake.store.commitlog import Snapshot
from actlake.store.dtypes import STORAGE, storage_to_tensor
from actlake.store.fs import StoreFS, open_store

if TYPE_CHECKING:  # torch and the loader load on first use: opening a dataset (`actlake info`) needs neither
    import torch

    from actlake.client.protocol import Dataset
    from actlake.client.query import QueryEngine
    from actlake.client.torch_data import TorchBatches


class ActivationDataset:
    """Rows 0..num_rows-1 in commit order; every hook row-aligned.

    The snapshot is fixed at open time: fragments committed later are not seen until re-opened.
    ``verify_reads`` (default on): every chunk is checked against its fragment's CRC-32C the first
    time this object reads it (whole reads on every read), raising ``StoreDamagedError``.

    The public facade: reading the snapshot (fragment readers, provenance, filter masks, checksum
    state, warm buffers; thread-safe) is ``ds.access``, a ``SnapshotAccess`` (client/access.py).

    Raises:
        NotADatasetError: the location holds no actlake dataset.
        StoreDamagedError: the manifest says the job is complete but the commit log holds fewer
            (or more) fragments or rows than it records (an incomplete copy or lost commits)."""

    def __init__(self, store: StoreFS, verify_reads: bool = True):
        self.access = SnapshotAccess(store, verify_reads=verify_reads)

    # ---- metadata -----------------------------------------------------------------------------
    @property
    def store(self) -> StoreFS:
        return self.access.store

    @property
    def verify_reads(self) -> bool:
        return self.access.verify_reads

    @property
    def manifest(self) -> Manifest:
        return self.access.manifest

    @property
    def snapshot(self) -> Snapshot:
        return self.access.snapshot

    @property
    def chunk_rows(self) -> int:
        return self.access.chunk_rows

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
        return {n: {"shape": tuple(h.shape), "dtype": h.dtype, "codec": h.codec}
                for n, h in self.access.hook_infos.items()}

    def __repr__(self) -> str:
        return (f"ActivationDataset({self.uri!r}, rows={self.num_rows:,}, fragments={len(self.snapshot.fragments)}, "
                f"hooks={list(self.access.hook_infos)})")

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
        if arr.size and arr.dtype.kind == "u" and int(arr.max()) >= self.num_rows:  # before a wrapping cast
            raise RowIdError(f"row id {int(arr.max())} out of range [0, {self.num_rows})")
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
        hooks = self.access.check_hooks(hooks)
        ids = self._row_ids(row_ids)
        out = self.access.gather(ids, hooks)
        infos = self.access.hook_infos
        return {h: storage_to_tensor(out[h] if h in out else
                                     np.empty((0, *infos[h].shape), dtype=STORAGE[infos[h].dtype]),
                                     infos[h].dtype) for h in hooks}

    def provenance(self, row_ids) -> pa.Table:
        """Provenance rows (row_id first) for the given global row ids, in the order given.

        Raises:
            RowIdError: a row id that is not an integer or is outside [0, num_rows)."""
        ids = self._row_ids(row_ids)
        return self.access.provenance_rows(ids).add_column(0, "row_id", pa.array(ids))

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
        table = self.access.documents_table()
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
            ArgumentError (a ValueError): ``n`` outside [1, rows available]; ``n`` or ``seed`` not a whole
                number."""
        flt = RowFilter.model_validate(filter) if isinstance(filter, dict) else filter
        n, seed = whole_number("n", n), whole_number("seed", seed)
        rng = np.random.default_rng([seed_words(seed), 0x5A3E1E])
        if flt is None:
            total = self.num_rows
            if not 0 < n <= total:
                raise ArgumentError(f"n must be in [1, {total}], got {n}")
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
        kept = np.array([int(self.access.filter_mask(f, flt).sum()) for f in range(len(rows))], dtype=np.int64)
        total = int(kept.sum())
        if not 0 < n <= total:
            raise ArgumentError(f"n must be in [1, {total}] (rows passing the filter), got {n}")
        picks = rng.choice(total, size=n, replace=False).astype(np.int64)  # k-th kept row overall
        cum = np.concatenate([[0], np.cumsum(kept)])
        frag = np.searchsorted(cum, picks, side="right") - 1
        ids = np.empty(n, dtype=np.int64)
        for f in np.unique(frag):
            sel = frag == f
            kept_rows = np.flatnonzero(self.access.filter_mask(int(f), flt))
            ids[sel] = kept_rows[picks[sel] - cum[f]] + self.snapshot.offsets[f]
        return ids


def open_dataset(uri: str, storage_options: dict[str, Any] | None = None, verify_reads: bool = True
                 ) -> Dataset:
    """Open a dataset by path or fsspec URL (``s3://``, ``gs://``), or ``grpc://host:port/name`` /
    ``grpc+tls://…`` served by ``actlake serve`` (a ``RemoteDataset``, client/remote.py).  Never needs Ray.

    Returns: a ``Dataset`` (client/protocol.py), the API both kinds share: an ``ActivationDataset`` for
    a store opened directly (``isinstance`` it for ``snapshot``, ``store``, ``access``, ``weights``
    and the analyses), a ``RemoteDataset`` for ``grpc://``.

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

        return RemoteDataset(uri, storage_options)
    store = open_store(uri, storage_options)
    if store.is_local:
        if os.path.isfile(store.root):
            raise NotADatasetError(f"not an actlake dataset: {uri} is a file (give the dataset's folder)")
        if not os.path.isdir(store.root):
            raise NotADatasetError(f"not an actlake dataset: {uri} does not exist")
    return ActivationDataset(store, verify_reads=verify_reads)
