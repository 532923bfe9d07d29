"""A bounded local-disk cache in front of a remote backend, so later epochs read from disk.

Only fragment objects (keys under ``fragments/``) are cached: they are immutable once written, so
a cached copy can never be stale; manifests and the commit log always go to the remote store.  On
the first read of an object the whole object is streamed to ``cache_dir`` (``fs.get_file``: memory
stays bounded by the client's block size, not the object size) and every later ranged read of it is
a local ``pread``.  Least-recently-used objects are evicted to keep the cache within
``cache_bytes``; objects larger than the cache are read remotely and not cached."""
from __future__ import annotations

import hashlib
import os
import threading
import uuid
from collections import OrderedDict

from actlake.store.backends.base import ObjectInfo, ObjectStore
from actlake.store.backends.local import read_file_into
from actlake.store.backends.retry import with_retries

CACHED_PREFIX = "fragments/"


class CachedBackend(ObjectStore):
    """Read-through LRU cache of whole fragment objects on local disk (``cache_bytes`` at most)."""

    def __init__(self, inner: ObjectStore, cache_dir: str, cache_bytes: int):
        self.inner = inner
        self.fs, self.root, self.uri = inner.fs, inner.root, inner.uri
        self.cache_bytes = int(cache_bytes)
        self.dir = os.path.join(os.path.abspath(cache_dir), hashlib.sha256(inner.uri.encode()).hexdigest()[:16])
        os.makedirs(self.dir, exist_ok=True)
        self._lock = threading.Lock()
        self._sizes: OrderedDict[str, int] = OrderedDict()  # cache file name → bytes, LRU first
        self._used = 0
        self._fetching: dict[str, threading.Lock] = {}
        found = []
        for n in os.listdir(self.dir):  # adopt what an earlier process cached
            p = os.path.join(self.dir, n)
            if ".tmp-" in n:
                os.unlink(p)
                continue
            st = os.stat(p)
            found.append((st.st_atime, n, st.st_size))
        for _, n, size in sorted(found):
            self._sizes[n] = size
            self._used += size
        self._evict()

    # capabilities: those of the remote store (the cache is only a read path)
    @property
    def supports_atomic_create(self) -> bool:
        return self.inner.supports_atomic_create

    def path(self, key: str) -> str:
        return self.inner.path(key)

    @property
    def cached_bytes(self) -> int:
        return self._used

    def _name(self, key: str) -> str:
        return hashlib.sha256(key.encode()).hexdigest()

    def _evict(self) -> None:
        with self._lock:
            while self._used > self.cache_bytes and self._sizes:
                n, size = self._sizes.popitem(last=False)
                self._used -= size
                try:
                    os.unlink(os.path.join(self.dir, n))
                except FileNotFoundError:
                    pass

    def _fetch(self, key: str, name: str) -> bool:
        """Stream ``key`` into the cache; False if it does not fit."""
        with self._lock:
            lock = self._fetching.setdefault(name, threading.Lock())
        with lock:
            if name in self._sizes:
                return True
            size = int(with_retries(lambda: self.fs.size(self.inner.path(key)), self.uri, "cannot stat"))
            if size > self.cache_bytes:
                return False
            dst = os.path.join(self.dir, name)
            tmp = f"{dst}.tmp-{uuid.uuid4().hex}"
            try:
                with_retries(lambda: self.fs.get_file(self.inner.path(key), tmp), self.uri, "cannot read")
                os.replace(tmp, dst)
            finally:
                if os.path.exists(tmp):
                    os.unlink(tmp)
            with self._lock:
                self._sizes[name] = size
                self._used += size
                self._fetching.pop(name, None)
        self._evict()
        return True

    def _cached_path(self, key: str) -> str | None:
        """The local copy of ``key`` (marked recently used; fetched on a miss), or None when it
        could not be cached."""
        name = self._name(key)
        with self._lock:
            hit = name in self._sizes
            if hit:
                self._sizes.move_to_end(name)
        return os.path.join(self.dir, name) if hit or self._fetch(key, name) else None

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        if not key.startswith(CACHED_PREFIX):
            return self.inner.read(key, start, end)
        path = self._cached_path(key)
        if path is not None:
            try:
                with open(path, "rb") as f:
                    if start:
                        f.seek(start)
                    return f.read() if end is None else f.read(max(0, end - (start or 0)))
            except FileNotFoundError:  # evicted meanwhile
                pass
        return self.inner.read(key, start, end)

    def read_into(self, key: str, dst: memoryview, start: int = 0) -> int | None:
        if not key.startswith(CACHED_PREFIX):
            return self.inner.read_into(key, dst, start)
        path = self._cached_path(key)
        if path is not None:
            try:
                return read_file_into(path, dst, start)
            except FileNotFoundError:  # evicted meanwhile
                pass
        return self.inner.read_into(key, dst, start)

    def _forget(self, key: str) -> None:
        name = self._name(key)
        with self._lock:
            size = self._sizes.pop(name, None)
            if size is not None:
                self._used -= size
        try:
            os.unlink(os.path.join(self.dir, name))
        except FileNotFoundError:
            pass

    # everything else goes to the remote store (writes drop any cached copy first)
    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str) -> list[str]:
        return self.inner.list(prefix)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        return self.inner.list_objects(prefix)

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        return self.inner.read_many(keys)

    def write(self, key: str, data: bytes) -> None:
        self._forget(key)
        self.inner.write(key, data)

    def write_many(self, items: dict[str, bytes]) -> None:
        for k in items:
            self._forget(k)
        self.inner.write_many(items)

    def create(self, key: str, data: bytes) -> bool:
        return self.inner.create(key, data)

    def delete(self, key: str) -> None:
        self._forget(key)
        self.inner.delete(key)

    def delete_many(self, keys: list[str]) -> None:
        for k in keys:
            self._forget(k)
        self.inner.delete_many(keys)
