"""The object-store contract every backend implements (after zarr-python's ``abc/store.py``).

Keys are ``/``-separated paths relative to the dataset root.  Missing objects raise
``FileNotFoundError``; transient faults are retried inside the backend (``retry.py``) and a fault
that outlives the retries, or a permanent one (no bucket, access denied), is a ``StorageError``.
Capabilities are properties so callers branch on what a backend can do, never on its class."""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: ``key`` relative to the root, ``size`` in bytes, ``mtime`` in POSIX seconds
    (None where the backend does not report one)."""

    key: str
    size: int
    mtime: float | None


class ObjectStore(ABC):
    """A flat key → bytes store rooted at ``root`` inside the fsspec filesystem ``fs``.

    ``fs``/``root`` stay public for libraries that take an fsspec filesystem (pyarrow, zarr)."""

    fs: Any
    root: str
    uri: str

    # ---- capabilities --------------------------------------------------------------------------
    @property
    @abstractmethod
    def supports_atomic_create(self) -> bool:
        """True if ``create`` is a real conditional write: of N racing creators exactly one wins."""

    @property
    def local_root(self) -> str | None:
        """Absolute directory holding the objects as plain files (enables ``preadv``), else None."""
        return None

    def path(self, key: str) -> str:
        """The backend-native path of ``key`` (a local path on local stores)."""
        return f"{self.root.rstrip('/')}/{key}" if key else self.root

    # ---- reads ---------------------------------------------------------------------------------
    @abstractmethod
    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        """Bytes ``[start, end)`` of ``key`` (whole object by default).  Raises FileNotFoundError."""

    def read_into(self, key: str, dst: memoryview, start: int = 0) -> int | None:
        """Bytes ``[start, start + len(dst))`` of ``key`` written into ``dst`` (a writable byte view).

        Returns the object's total size in bytes where the backend learns it from the read (S3:
        the ``Content-Range`` of the ranged GET), else None; an object that ends before
        ``start + len(dst)`` always returns its size (``dst`` is then only partly written).  Backends
        that can read straight into ``dst`` override this; by default it copies ``read``'s bytes.
        Raises FileNotFoundError, StorageError."""
        data = self.read(key, start, start + len(dst))
        dst[:len(data)] = data
        return start + len(data) if len(data) < len(dst) else None

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        """Whole objects, concurrently where the backend can.  Raises FileNotFoundError."""
        return {k: self.read(k) for k in keys}

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object (or, for ``""``/a prefix, anything) exists at ``key``."""

    @abstractmethod
    def list(self, prefix: str) -> list[str]:
        """Sorted base names directly under ``prefix`` (objects and sub-prefixes); [] if none."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object under ``prefix`` at any depth, sorted by key."""

    # ---- writes --------------------------------------------------------------------------------
    @abstractmethod
    def write(self, key: str, data: bytes) -> None:
        """Write a whole object (replacing it).  Readers see the old or the new bytes, never a mix."""

    def write_many(self, items: dict[str, bytes]) -> None:
        """Write several whole objects (concurrently where the backend can)."""
        for k, v in items.items():
            self.write(k, v)

    @abstractmethod
    def create(self, key: str, data: bytes) -> bool:
        """Create ``key`` only if absent; True if this call created it, False if it existed.

        Atomic only where ``supports_atomic_create``; elsewhere it is check-then-put, which is
        safe only under a single writer (the commit log enforces that with a writer lease)."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Delete one object; a missing object is not an error."""

    def delete_many(self, keys: list[str]) -> None:
        for k in keys:
            self.delete(k)

    def close(self) -> None:
        """Release connections.  The base class holds none, so by default there is nothing to do;
        backends that pool connections override this."""
        return None
