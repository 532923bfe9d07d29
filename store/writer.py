"""Write a dataset from in-memory arrays (no model, no Ray): imports, benchmarks, tests.

Produces exactly the format an extraction job writes: manifest, fragments, commit log."""
from __future__ import annotations

import datetime as _dt
import uuid
from typing import Any

import numpy as np
import pyarrow as pa

from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo, array_name
from actlake.schemas.manifest import Manifest, ModelInfo
from actlake.store import layout
from actlake.store.commitlog import CommitLog
from actlake.store.dtypes import storage_dtype_name
from actlake.store.fragment import write_fragment
from actlake.store.fs import open_store
from actlake.store.manifest_io import write_manifest


class DatasetWriter:
    """``hooks`` maps name → (per-row shape, dtype); arrays passed to ``add`` are in the storage
    dtype (uint16 bits for bfloat16, see store.dtypes.tensor_to_storage)."""

    def __init__(self, uri: str, hooks: dict[str, tuple[tuple[int, ...], str]], chunk_rows: int = 8192,
                 codec: str = "none", model_id: str = "arrays", storage_options: dict[str, Any] | None = None,
                 provenance_columns: list[str] | None = None, row_shuffle: bool = False):
        self.store = open_store(uri, storage_options)
        # validated from a dict: dtype and codec are plain strings here, checked against HookInfo's literals
        self.infos = {
            n: HookInfo.model_validate(dict(
                name=n, module=n.split(":")[0], io="input" if n.endswith(":input") else "output",
                array=array_name(n), shape=list(shape), dtype=dtype, storage_dtype=storage_dtype_name(dtype),
                codec=codec))
            for n, (shape, dtype) in hooks.items()
        }
        self.chunk_rows = chunk_rows
        self.manifest = Manifest(
            created_at=_dt.datetime.now(_dt.UTC).isoformat(),
            model=ModelInfo(id=model_id, architecture="none", config_sha256="", kind="text"),
            hooks=self.infos, job=None, chunk_rows=chunk_rows, row_shuffle=row_shuffle,
            provenance_columns=provenance_columns or ["row_id", "doc_id", "context_id", "context_pos", "token_id"],
        )
        write_manifest(self.store, self.manifest)
        self.log = CommitLog(self.store)
        self.snap = self.log.builder()
        self._next_item = 0

    def add(self, arrays: dict[str, np.ndarray], provenance: pa.Table, documents: pa.Table | None = None,
            nonfinite: str = "warn") -> FragmentRecord:
        """Write and commit one fragment.  ``documents``: optional doc_id/source/index/label table
        (see ``ActivationDataset.documents``); ``nonfinite``: error | warn | clamp for inf/NaN."""
        index = len(self.snap.fragments)
        attempt = uuid.uuid4().hex[:12]
        path = f"{layout.FRAGMENTS}/u{index:09d}-{attempt}"
        written = write_fragment(self.store, path, arrays, provenance, self.infos, self.chunk_rows,
                                 documents=documents, nonfinite=nonfinite)
        has_ctx = "context_id" in provenance.column_names
        n_items = len(np.unique(provenance.column("context_id").to_numpy())) if has_ctx else 1
        rec = FragmentRecord(unit_id=f"u{index:09d}", unit_index=index, path=path, num_rows=provenance.num_rows,
                             num_items=n_items, source_range=(self._next_item, self._next_item + n_items),
                             attempt=attempt, **written.record_fields())
        self._next_item += n_items
        ok, self.snap = self.log.commit(rec, self.snap)
        assert ok
        return rec

    def close(self) -> str:
        self.log.write_checkpoint(self.snap)
        self.log.close()
        self.manifest.status, self.manifest.num_rows = "complete", self.snap.num_rows
        self.manifest.num_fragments = len(self.snap.fragments)
        write_manifest(self.store, self.manifest)
        return self.store.uri
