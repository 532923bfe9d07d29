"""Project every row of a hook onto directions and commit the values as a derived hook.

Values are ``float32(float64(X) @ float64(D).T)``: the stored rows widened to float32 exactly (fp16 /
bf16 are exact in float32), multiplied in float64 and rounded once to float32.  Computed chunk by
chunk, but a row's value never depends on which other rows share its chunk, so the stored hook is
bit-equal to that expression evaluated on the whole array (tested against numpy).  Stored dtype:
float32, codec none.  See store/derived.py for the format."""
from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

import numpy as np
from actlake.query.values import to_float32
from actlake.schemas.errors import QueryError
from actlake.schemas.fragment import DerivedRecord, FragmentRecord
from actlake.schemas.hooks import HookInfo, array_name
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.derived import write_derived_fragment
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest, write_manifest


def project_rows(x: np.ndarray, d64: np.ndarray) -> np.ndarray:
    """Args: x float32 ``[n, d]``; d64 float64 ``[C, d]``.  Returns float32 ``[n, C]`` =
    ``float32(float64(x) @ d64.T)``."""
    return (x.astype(np.float64) @ d64.T).astype(np.float32)


def derived_info(name: str, source: HookInfo, width: int, attempt: str) -> HookInfo:
    """HookInfo of a float32 ``[width]`` derived hook named ``name``."""
    return HookInfo(name=name, module=source.module, io=source.io, array=f"{array_name(name)}~{attempt}",
                    shape=[width], dtype="float32", storage_dtype="float32", codec="none")


def write_projection(store: StoreFS, snap: Snapshot, hooks: dict[str, HookInfo], chunk_rows: int, hook: str,
                     directions: np.ndarray, name: str, threads: int | None = None,
                     progress: Callable[[int, int], None] | None = None) -> tuple[DerivedRecord, Snapshot]:
    """Compute the projection of every committed fragment and commit it as derived hook ``name``.

    Args:
        snap: the snapshot to cover (its fragments, in order).  hooks: the dataset's hooks.
        directions: float ``[C, d]`` (rows are directions).  threads: fragments written at once.
    Returns: (the committed DerivedRecord, the snapshot after the commit).
    Raises: QueryError if ``name`` is already a hook or was committed concurrently;
        StoreDamagedError / ActlakeError from reads."""
    if name in hooks:
        raise QueryError(f"name: {name!r} is already a hook of this dataset")
    src = hooks[hook]
    d64 = np.ascontiguousarray(directions, dtype=np.float64)
    attempt = uuid.uuid4().hex[:12]
    info = derived_info(name, src, d64.shape[0], attempt)
    total = sum(f.num_rows for f in snap.fragments)
    done = [0]

    def one(rec: FragmentRecord) -> tuple[str, str]:
        reader = FragmentReader(store, rec, hooks, chunk_rows)

        def chunks():
            for c in range(reader.num_chunks):
                x = to_float32(reader.read_chunk(hook, c), src.dtype)
                yield project_rows(x.reshape(x.shape[0], -1), d64)

        digest = write_derived_fragment(store, rec, info, chunk_rows, chunks())
        done[0] += rec.num_rows
        if progress is not None:
            progress(done[0], total)
        return rec.unit_id, digest

    with ThreadPoolExecutor(max(1, threads or min(8, os.cpu_count() or 1))) as pool:
        sums = dict(pool.map(one, snap.fragments))
    rec = DerivedRecord(info=info, source_hook=hook, attempt=attempt, checksums=sums,
                        recipe={"op": "project", "shape": list(d64.shape),
                                "directions_sha256": hashlib.sha256(d64.tobytes()).hexdigest()})
    manifest = read_manifest(store)
    if manifest.format_version < 2:  # readers that predate derived hooks refuse the store cleanly
        manifest.format_version = 2
        write_manifest(store, manifest)
    ok, snap = CommitLog(store).commit_derived(rec, snap)
    if not ok:
        raise QueryError(f"name: a derived hook {name!r} was committed by another writer")
    return rec, snap
