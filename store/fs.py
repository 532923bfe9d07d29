"""A dataset root on some object store: the thin facade the format code uses.

``StoreFS`` wraps one ``backends.ObjectStore`` and keeps the names the loader and the writers use
(``fs``, ``root``, ``uri``, ``is_local``, ``path``, ``read_bytes``, ``write_bytes``, ``write_many``,
``put_if_absent``, ``listdir``, ``exists``).  It never branches on the backend's class: capabilities
(``supports_atomic_create``, ``local_root``) say what the backend can do."""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from actlake.store.backends import ObjectInfo, ObjectStore, open_backend


@dataclass
class StoreFS:
    """A backend plus the dataset's URI.  ``fs``/``root`` are the backend's fsspec filesystem and
    root path, for libraries that want an fsspec handle (pyarrow, zarr)."""

    backend: ObjectStore

    @property
    def fs(self) -> Any:
        return self.backend.fs

    @property
    def root(self) -> str:
        return self.backend.root

    @property
    def uri(self) -> str:
        return self.backend.uri

    def path(self, rel: str) -> str:
        return self.backend.path(rel)

    @property
    def is_local(self) -> bool:
        """True when objects are plain local files (``backend.local_root`` is set)."""
        return self.backend.local_root is not None

    @property
    def supports_atomic_create(self) -> bool:
        return self.backend.supports_atomic_create

    def exists(self, rel: str) -> bool:
        return self.backend.exists(rel)

    def read_bytes(self, rel: str) -> bytes:
        """Whole object.  Raises FileNotFoundError if missing, StorageError on a storage fault."""
        return self.backend.read(rel)

    def read_range(self, rel: str, start: int, end: int) -> bytes:
        """Bytes [start, end) of one object (one ranged GET on object stores)."""
        return self.backend.read(rel, start, end)

    def read_range_into(self, rel: str, start: int, dst: memoryview) -> int | None:
        """Bytes [start, start + len(dst)) of one object into ``dst`` (S3: one ranged GET read
        straight into it); returns the object's size where the read tells it (see ``ObjectStore.read_into``)."""
        return self.backend.read_into(rel, dst, start)

    def read_many(self, rels: list[str]) -> dict[str, bytes]:
        return self.backend.read_many(rels)

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object; atomic (temp + rename) on local disks, a single PUT elsewhere."""
        self.backend.write(rel, data)

    def write_many(self, items: dict[str, bytes]) -> None:
        """Write many objects of one fragment (parallel PUTs on object stores)."""
        self.backend.write_many(items)

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` only if nobody has; return False if it already exists.

        Atomic where ``supports_atomic_create`` (hard link, conditional PUT); check-then-put
        elsewhere, which the commit log only uses under its single-writer lease."""
        return self.backend.create(rel, data)

    def listdir(self, rel: str) -> list[str]:
        """Base names under ``rel`` ([] if it does not exist)."""
        return self.backend.list(rel)

    def list_objects(self, rel: str) -> list[ObjectInfo]:
        return self.backend.list_objects(rel)

    def delete(self, rel: str) -> None:
        self.backend.delete(rel)

    def delete_many(self, rels: list[str]) -> None:
        self.backend.delete_many(rels)


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> StoreFS:
    """Resolve a path or fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``) to a StoreFS.

    Raises:
        StoreLocationError: empty URI or an unknown protocol.
        StorageError: the store cannot be reached or accessed (bad endpoint, no bucket, denied)."""
    return StoreFS(open_backend(uri, storage_options))
