"""Derived hooks (format version 2): an extra zarr array in every fragment, committed through the
commit log, so readers see it as one more row-aligned hook.

Layout inside each covered fragment (existing files are never touched)::

    acts/<array>/zarr.json            zarr v3 array metadata, shape (rows, *shape)
    acts/<array>/c/<i>/0              chunk i, uncompressed, chunk_rows rows (edge chunk zero-padded)
    _derived/<array>.json             {file: [size, sha256]} of the two lines above; written last

``<array>`` is ``<name with ':' → '@'>~<attempt>``, unique per attempt, so a failed or repeated
attempt never overwrites the array of another.  The log entry (``Commit.derived``, a
:class:`DerivedRecord`) holds the HookInfo and, per unit id, the sha256 of that checksum file.  A
reader exposes a derived hook only while it covers every fragment of its snapshot (fragments
committed later, e.g. by a job still running, hide it until it is recomputed)."""
from __future__ import annotations

import json
from collections.abc import Iterable

import numpy as np
import zarr
import zarr.storage

from actlake.schemas.fragment import DerivedRecord, FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store import layout
from actlake.store.commitlog import Snapshot
from actlake.store.dtypes import STORAGE
from actlake.store.fragment import sha256
from actlake.store.fs import StoreFS

DERIVED = "_derived"


def derived_hooks(snap: Snapshot) -> dict[str, HookInfo]:
    """Derived hooks that cover every fragment of ``snap`` (name → HookInfo), in log order."""
    units = snap.unit_ids
    return {d.info.name: d.info for d in snap.derived if units and units <= set(d.checksums)}


def _metadata(info: HookInfo, rows: int, chunk_rows: int) -> dict[str, bytes]:
    """zarr.json of an empty array of the derived hook (zarr writes it; we only keep the bytes)."""
    objects: dict = {}
    group = zarr.group(store=zarr.storage.MemoryStore(store_dict=objects), zarr_format=3).create_group(layout.ACTS)
    group.create_array(info.array, shape=(rows, *info.shape), chunks=(chunk_rows, *info.shape),
                       dtype=STORAGE[info.dtype], fill_value=0, compressors=None,
                       attributes={"actlake_hook": info.name, "actlake_dtype": info.dtype},
                       config={"write_empty_chunks": True})
    key = f"{layout.ACTS}/{info.array}/zarr.json"
    return {key: objects[key].to_bytes()}


def write_derived_fragment(store: StoreFS, rec: FragmentRecord, info: HookInfo, chunk_rows: int,
                           chunks: Iterable[np.ndarray]) -> str:
    """Write the derived array of one fragment; return the sha256 of its checksum file.

    Args:
        chunks: the fragment's rows chunk by chunk (``chunk_rows`` rows each, the last may be
            shorter), in the storage dtype of ``info``, shape ``[rows, *info.shape]``.
    Raises: ValueError if the chunks do not add up to the fragment's rows."""
    objects = _metadata(info, rec.num_rows, chunk_rows)
    rows = 0
    for c, a in enumerate(chunks):
        a = np.ascontiguousarray(a, dtype=STORAGE[info.dtype])
        if a.shape[0] < chunk_rows:
            a = np.concatenate([a, np.zeros((chunk_rows - a.shape[0], *a.shape[1:]), a.dtype)])
        objects[layout.chunk_key(info.array, c, 1 + len(info.shape))] = a.tobytes()
        rows += min(chunk_rows, rec.num_rows - c * chunk_rows)
    if rows != rec.num_rows:
        raise ValueError(f"derived hook {info.name}: {rows} rows for fragment {rec.path} of {rec.num_rows}")
    store.write_many({f"{rec.path}/{k}": v for k, v in objects.items()})
    sums = {k: [len(v), sha256(v)] for k, v in objects.items()}
    blob = json.dumps({"num_rows": rec.num_rows, "files": sums}, sort_keys=True).encode()
    store.write_bytes(f"{rec.path}/{DERIVED}/{info.array}.json", blob)
    return sha256(blob)


def check_derived_fragment(store: StoreFS, rec: FragmentRecord, d: DerivedRecord) -> list[str]:
    """Problems of one fragment's derived array against its commit ([] when intact)."""
    try:
        blob = store.read_bytes(f"{rec.path}/{DERIVED}/{d.info.array}.json")
    except FileNotFoundError:
        return [f"{rec.path}: derived hook {d.info.name}: checksum file missing"]
    if sha256(blob) != d.checksums.get(rec.unit_id):
        return [f"{rec.path}: derived hook {d.info.name}: checksum file does not match its commit"]
    errs = []
    for rel, (size, digest) in json.loads(blob)["files"].items():
        try:
            data = store.read_bytes(f"{rec.path}/{rel}")
        except FileNotFoundError:
            errs.append(f"{rec.path}/{rel}: missing")
            continue
        if len(data) != size or sha256(data) != digest:
            errs.append(f"{rec.path}/{rel}: checksum mismatch")
    return errs
