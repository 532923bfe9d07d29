"""Any fsspec filesystem (``memory://``, ``az://``, ``hdfs://`` ...): no atomic create.

Every call goes through ``retry.with_retries`` so transient faults are retried in one place."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from actlake.store.backends.base import ObjectInfo, ObjectStore
from actlake.store.backends.retry import with_retries

T = TypeVar("T")


def _mtime(info: dict) -> float | None:
    for k in ("mtime", "LastModified", "last_modified", "created", "updated"):
        v = info.get(k)
        if v is None:
            continue
        if hasattr(v, "timestamp"):
            return float(v.timestamp())
        try:
            return float(v)
        except (TypeError, ValueError):
            return None
    return None


class FsspecBackend(ObjectStore):
    """A generic fsspec filesystem.  ``create`` is check-then-put: not atomic (single writer only)."""

    def __init__(self, fs: Any, root: str, uri: str):
        self.fs = fs
        self.root = root.rstrip("/") or "/"
        self.uri = uri

    @property
    def supports_atomic_create(self) -> bool:
        return False

    def _call(self, fn: Callable[[], T], what: str, key: str = "") -> T:
        return with_retries(fn, f"{self.uri.rstrip('/')}/{key}" if key else self.uri, what)

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        return self._call(lambda: self.fs.cat_file(self.path(key), start=start, end=end), "cannot read", key)

    def read_many(self, keys: list[str]) -> dict[str, bytes]:
        if len(keys) <= 1:
            return {k: self.read(k) for k in keys}
        paths = {self.path(k): k for k in keys}
        blobs = self._call(lambda: self.fs.cat(list(paths), on_error="raise"), "cannot read")
        return {paths[p]: blobs[p] for p in paths}

    def exists(self, key: str) -> bool:
        return self._call(lambda: self.fs.exists(self.path(key)), "cannot stat", key)

    def list(self, prefix: str) -> list[str]:
        def ls() -> list[str]:
            try:
                self.fs.invalidate_cache(self.path(prefix))
                entries = self.fs.ls(self.path(prefix), detail=False)
            except FileNotFoundError:
                return []
            base = self.path(prefix).rstrip("/")
            return sorted({e.rstrip("/").rsplit("/", 1)[-1] for e in entries if e.rstrip("/") != base})
        return self._call(ls, "cannot list", prefix)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        def find() -> list[ObjectInfo]:
            self.fs.invalidate_cache(self.path(prefix))
            try:
                found = self.fs.find(self.path(prefix), detail=True)
            except FileNotFoundError:
                return []
            root = self.root.rstrip("/") + "/"
            return sorted((ObjectInfo(p[len(root):] if p.startswith(root) else p, int(i.get("size") or 0), _mtime(i))
                           for p, i in found.items() if i.get("type", "file") == "file"), key=lambda o: o.key)
        return self._call(find, "cannot list", prefix)

    def write(self, key: str, data: bytes) -> None:
        self._call(lambda: self.fs.pipe_file(self.path(key), data), "cannot write", key)

    def write_many(self, items: dict[str, bytes]) -> None:
        if not items:
            return
        self._call(lambda: self.fs.pipe({self.path(k): v for k, v in items.items()}), "cannot write")

    def create(self, key: str, data: bytes) -> bool:
        if self.exists(key):
            return False
        self.write(key, data)
        return True

    def delete(self, key: str) -> None:
        def rm() -> None:
            try:
                self.fs.rm_file(self.path(key))
            except FileNotFoundError:
                pass
        self._call(rm, "cannot delete", key)

    def delete_many(self, keys: list[str]) -> None:
        def rm() -> None:
            try:
                self.fs.rm([self.path(k) for k in keys])
            except FileNotFoundError:  # some already gone: delete the rest one by one
                for k in keys:
                    self.delete(k)
        if keys:
            self._call(rm, "cannot delete")
