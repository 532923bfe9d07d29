"""Garbage: attempt directories under ``fragments/`` that no commit references.

Workers write a fragment's files under ``fragments/u{unit}-{attempt}`` before the coordinator
commits it; a killed worker, a retried unit, or a duplicate attempt leaves a directory the log never
references.  ``find_garbage`` lists those whose newest object is older than ``older_than`` seconds
(so attempts of a job still running, which are being written or await their commit, are kept);
``vacuum`` deletes them.  The log is read *after* listing and again right before deleting, so a
fragment committed meanwhile is never touched."""
from __future__ import annotations

import time
from dataclasses import dataclass

from actlake.store import layout
from actlake.store.commitlog import CommitLog
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest


@dataclass(frozen=True)
class Garbage:
    """One uncommitted attempt directory: ``path`` relative to the root, its object keys, total
    ``bytes``, and ``age_s`` (seconds since its newest object was written; None if unknown)."""

    path: str
    keys: tuple[str, ...]
    bytes: int
    age_s: float | None


def find_garbage(store: StoreFS, older_than: float = 3600.0, now: float | None = None) -> list[Garbage]:
    """Uncommitted attempt directories whose newest object is at least ``older_than`` seconds old.

    Raises:
        NotADatasetError: no manifest at the store root (nothing is listed or deleted then).
        StorageError: the store cannot be read."""
    read_manifest(store)  # refuse to vacuum something that is not a dataset
    now = time.time() if now is None else now
    groups: dict[str, list] = {}
    for o in store.list_objects(layout.FRAGMENTS):
        parts = o.key.split("/")
        if len(parts) >= 3 and parts[0] == layout.FRAGMENTS:
            groups.setdefault(f"{parts[0]}/{parts[1]}", []).append(o)
    committed = {f.path.rstrip("/") for f in CommitLog(store).snapshot().fragments}
    out = []
    for path, objs in sorted(groups.items()):
        if path in committed:
            continue
        mtimes = [o.mtime for o in objs if o.mtime is not None]
        age = now - max(mtimes) if len(mtimes) == len(objs) else None
        if age is None or age < older_than:
            continue  # unknown or recent: may belong to a job still running
        out.append(Garbage(path, tuple(o.key for o in objs), sum(o.size for o in objs), age))
    return out


def vacuum(store: StoreFS, older_than: float = 3600.0, dry_run: bool = False) -> list[Garbage]:
    """Delete (unless ``dry_run``) what ``find_garbage`` finds; returns it."""
    found = find_garbage(store, older_than)
    if dry_run or not found:
        return found
    committed = {f.path.rstrip("/") for f in CommitLog(store).snapshot().fragments}
    found = [g for g in found if g.path not in committed]
    for g in found:
        store.delete_many(list(g.keys))
    return found
