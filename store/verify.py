"""``actlake verify``: every committed byte against its checksum, plus completeness."""
from __future__ import annotations

import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from itertools import pairwise

from actlake.schemas.errors import ActlakeError, NotADatasetError
from actlake.schemas.fragment import FragmentRecord
from actlake.store import layout
from actlake.store.commitlog import CommitLog
from actlake.store.fragment import sha256
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest


@dataclass
class VerifyReport:
    fragments: int = 0
    files: int = 0
    bytes: int = 0  # bytes on storage of every committed fragment file (checksum files included)
    hook_bytes: dict[str, int] = field(default_factory=dict)  # per hook: its zarr arrays' bytes
    rows: int = 0
    complete: bool = False
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _check_fragment(store: StoreFS, rec: FragmentRecord, arrays: dict[str, str]
                    ) -> tuple[int, int, dict[str, int], list[str]]:
    """(files, bytes, bytes per hook, problems) of one committed fragment, every byte read."""
    errs: list[str] = []
    try:
        blob = store.read_bytes(f"{rec.path}/{layout.CHECKSUMS}")
    except FileNotFoundError:
        return 0, 0, {}, [f"{rec.path}: checksum file missing"]
    if sha256(blob) != rec.checksums_sha256:
        return 0, 0, {}, [f"{rec.path}: checksum file does not match its commit"]
    sums = json.loads(blob)
    if sums.get("num_rows") != rec.num_rows:
        errs.append(f"{rec.path}: {sums.get('num_rows')} rows on disk, {rec.num_rows} committed")
    nbytes = len(blob)
    per_hook = dict.fromkeys(arrays, 0)
    for rel, (size, digest) in sums["files"].items():
        try:
            data = store.read_bytes(f"{rec.path}/{rel}")
        except FileNotFoundError:
            errs.append(f"{rec.path}/{rel}: missing")
            continue
        nbytes += len(data)
        for name, array in arrays.items():
            if rel.startswith(f"{layout.ACTS}/{array}/"):
                per_hook[name] += len(data)
        if len(data) != size:
            errs.append(f"{rec.path}/{rel}: size {len(data)} != {size}")
        elif sha256(data) != digest:
            errs.append(f"{rec.path}/{rel}: checksum mismatch")
    if rec.total_bytes and rec.total_bytes != nbytes and not errs:
        errs.append(f"{rec.path}: {nbytes} bytes stored, {rec.total_bytes} recorded in its commit")
    return len(sums["files"]) + 1, nbytes, per_hook, errs


def committed_sizes(snap, hooks: dict) -> tuple[int, dict[str, int]]:
    """Bytes on storage of the committed fragments from their commit records (no reads): (total,
    per hook).  Equal to what ``verify_store`` measures by reading every file; fragments written
    before sizes were recorded count 0 (``verify`` reads them)."""
    total = sum(f.total_bytes for f in snap.fragments)
    per_hook = {name: sum(f.bytes.get(name, 0) for f in snap.fragments) for name in hooks}
    return total, per_hook


def verify_store(store: StoreFS, on_fragment: Callable[[int], None] | None = None, threads: int = 8) -> VerifyReport:
    """Check manifest, log, every fragment file, and that committed units cover the job exactly once.

    Damage is reported in ``VerifyReport.errors``; a location that holds no dataset at all raises.

    Raises:
        NotADatasetError: ``store`` is a plain file, a missing path, or a folder without a manifest."""
    rep = VerifyReport()
    try:
        manifest = read_manifest(store)
        snap = CommitLog(store).snapshot()
    except NotADatasetError:
        raise
    except ActlakeError as e:
        rep.errors.append(str(e))
        return rep
    rep.fragments, rep.rows = len(snap.fragments), snap.num_rows
    arrays = {name: h.array for name, h in manifest.hooks.items()}
    rep.hook_bytes = dict.fromkeys(arrays, 0)
    with ThreadPoolExecutor(threads) as pool:
        for n_files, n_bytes, per_hook, errs in pool.map(lambda r: _check_fragment(store, r, arrays), snap.fragments):
            rep.files += n_files
            rep.bytes += n_bytes
            for name, b in per_hook.items():
                rep.hook_bytes[name] += b
            rep.errors.extend(errs)
            if on_fragment:
                on_fragment(1)
    from actlake.store.derived import check_derived_fragment  # format 2: derived hooks

    for d in snap.derived:
        for rec in snap.fragments:
            if rec.unit_id in d.checksums:
                rep.errors.extend(check_derived_fragment(store, rec, d))
    indices = sorted(f.unit_index for f in snap.fragments)
    if len(set(indices)) != len(indices):
        rep.errors.append("a unit is committed more than once")
    ranges = sorted(f.source_range for f in snap.fragments)
    for (a0, a1), (b0, b1) in pairwise(ranges):
        if b0 < a1:
            rep.errors.append(f"source ranges overlap: [{a0},{a1}) and [{b0},{b1})")
    if manifest.status == "complete":
        if manifest.num_rows is not None and manifest.num_rows != snap.num_rows:
            rep.errors.append(f"manifest says {manifest.num_rows} rows, log has {snap.num_rows}")
        if indices != list(range(len(indices))):
            rep.errors.append("units missing from a job marked complete")
        rep.complete = True
    return rep
