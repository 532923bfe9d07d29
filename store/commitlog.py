"""The commit log: an ordered list of immutable fragment commits (Delta-Lake style).

Commit ``v`` is the object ``_commits/{v:020d}.json``, created with put-if-absent, so two writers
can never both own a version and a half-written commit is never visible.  A unit id appears at most
once in a snapshot: the committer refuses a unit already in the log, which makes retries of a unit
(a re-run after a crash, a duplicate attempt) harmless.  Every CHECKPOINT_EVERY commits a
consolidated checkpoint lets a reader open a large store with two reads plus the recent tail."""
from __future__ import annotations

import datetime as _dt
import json
from dataclasses import dataclass, field

import numpy as np
from pydantic import ValidationError

from actlake.schemas.errors import ActlakeError
from actlake.schemas.fragment import Commit, DerivedRecord, FragmentRecord
from actlake.store import layout
from actlake.store.fs import StoreFS


@dataclass
class Snapshot:
    """The committed fragments at one log version, in commit order, with global row offsets.

    Only the committer appends (in place, O(1) per commit); readers treat it as immutable."""

    version: int
    fragments: list[FragmentRecord]
    unit_ids: set[str] = field(default_factory=set, repr=False)
    derived: list[DerivedRecord] = field(default_factory=list, repr=False)  # format 2 entries, log order
    _offsets: list[int] = field(default_factory=lambda: [0], repr=False)

    @classmethod
    def of(cls, version: int, fragments: list[FragmentRecord], derived: list[DerivedRecord] | None = None) -> "Snapshot":
        snap = cls(-1, [])
        for f in fragments:
            snap._append(f)
        snap.derived = list(derived or [])
        snap.version = version
        return snap

    def _append(self, record: FragmentRecord) -> None:
        self.fragments.append(record)
        self.unit_ids.add(record.unit_id)
        self._offsets.append(self._offsets[-1] + record.num_rows)
        self.version += 1
        self.__dict__.pop("offsets", None)

    @property
    def offsets(self) -> np.ndarray:
        """Row offsets (len = fragments + 1), cached until the next append."""
        if "offsets" not in self.__dict__:
            self.__dict__["offsets"] = np.asarray(self._offsets, dtype=np.int64)
        return self.__dict__["offsets"]

    @property
    def num_rows(self) -> int:
        return self._offsets[-1]

    def locate(self, row_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Global row ids → (fragment index, local row)."""
        row_ids = np.asarray(row_ids, dtype=np.int64)
        if row_ids.size and (row_ids.min() < 0 or row_ids.max() >= self.num_rows):
            bad = row_ids[(row_ids < 0) | (row_ids >= self.num_rows)][0]
            raise IndexError(f"row id {int(bad)} out of range [0, {self.num_rows})")
        frag = np.searchsorted(self.offsets, row_ids, side="right") - 1
        return frag, row_ids - self.offsets[frag]


def _now() -> str:
    return _dt.datetime.now(_dt.timezone.utc).isoformat()


class CommitLog:
    def __init__(self, store: StoreFS):
        self.store = store

    def snapshot(self) -> Snapshot:
        """Latest snapshot: last checkpoint + the commits after it, stopping at the first gap."""
        base_version, fragments, derived = -1, [], []
        if self.store.exists(layout.LAST_CHECKPOINT):
            ptr = self.store.read_json(layout.LAST_CHECKPOINT)
            cp = self.store.read_json(layout.checkpoint_name(int(ptr["version"])))
            base_version = int(cp["version"])
            fragments = [FragmentRecord.model_validate(f) for f in cp["fragments"]]
            derived = [DerivedRecord.model_validate(d) for d in cp.get("derived", [])]
        versions = sorted(
            int(n[:-5]) for n in self.store.listdir(layout.COMMITS)
            if n.endswith(".json") and n[:-5].isdigit() and int(n[:-5]) > base_version
        )
        want = []
        for v in versions:
            if v != base_version + 1 + len(want):
                break
            want.append(v)
        if want:
            paths = [self.store.path(layout.commit_name(v)) for v in want]
            blobs = self.store.fs.cat(paths) if len(paths) > 1 else {paths[0]: self.store.fs.cat_file(paths[0])}
            for p in paths:
                try:
                    c = Commit.model_validate(json.loads(blobs[p]))
                except (ValidationError, json.JSONDecodeError):
                    raise ActlakeError(f"store is damaged: unreadable commit {p}") from None
                if c.fragment is not None:
                    fragments.append(c.fragment)
                elif c.derived is not None:
                    derived.append(c.derived)
        return Snapshot.of(base_version + len(want), fragments, derived)

    def commit(self, record: FragmentRecord, snap: Snapshot) -> tuple[bool, Snapshot]:
        """Append ``record`` unless its unit is already committed.  Returns (committed, snapshot).

        ``snap`` is the caller's latest view and is extended in place; on a lost race the log is
        re-read and re-checked."""
        while True:
            if record.unit_id in snap.unit_ids:
                return False, snap
            version = snap.version + 1
            body = Commit(version=version, fragment=record, committed_at=_now()).model_dump_json().encode()
            if self.store.put_if_absent(layout.commit_name(version), body):
                snap._append(record)
                if (version + 1) % layout.CHECKPOINT_EVERY == 0:
                    self.write_checkpoint(snap)
                return True, snap
            snap = self.snapshot()

    def commit_derived(self, record: DerivedRecord, snap: Snapshot) -> tuple[bool, Snapshot]:
        """Append a derived-hook entry unless a derived hook of that name is already committed.
        Returns (committed, snapshot re-read after the commit)."""
        while True:
            if any(d.info.name == record.info.name for d in snap.derived):
                return False, snap
            version = snap.version + 1
            body = Commit(version=version, derived=record, committed_at=_now()).model_dump_json().encode()
            if self.store.put_if_absent(layout.commit_name(version), body):
                snap = self.snapshot()
                if (version + 1) % layout.CHECKPOINT_EVERY == 0:
                    self.write_checkpoint(snap)
                return True, snap
            snap = self.snapshot()

    def write_checkpoint(self, snap: Snapshot) -> None:
        """Consolidate the log up to ``snap.version`` so readers skip the per-commit files."""
        if snap.version < 0:
            return
        body = {"version": snap.version, "fragments": [f.model_dump(mode="json") for f in snap.fragments]}
        if snap.derived:
            body["derived"] = [d.model_dump(mode="json") for d in snap.derived]
        self.store.write_bytes(layout.checkpoint_name(snap.version), json.dumps(body).encode())
        self.store.write_bytes(layout.LAST_CHECKPOINT, json.dumps({"version": snap.version}).encode())
