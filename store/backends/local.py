"""Local disk (or any POSIX mount): atomic create by hard link, atomic writes by rename."""
from __future__ import annotations

import os
import uuid

from fsspec.implementations.local import LocalFileSystem

from actlake.store.backends.base import ObjectInfo, ObjectStore


def _write_tmp(path: str, data: bytes) -> str:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    tmp = f"{path}.tmp-{uuid.uuid4().hex}"
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    return tmp


def read_file_into(path: str, dst: memoryview, start: int = 0) -> int:
    """Bytes ``[start, start + len(dst))`` of the file ``path`` read into ``dst``; returns the file's size."""
    with open(path, "rb", buffering=0) as f:
        size = os.fstat(f.fileno()).st_size
        f.seek(start)
        got = 0
        while got < len(dst):
            n = f.readinto(dst[got:])
            if not n:
                break
            got += n
    return size


class LocalBackend(ObjectStore):
    """Objects are files under ``root``.  ``create`` writes a temp file and ``os.link``s it into place
    (the link fails atomically if the name exists; readers never see a half-written file), as
    zarr-python's ``_atomic_write`` does."""

    def __init__(self, root: str, uri: str | None = None):
        self.fs = LocalFileSystem()
        self.root = os.path.abspath(root).rstrip("/") or "/"
        self.uri = uri or self.root

    @property
    def supports_atomic_create(self) -> bool:
        return True

    @property
    def local_root(self) -> str:
        return self.root

    def read(self, key: str, start: int | None = None, end: int | None = None) -> bytes:
        with open(self.path(key), "rb") as f:
            if start:
                f.seek(start)
            return f.read() if end is None else f.read(max(0, end - (start or 0)))

    def read_into(self, key: str, dst: memoryview, start: int = 0) -> int:
        return read_file_into(self.path(key), dst, start)

    def exists(self, key: str) -> bool:
        return os.path.exists(self.path(key))

    def list(self, prefix: str) -> list[str]:
        try:
            return sorted(n for n in os.listdir(self.path(prefix)) if ".tmp-" not in n)
        except (FileNotFoundError, NotADirectoryError):
            return []

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        out = []
        top = self.path(prefix)
        for d, _, files in os.walk(top):
            for n in files:
                p = os.path.join(d, n)
                try:
                    st = os.stat(p)
                except FileNotFoundError:
                    continue
                out.append(ObjectInfo(os.path.relpath(p, self.root).replace(os.sep, "/"), st.st_size, st.st_mtime))
        return sorted(out, key=lambda o: o.key)

    def write(self, key: str, data: bytes) -> None:
        path = self.path(key)
        os.replace(_write_tmp(path, data), path)

    def write_many(self, items: dict[str, bytes]) -> None:
        # fragment files are new names under a fresh attempt directory: no temp + rename needed
        for key, data in items.items():
            path = self.path(key)
            os.makedirs(os.path.dirname(path), exist_ok=True)
            with open(path, "wb") as f:
                f.write(data)

    def create(self, key: str, data: bytes) -> bool:
        path = self.path(key)
        tmp = _write_tmp(path, data)
        try:
            os.link(tmp, path)
            return True
        except FileExistsError:
            return False
        finally:
            os.unlink(tmp)

    def delete(self, key: str) -> None:
        try:
            os.unlink(self.path(key))
        except FileNotFoundError:
            pass
        d = os.path.dirname(self.path(key))
        while d.startswith(self.root + "/") and d != self.root:  # drop emptied directories
            try:
                os.rmdir(d)
            except OSError:
                break
            d = os.path.dirname(d)
