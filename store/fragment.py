"""Immutable fragments: one zarr v3 group (an array per hook, rows × d) + provenance parquet.

Writers build the zarr objects in memory, checksum every object, then upload them, so the checksum
file describes exactly the bytes that were written.  Readers decode whole chunks directly from their
keys (no per-chunk listing, no metadata round trips); any zarr v3 reader can open a fragment too."""
from __future__ import annotations

import hashlib
import io
import json
from dataclasses import dataclass

import numcodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs

from actlake.schemas.errors import ActlakeError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store import layout
from actlake.store.dtypes import STORAGE
from actlake.store.fs import StoreFS


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _encode_zarr(arrays: dict[str, np.ndarray], hooks: dict[str, HookInfo], chunk_rows: int) -> dict[str, bytes]:
    objects: dict = {}
    store = zarr.storage.MemoryStore(store_dict=objects)
    group = zarr.group(store=store, zarr_format=3).create_group(layout.ACTS)
    for name, data in arrays.items():
        info = hooks[name]
        compressors = (
            zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle") if info.codec == "zstd" else None
        )
        arr = group.create_array(
            info.array,
            shape=data.shape,
            chunks=(chunk_rows, *data.shape[1:]),
            dtype=STORAGE[info.dtype],
            fill_value=0,
            compressors=compressors,
            attributes={"actlake_hook": name, "actlake_dtype": info.dtype},
            config={"write_empty_chunks": True},
        )
        if data.shape[0]:
            arr[...] = data
    return {k: v.to_bytes() for k, v in objects.items()}


def write_fragment(
    store: StoreFS,
    frag_path: str,
    arrays: dict[str, np.ndarray],
    provenance: pa.Table,
    hooks: dict[str, HookInfo],
    chunk_rows: int,
) -> str:
    """Write one fragment under ``frag_path``; return the sha256 of its checksum file.

    The checksum file is written last: a fragment without one is an incomplete attempt."""
    n = provenance.num_rows
    for name, a in arrays.items():
        if a.shape[0] != n:
            raise ValueError(f"hook {name}: {a.shape[0]} rows but provenance has {n}")
    objects = {f"{frag_path}/{k}": v for k, v in _encode_zarr(arrays, hooks, chunk_rows).items()}
    buf = io.BytesIO()
    pq.write_table(provenance, buf, compression="zstd")
    objects[f"{frag_path}/{layout.PROVENANCE}"] = buf.getvalue()
    store.write_many(objects)
    sums = {k[len(frag_path) + 1:]: [len(v), sha256(v)] for k, v in objects.items()}
    blob = json.dumps({"num_rows": n, "files": sums}, sort_keys=True).encode()
    store.write_bytes(f"{frag_path}/{layout.CHECKSUMS}", blob)
    return sha256(blob)


@dataclass
class FragmentReader:
    """Reads whole chunks and provenance of one committed fragment."""

    store: StoreFS
    record: FragmentRecord
    hooks: dict[str, HookInfo]
    chunk_rows: int

    @property
    def num_chunks(self) -> int:
        return -(-self.record.num_rows // self.chunk_rows)

    def chunk_rows_of(self, chunk: int) -> int:
        return min(self.chunk_rows, self.record.num_rows - chunk * self.chunk_rows)

    def _key(self, info: HookInfo, chunk: int) -> str:
        return f"{self.record.path}/{layout.chunk_key(info.array, chunk, 1 + len(info.shape))}"

    def read_chunk(self, hook: str, chunk: int) -> np.ndarray:
        """Rows of one chunk in the storage dtype, shape (rows_in_chunk, *shape)."""
        info = self.hooks[hook]
        key = self._key(info, chunk)
        try:
            raw = self.store.read_bytes(key)
        except FileNotFoundError:
            raise ActlakeError(f"store is damaged: missing chunk {key}") from None
        return decode_chunk(raw, info, self.chunk_rows)[: self.chunk_rows_of(chunk)]

    def read_rows(self, hook: str, chunk: int, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of one chunk.  Uncompressed chunks are read as a byte range (one read,
        nothing decoded); compressed chunks are read whole and decoded."""
        info = self.hooks[hook]
        if info.codec != "none":
            return self.read_chunk(hook, chunk)[lo:hi]
        key = self._key(info, chunk)
        rb = info.row_bytes
        try:
            raw = self.store.read_range(key, lo * rb, hi * rb)
        except FileNotFoundError:
            raise ActlakeError(f"store is damaged: missing chunk {key}") from None
        if len(raw) != (hi - lo) * rb:
            raise ActlakeError(f"store is damaged: chunk {key} is truncated")
        return np.frombuffer(raw, dtype=STORAGE[info.dtype]).reshape(hi - lo, *info.shape)

    def chunk_path(self, hook: str, chunk: int) -> str:
        """Where chunk ``chunk`` of ``hook`` lives (a local path on local stores)."""
        return self.store.path(self._key(self.hooks[hook], chunk))

    def read_rows_into(self, hook: str, chunk: int, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows [lo, hi) of one chunk written into ``out`` (contiguous, hi - lo rows).  On a local
        disk, uncompressed rows go from the page cache straight into ``out`` with one read."""
        info = self.hooks[hook]
        if info.codec == "none" and self.store.is_local:
            key = self._key(info, chunk)
            view = memoryview(out).cast("B")
            try:
                with open(self.store.path(key), "rb", buffering=0) as f:
                    f.seek(lo * info.row_bytes)
                    got = f.readinto(view)
            except FileNotFoundError:
                raise ActlakeError(f"store is damaged: missing chunk {key}") from None
            if got != len(view):
                raise ActlakeError(f"store is damaged: chunk {key} is truncated")
        else:
            out[...] = self.read_rows(hook, chunk, lo, hi)

    def read_provenance(self, columns: list[str] | None = None) -> pa.Table:
        try:
            with self.store.fs.open(self.store.path(f"{self.record.path}/{layout.PROVENANCE}"), "rb") as f:
                return pq.read_table(f, columns=columns)
        except FileNotFoundError:
            raise ActlakeError(f"store is damaged: missing provenance of {self.record.path}") from None


def decode_chunk(raw: bytes, info: HookInfo, chunk_rows: int) -> np.ndarray:
    """Decode one stored chunk (bytes codec, optional blosc/zstd) into a (chunk_rows, *shape) array."""
    if info.codec == "zstd":
        raw = numcodecs.Blosc().decode(raw)
    dt = STORAGE[info.dtype]
    expected = chunk_rows * int(np.prod(info.shape)) * dt.itemsize
    if len(raw) != expected:
        raise ActlakeError(f"store is damaged: chunk of {info.name} has {len(raw)} bytes, expected {expected}")
    return np.frombuffer(raw, dtype=dt).reshape(chunk_rows, *info.shape)
