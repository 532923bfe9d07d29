"""The commit log: an ordered list of immutable fragment commits (Delta-Lake style).

Commit ``v`` is the object ``_commits/{v:020d}.json``, created with put-if-absent, so two writers
can never both own a version and a half-written commit is never visible.  A unit id appears at most
once in a snapshot: the committer refuses a unit already in the log, which makes retries of a unit
(a re-run after a crash, a duplicate attempt) harmless.  Every CHECKPOINT_EVERY commits a
consolidated checkpoint lets a reader open a large store with two reads plus the recent tail.

Readers get a frozen ``Snapshot``; the one committer (the job coordinator, or a DatasetWriter)
extends a ``SnapshotBuilder`` in O(1) per commit.  A lost race re-reads the log tail and retries, at
most ``MAX_COMMIT_ATTEMPTS`` times with backoff and jitter, then raises ``CommitConflictError``
(pyiceberg's ``CommitFailedException`` and delta-rs's ``VersionAlreadyExists`` are the models).
On a backend without atomic create (``supports_atomic_create`` False) the committer first takes a
writer lease (``writer_lease.py``) so a second concurrent writer is refused instead of racing."""
from __future__ import annotations

import datetime as _dt
import json
import time
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from actlake.schemas.errors import CommitConflictError, StoreDamagedError
from actlake.schemas.fragment import Commit, DerivedRecord, FragmentRecord
from actlake.store import layout
from actlake.store.backends.retry import backoff
from actlake.store.fs import StoreFS
from actlake.store.writer_lease import WriterLease

MAX_COMMIT_ATTEMPTS = 64
BACKOFF = (0.005, 0.5)  # base, cap seconds between attempts after a lost race


@dataclass(frozen=True)
class Snapshot:
    """The committed fragments at one log version, in commit order, with global row offsets.

    Immutable: ``fragments`` is a tuple, ``unit_ids`` a frozenset, ``offsets`` a read-only int64
    array of length ``len(fragments) + 1`` (rows before each fragment); ``derived`` the derived-hook
    entries (format 2, store/derived.py) in log order."""

    version: int
    fragments: tuple[FragmentRecord, ...]
    unit_ids: frozenset[str] = field(repr=False)
    offsets: np.ndarray = field(repr=False)
    derived: tuple[DerivedRecord, ...] = field(default=(), repr=False)

    @classmethod
    def of(cls, version: int, fragments: list[FragmentRecord] | tuple[FragmentRecord, ...],
           derived: list[DerivedRecord] | tuple[DerivedRecord, ...] = ()) -> Snapshot:
        offsets = np.zeros(len(fragments) + 1, dtype=np.int64)
        np.cumsum([f.num_rows for f in fragments], out=offsets[1:])
        offsets.flags.writeable = False
        return cls(version, tuple(fragments), frozenset(f.unit_id for f in fragments), offsets, tuple(derived))

    @property
    def num_rows(self) -> int:
        return int(self.offsets[-1])

    def locate(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row ids (int64, any shape) → (fragment index, local row), both int64, same shape.

        Raises:
            IndexError: a row id outside [0, num_rows)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= self.num_rows):
            bad = row_ids[(row_ids < 0) | (row_ids >= self.num_rows)][0]
            raise IndexError(f"row id {int(bad)} out of range [0, {self.num_rows})")
        frag = np.searchsorted(self.offsets, row_ids, side="right") - 1
        return frag, row_ids - self.offsets[frag]


class SnapshotBuilder:
    """The committer's mutable view of the log (coordinator-only; never handed to readers).

    ``append`` is O(1); ``freeze()`` returns an immutable ``Snapshot`` of the current state."""

    def __init__(self, version: int = -1, fragments: list[FragmentRecord] | tuple[FragmentRecord, ...] = (),
                 derived: list[DerivedRecord] | tuple[DerivedRecord, ...] = ()):
        self.version = version
        self.fragments: list[FragmentRecord] = list(fragments)
        self.derived: list[DerivedRecord] = list(derived)
        self.unit_ids: set[str] = {f.unit_id for f in self.fragments}
        self.num_rows = sum(f.num_rows for f in self.fragments)

    @classmethod
    def from_snapshot(cls, snap: Snapshot | SnapshotBuilder) -> SnapshotBuilder:
        if isinstance(snap, SnapshotBuilder):
            return snap
        return cls(snap.version, snap.fragments, snap.derived)

    def append(self, record: FragmentRecord) -> None:
        self.fragments.append(record)
        self.unit_ids.add(record.unit_id)
        self.num_rows += record.num_rows
        self.version += 1

    def append_derived(self, record: DerivedRecord) -> None:
        self.derived.append(record)
        self.version += 1

    def freeze(self) -> Snapshot:
        return Snapshot.of(self.version, self.fragments, self.derived)


def _now() -> str:
    return _dt.datetime.now(_dt.UTC).isoformat()


class CommitLog:
    """Reads snapshots and appends commits to the log of one store."""

    def __init__(self, store: StoreFS):
        self.store = store
        self._lease: WriterLease | None = None

    def _read(self, after: int) -> tuple[int, list[FragmentRecord], list[DerivedRecord]]:
        """Commits with version > ``after``, contiguous from after + 1 (stops at the first gap):
        (last version read, fragment entries, derived-hook entries)."""
        versions = sorted(
            int(n[:-5]) for n in self.store.listdir(layout.COMMITS)
            if n.endswith(".json") and n[:-5].isdigit() and int(n[:-5]) > after
        )
        want = []
        for v in versions:
            if v != after + 1 + len(want):
                break
            want.append(v)
        names = [layout.commit_name(v) for v in want]
        blobs = self.store.read_many(names) if names else {}
        frags, derived = [], []
        for n in names:
            try:
                c = Commit.model_validate(json.loads(blobs[n]))
            except (ValidationError, json.JSONDecodeError, UnicodeDecodeError):
                raise StoreDamagedError(self.store.path(n), "unreadable commit") from None
            if c.fragment is not None:
                frags.append(c.fragment)
            elif c.derived is not None:
                derived.append(c.derived)
        return after + len(names), frags, derived

    def snapshot(self) -> Snapshot:
        """Latest snapshot: last checkpoint + the commits after it, stopping at the first gap.

        Raises:
            StoreDamagedError: an unreadable commit or checkpoint.
            StorageError: the store cannot be read."""
        base_version, fragments, derived = -1, [], []
        if self.store.exists(layout.LAST_CHECKPOINT):
            bad = (ValidationError, json.JSONDecodeError, UnicodeDecodeError, KeyError, ValueError, TypeError)
            try:
                ptr = self.store.read_json(layout.LAST_CHECKPOINT)
                name = layout.checkpoint_name(int(ptr["version"]))
            except bad:
                raise StoreDamagedError(self.store.path(layout.LAST_CHECKPOINT),
                                        "unreadable checkpoint pointer") from None
            try:  # the error names the file that is damaged: the pointer or the checkpoint it names
                cp = self.store.read_json(name)
                base_version = int(cp["version"])
                fragments = [FragmentRecord.model_validate(f) for f in cp["fragments"]]
                derived = [DerivedRecord.model_validate(d) for d in cp.get("derived", [])]
            except FileNotFoundError:
                raise StoreDamagedError(self.store.path(layout.LAST_CHECKPOINT),
                                        f"points to a missing checkpoint ({name})") from None
            except bad:
                raise StoreDamagedError(self.store.path(name), "unreadable checkpoint") from None
        version, tail, tail_derived = self._read(base_version)
        return Snapshot.of(version, fragments + tail, derived + tail_derived)

    def builder(self) -> SnapshotBuilder:
        """A committer's view of the latest log."""
        return SnapshotBuilder.from_snapshot(self.snapshot())

    def _refresh(self, b: SnapshotBuilder) -> SnapshotBuilder:
        version, tail, derived = self._read(b.version)
        for rec in tail:
            b.append(rec)
        b.derived.extend(derived)
        b.version = version
        return b

    def commit(self, record: FragmentRecord, snap: Snapshot | SnapshotBuilder) -> tuple[bool, SnapshotBuilder]:
        """Append ``record`` unless its unit is already committed.  Returns (committed, builder).

        ``snap`` is the caller's latest view; a builder is extended in place (a frozen snapshot is
        copied into a new builder once).  On a lost race the log tail is re-read and re-checked.

        Raises:
            CommitConflictError: still losing races after MAX_COMMIT_ATTEMPTS, or (on a backend
                without atomic create) another writer holds the writer lease."""
        b = SnapshotBuilder.from_snapshot(snap)
        if not self.store.supports_atomic_create:
            if self._lease is None:
                self._lease = WriterLease(self.store)
            self._lease.acquire()
        for attempt in range(MAX_COMMIT_ATTEMPTS):
            if record.unit_id in b.unit_ids:
                return False, b
            version = b.version + 1
            body = Commit(version=version, fragment=record, committed_at=_now()).model_dump_json().encode()
            if self.store.put_if_absent(layout.commit_name(version), body):
                b.append(record)
                if (version + 1) % layout.CHECKPOINT_EVERY == 0:
                    self.write_checkpoint(b)
                return True, b
            time.sleep(backoff(attempt, *BACKOFF))
            b = self._refresh(b)
        raise CommitConflictError(
            f"could not commit unit {record.unit_id} to {self.store.uri}: lost {MAX_COMMIT_ATTEMPTS} races "
            "for the next log version (too many concurrent committers)")

    def commit_derived(self, record: DerivedRecord, snap: Snapshot | SnapshotBuilder) -> tuple[bool, Snapshot]:
        """Append a derived-hook entry (format 2) unless a derived hook of that name is committed.
        Returns (committed, the frozen snapshot after it); bounded retries like ``commit``.

        Raises:
            CommitConflictError: still losing races after MAX_COMMIT_ATTEMPTS, or (on a backend
                without atomic create) another writer holds the writer lease."""
        b = SnapshotBuilder.from_snapshot(snap)
        b = SnapshotBuilder(b.version, b.fragments, b.derived)  # never extend the caller's builder
        if not self.store.supports_atomic_create:
            if self._lease is None:
                self._lease = WriterLease(self.store)
            self._lease.acquire()
        try:
            for attempt in range(MAX_COMMIT_ATTEMPTS):
                if any(d.info.name == record.info.name for d in b.derived):
                    return False, b.freeze()
                version = b.version + 1
                body = Commit(version=version, derived=record, committed_at=_now()).model_dump_json().encode()
                if self.store.put_if_absent(layout.commit_name(version), body):
                    b.append_derived(record)
                    if (version + 1) % layout.CHECKPOINT_EVERY == 0:
                        self.write_checkpoint(b)
                    return True, b.freeze()
                time.sleep(backoff(attempt, *BACKOFF))
                b = self._refresh(b)
        finally:
            self.close()
        raise CommitConflictError(
            f"could not commit derived hook {record.info.name} to {self.store.uri}: lost {MAX_COMMIT_ATTEMPTS} "
            "races for the next log version")

    def write_checkpoint(self, snap: Snapshot | SnapshotBuilder) -> None:
        """Consolidate the log up to ``snap.version`` so readers skip the per-commit files."""
        if snap.version < 0:
            return
        body: dict = {"version": snap.version, "fragments": [f.model_dump(mode="json") for f in snap.fragments]}
        if snap.derived:
            body["derived"] = [d.model_dump(mode="json") for d in snap.derived]
        self.store.write_bytes(layout.checkpoint_name(snap.version), json.dumps(body).encode())
        self.store.write_bytes(layout.LAST_CHECKPOINT, json.dumps({"version": snap.version}).encode())

    def close(self) -> None:
        """Release the writer lease, if this log took one."""
        if self._lease is not None:
            self._lease.release()
            self._lease = None
