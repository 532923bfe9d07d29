"""fsspec access to a dataset root, with the two write primitives the format needs."""
from __future__ import annotations

import json
import os
import uuid
from dataclasses import dataclass
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from actlake.schemas.errors import ActlakeError


@dataclass
class StoreFS:
    """A filesystem plus the dataset's root path inside it."""

    fs: fsspec.AbstractFileSystem
    root: str
    uri: str

    def path(self, rel: str) -> str:
        return f"{self.root.rstrip('/')}/{rel}" if rel else self.root

    @property
    def is_local(self) -> bool:
        return isinstance(self.fs, LocalFileSystem)

    def exists(self, rel: str) -> bool:
        return self.fs.exists(self.path(rel))

    def read_bytes(self, rel: str) -> bytes:
        return self.fs.cat_file(self.path(rel))

    def read_json(self, rel: str) -> Any:
        return json.loads(self.read_bytes(rel))

    def write_bytes(self, rel: str, data: bytes) -> None:
        """Write a whole object; atomic (temp + rename) on local disks, a single PUT elsewhere."""
        path = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            os.replace(tmp, path)
        else:
            self.fs.pipe_file(path, data)

    def write_many(self, items: dict[str, bytes]) -> None:
        """Write many objects of one fragment (parallel PUTs on object stores)."""
        if self.is_local:
            for rel, data in items.items():
                path = self.path(rel)
                os.makedirs(os.path.dirname(path), exist_ok=True)
                with open(path, "wb") as f:
                    f.write(data)
        else:
            self.fs.pipe({self.path(k): v for k, v in items.items()})

    def put_if_absent(self, rel: str, data: bytes) -> bool:
        """Create ``rel`` only if nobody has; return False if it already exists.

        Local: write a temp file then hard-link it into place (link fails atomically if the name
        exists, and readers never see a half-written file).  Object stores: conditional PUT where
        the backend supports it, otherwise check-then-put (single coordinator makes that safe)."""
        path = self.path(rel)
        if self.is_local:
            os.makedirs(os.path.dirname(path), exist_ok=True)
            tmp = f"{path}.tmp-{uuid.uuid4().hex}"
            with open(tmp, "wb") as f:
                f.write(data)
                f.flush()
                os.fsync(f.fileno())
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                return False
            finally:
                os.unlink(tmp)
        if self.fs.exists(path):
            return False
        self.fs.pipe_file(path, data)
        return True

    def listdir(self, rel: str) -> list[str]:
        """Base names under ``rel`` ([] if it does not exist)."""
        try:
            entries = self.fs.ls(self.path(rel), detail=False)
        except FileNotFoundError:
            return []
        return sorted(e.rstrip("/").rsplit("/", 1)[-1] for e in entries)


def open_store(uri: str, storage_options: dict[str, Any] | None = None) -> StoreFS:
    """Resolve a path or fsspec URL (``s3://``, ``gs://``, ``file://``) to a StoreFS."""
    if not uri:
        raise ActlakeError("empty dataset URI")
    try:
        fs, root = fsspec.core.url_to_fs(uri, **(storage_options or {}))
    except (ImportError, ValueError) as e:
        raise ActlakeError(f"cannot open {uri!r}: {e}") from None
    if isinstance(fs, LocalFileSystem):
        root = os.path.abspath(root)
    return StoreFS(fs=fs, root=root.rstrip("/") or "/", uri=uri)
