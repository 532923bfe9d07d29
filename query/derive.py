"""Project every row of a hook onto directions and commit the values as a derived hook.

Values are ``float32(float64(X) @ float64(D).T)``: the stored rows widened to float32 exactly (fp16 /
bf16 are exact in float32), multiplied in float64 and rounded once to float32.  Computed chunk by
chunk, but a row's value never depends on which other rows share its chunk, so the stored hook is
bit-equal to that expression evaluated on the whole array (tested against numpy).  Stored dtype:
float32, codec none.  See store/derived.py for the format.

One task per fragment (:func:`project_fragment`, a picklable top-level function of a
:class:`ProjectionJob` and a fragment record) writes that fragment's derived array and returns its
checksum digest; the tasks run on threads here or as Ray tasks (``service/query_ray.py``,
``RayExecutor.map``), and the driver alone commits the one log entry (:func:`write_projection`)."""
from __future__ import annotations

import hashlib
import os
import uuid
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlake.query.blas import one_blas_thread_per_task
from actlake.query.values import to_float32
from actlake.schemas.errors import QueryError
from actlake.schemas.fragment import DerivedRecord, FragmentRecord
from actlake.schemas.hooks import HookInfo, array_name
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.derived import write_derived_fragment
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest, write_manifest

Progress = Callable[[int, int], None]
Mapper = Callable[[Callable[[Any, Any], Any], Any, Sequence[Any], Sequence[int], "Progress | None"], list]
"""``mapper(fn, shared, items, sizes, progress) -> [fn(shared, item) for item in items]`` (in order);
``sizes[i]`` is what item i adds to ``progress(done, total)``."""


def project_rows(x: np.ndarray, d64: np.ndarray) -> np.ndarray:
    """Args: x float32 ``[n, d]``; d64 float64 ``[C, d]``.  Returns float32 ``[n, C]`` =
    ``float32(float64(x) @ d64.T)``."""
    return (x.astype(np.float64) @ d64.T).astype(np.float32)


def derived_info(name: str, source: HookInfo, width: int, attempt: str) -> HookInfo:
    """HookInfo of a float32 ``[width]`` derived hook named ``name``."""
    return HookInfo(name=name, module=source.module, io=source.io, array=f"{array_name(name)}~{attempt}",
                    shape=[width], dtype="float32", storage_dtype="float32", codec="none")


@dataclass(frozen=True)
class ProjectionJob:
    """What every fragment task of one projection needs (picklable; Ray ships it once).

    Attributes:
        store: the dataset root.  hooks: the dataset's hooks (name → HookInfo).  chunk_rows: rows
        per chunk.  hook: the source hook.  info: the derived hook's HookInfo (float32 ``[C]``).
        directions: float64 ``[C, d]``, C-contiguous.
    """

    store: StoreFS
    hooks: dict[str, HookInfo]
    chunk_rows: int
    hook: str
    info: HookInfo
    directions: np.ndarray


def project_fragment(job: ProjectionJob, rec: FragmentRecord) -> tuple[str, str]:
    """Write the derived array of one fragment (chunk by chunk, :func:`project_rows`).

    Returns: (the fragment's unit id, the sha256 of its derived checksum file).
    Raises: StoreDamagedError / ActlakeError from the reader (missing or truncated chunks)."""
    reader = FragmentReader(job.store, rec, job.hooks, job.chunk_rows)
    dtype = job.hooks[job.hook].dtype

    def chunks():
        for c in range(reader.num_chunks):
            x = to_float32(reader.read_chunk(job.hook, c), dtype)
            yield project_rows(x.reshape(x.shape[0], -1), job.directions)

    return rec.unit_id, write_derived_fragment(job.store, rec, job.info, job.chunk_rows, chunks())


def thread_mapper(threads: int | None = None) -> Mapper:
    """A :data:`Mapper` on ``threads`` threads (default: the cores, at most 8); progress in order."""

    def run(fn, shared, items, sizes, progress):
        out, done, total = [], 0, sum(sizes)
        n = max(1, min(threads or min(8, os.cpu_count() or 1), len(sizes)))
        with ThreadPoolExecutor(n) as pool, one_blas_thread_per_task(n):  # project's matmuls: query/blas.py
            for res, size in zip(pool.map(lambda it: fn(shared, it), items), sizes, strict=True):
                out.append(res)
                done += size
                if progress is not None:
                    progress(done, total)
        return out

    return run


def write_projection(store: StoreFS, snap: Snapshot, hooks: dict[str, HookInfo], chunk_rows: int, hook: str,
                     directions: np.ndarray, name: str, threads: int | None = None,
                     progress: Progress | None = None, mapper: Mapper | None = None) -> tuple[DerivedRecord, Snapshot]:
    """Compute the projection of every committed fragment and commit it as derived hook ``name``.

    Args:
        snap: the snapshot to cover (its fragments, in order).  hooks: the dataset's hooks.
        directions: float ``[C, d]`` (rows are directions).  threads: fragments written at once
            (thread mapper).  mapper: runs the fragment tasks (default :func:`thread_mapper`; the Ray
            executor's ``map`` runs them as Ray tasks).  Either way one log entry is committed, here.
    Returns: (the committed DerivedRecord, the snapshot after the commit).
    Raises: QueryError if ``name`` is already a hook or was committed concurrently;
        StoreDamagedError / ActlakeError from reads."""
    if name in hooks:
        raise QueryError(f"name: {name!r} is already a hook of this dataset")
    d64 = np.ascontiguousarray(directions, dtype=np.float64)
    attempt = uuid.uuid4().hex[:12]
    info = derived_info(name, hooks[hook], d64.shape[0], attempt)
    job = ProjectionJob(store, dict(hooks), chunk_rows, hook, info, d64)
    frags = list(snap.fragments)
    run = mapper or thread_mapper(threads)
    sums = dict(run(project_fragment, job, frags, [f.num_rows for f in frags], progress))
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
