"""Run an extraction job on Ray: preflight, manifest, workers, progress, exactly-once commits."""
from __future__ import annotations

import datetime as _dt
import os
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from actlake.schemas.errors import ClusterError, StoreLocationError
from actlake.schemas.job import JobSpec
from actlake.schemas.manifest import Manifest
from actlake.service.cluster import ensure_ray, stop_actors
from actlake.service.preflight import Preflight, check_cluster_device, preflight
from actlake.store import layout
from actlake.store.fs import StoreFS, open_store
from actlake.store.manifest_io import write_manifest
from actlake.workers.sources import list_images

TEXT_PROVENANCE = ["row_id", "doc_id", "context_id", "context_pos", "doc_pos", "token_id"]
VISION_PROVENANCE = ["row_id", "doc_id", "image_id", "context_id", "context_pos", "patch_row", "patch_col",
                     "token_type", "label"]
MAX_RESTARTS_PER_WORKER = 3


def _unwrap(e: BaseException) -> BaseException:
    """Ray wraps remote exceptions (``RayTaskError``, ``ActorDiedError`` of a failed constructor); return
    the original exception raised in the worker (typed ActlakeError or not), or ``e`` if none is held."""
    seen = 0
    while seen < 8:
        cause = getattr(e, "cause", None)
        if not isinstance(cause, BaseException) or cause is e:
            return e
        e, seen = cause, seen + 1
    return e


def _clear(store: StoreFS) -> None:
    """Delete an actlake job dataset (fragments, then the commit log, the manifest last)."""
    for rel in (layout.FRAGMENTS, layout.COMMITS, layout.MANIFEST):
        if store.exists(rel):
            store.fs.rm(store.path(rel), recursive=True)


def root_exists(store: StoreFS) -> bool:
    """Whether a local store's root directory exists (object stores have no directories: True)."""
    root = store.backend.local_root
    return root is None or os.path.isdir(root)


def discard_failed_attempt(store: StoreFS, existing: Manifest | None, root_existed: bool,
                           stop: Callable[[], None] | None = None) -> bool:
    """After a job failed (or was interrupted) with its workers stopped: if it was a new job and
    nothing was committed, call ``stop`` (actors that could still write) and delete what the attempt
    wrote (manifest, empty commit log, uncommitted fragment files, progress file) so no empty dataset
    is left visible, and the local root directory when this attempt created it.

    Returns True if the attempt was removed, False if committed fragments (or an earlier dataset) are
    kept for resume.  Never raises: the store itself may be what failed, and the job's own error is
    the one to report."""
    from actlake.service.coordinator import PROGRESS_FILE
    from actlake.store.commitlog import CommitLog

    if existing is not None:
        return False
    try:
        if CommitLog(store).snapshot().fragments:
            return False
        if stop is not None:
            stop()
        _clear(store)
        if store.exists(PROGRESS_FILE):
            store.delete(PROGRESS_FILE)
    except Exception:  # noqa: BLE001 - see above
        return False
    root = store.backend.local_root
    if root is not None and not root_existed:
        try:
            os.rmdir(root)
        except OSError:  # not empty (the user's own files) or already gone
            pass
    return True


def ensure_manifest(job: JobSpec, store: StoreFS, existing: Manifest | None, described: tuple) -> Manifest:
    """The manifest of a new job (written now), or the checked existing one of a resumed job.

    ``described`` is the first worker's ``describe()`` result: (hook infos, model info, tokenizer info).
    Used by the embedded runner and the cluster driver alike.

    Raises:
        StoreLocationError: the model's hooks or weights differ from those the dataset was started with."""
    infos, model_info, tok_info = described
    if existing is not None:
        if {k: v.model_dump() for k, v in infos.items()} != {k: v.model_dump() for k, v in existing.hooks.items()}:
            raise StoreLocationError(f"{job.out}: the model's hooks no longer match the stored dataset; "
                                     "choose another --out or pass --overwrite")
        if existing.model.weights_sha256 and existing.model.weights_sha256 != model_info.weights_sha256:
            raise StoreLocationError(f"{job.out}: model weights differ from the ones the dataset was started with; "
                                     "choose another --out or pass --overwrite")
        return existing
    manifest = Manifest(
        created_at=_dt.datetime.now(_dt.timezone.utc).isoformat(), model=model_info, tokenizer=tok_info,
        hooks=infos, job=job, chunk_rows=job.chunk_rows, row_shuffle=job.shuffle_rows,
        provenance_columns=VISION_PROVENANCE if job.is_vision else
        TEXT_PROVENANCE + (["label"] if job.data.label_field else []),
    )
    write_manifest(store, manifest)
    return manifest


def _plan_workers(job: JobSpec) -> tuple[int, dict[str, Any], int]:
    """(workers, Ray resources per worker, torch threads per CPU worker) for the connected cluster.

    Raises:
        JobSpecError: ``--device cuda…`` on a cluster without GPUs.
    """
    import ray

    res = ray.cluster_resources()
    gpus = int(res.get("GPU", 0))
    check_cluster_device(job, gpus)
    if gpus and (job.device == "auto" or job.device.startswith("cuda")):
        n = job.num_workers or max(gpus, 1)
        return n, {"num_gpus": 1, "num_cpus": 1}, 0
    cpus = int(res.get("CPU", os.cpu_count() or 1))
    n = job.num_workers or 1
    per = max(1, cpus // n)
    return n, {"num_cpus": per}, per


def _rate(r: float) -> str:
    """A rate with enough digits: 0.47 images/s, 12.3 images/s, 1,234 tokens/s."""
    return f"{r:,.0f}" if r >= 100 else f"{r:.3g}"


def run_job(job: JobSpec, address: str | None = None, storage_options: dict | None = None,
            console: Console | None = None, overwrite: bool = False) -> str:
    """Run or resume ``job`` and return its output URI.

    Every check that needs no model runs first (``service/preflight.py``); the hook probe runs in the
    first worker; only then is the manifest written.  A location whose earlier attempt committed nothing
    is reused; ``overwrite`` deletes an existing actlake job dataset at ``job.out`` (after the model and
    hooks are known to work) and starts again.

    Raises:
        StoreLocationError, StoreDamagedError, SourceError, ModelError, HookError, JobSpecError,
        ClusterError: bad input, found before anything is written.
        ActlakeError (any subclass) raised inside a worker, re-raised as its own type.
    """
    console = console or Console(stderr=True)
    job = job.with_absolute_paths()  # Ray workers do not share this process's working directory
    store = open_store(job.out, storage_options)
    pre = preflight(job, store, address=address, overwrite=overwrite)
    if pre.existing is not None and pre.existing.status == "complete":
        console.print(f"[green]{job.out} is already complete[/] ({pre.existing.num_rows:,} rows); nothing to do")
        return job.out
    root_existed = root_exists(store)
    started = ensure_ray(address)
    try:
        return _run(job, store, pre, storage_options, console)
    except BaseException as e:
        removed = discard_failed_attempt(store, pre.existing, root_existed)  # _run stopped every actor
        if isinstance(e, KeyboardInterrupt):
            console.print("[yellow]interrupted[/]: " + (f"nothing was committed; {job.out} was removed" if removed
                                                       else "committed fragments are kept; re-run the same "
                                                       "command to resume"))
        raise
    finally:
        if started:
            import ray

            ray.shutdown()


def _run(job: JobSpec, store: StoreFS, pre: Preflight, storage_options: dict | None, console: Console) -> str:
    import ray

    from actlake.workers.model_worker import ModelWorker

    n_workers, resources, threads = _plan_workers(job)
    Worker = ray.remote(max_restarts=0)(ModelWorker).options(**resources)

    def spawn(i: int):
        w = Worker.remote(job, f"w{i}", storage_options, threads or None)
        return w, w.describe.remote(pre.probe_image)

    workers = [spawn(i) for i in range(n_workers)]
    actors = [w for w, _ in workers]  # every actor this run starts (stopped if the run fails)
    try:
        return _drive(job, store, pre, storage_options, console, workers, actors, spawn)
    except BaseException:
        stop_actors(actors)
        raise


def _drive(job: JobSpec, store: StoreFS, pre: Preflight, storage_options: dict | None, console: Console,
           workers: list, actors: list, spawn: Any) -> str:
    """The body of ``_run`` once the workers are spawned (``actors`` collects every actor started)."""
    import ray
    from ray.exceptions import RayActorError, RayTaskError

    from actlake.service.coordinator import Coordinator

    existing = pre.existing
    n_workers = len(workers)
    try:
        infos, model_info, tok_info = ray.get(workers[0][1])
        ray.get([d for _, d in workers[1:]])
    except (RayTaskError, RayActorError) as e:
        raise _unwrap(e) from None
    if existing is None and pre.replace:
        if pre.committed:
            console.print(f"[yellow]--overwrite[/]: deleting {pre.committed} committed fragment(s) at {job.out}")
        _clear(store)
    manifest = ensure_manifest(job, store, existing, (infos, model_info, tok_info))
    coord = ray.remote(Coordinator).options(num_cpus=0).remote(job, storage_options)
    actors.append(coord)
    running = {w.run.remote(coord): (i, w) for i, (w, _) in enumerate(workers)}
    restarts = 0
    total = job.max_images if job.is_vision else job.max_tokens
    if job.is_vision and total is None:
        total = len(list_images(job.data))
    unit = "images" if job.is_vision else "tokens"
    t0 = time.time()
    with Progress(
        TextColumn("[bold]extract[/]"), BarColumn(), MofNCompleteColumn(), TextColumn(unit),
        TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
        console=console, disable=not job.progress, transient=False,
    ) as bar:
        task = None
        while running:
            done, _ = ray.wait(list(running), num_returns=1, timeout=0.5)
            for ref in done:
                i, w = running.pop(ref)
                try:
                    ray.get(ref)
                except RayActorError:
                    requeued = ray.get(coord.release.remote(f"w{i}"))
                    restarts += 1
                    if restarts > MAX_RESTARTS_PER_WORKER * n_workers:
                        raise ClusterError("too many worker failures; committed fragments are kept, "
                                           "re-run to resume") from None
                    console.print(f"[yellow]worker w{i} died[/]; {requeued} unit(s) re-queued, restarting it")
                    nw, d = spawn(i)
                    actors.append(nw)
                    ray.get(d)
                    running[nw.run.remote(coord)] = (i, nw)
                except RayTaskError as e:
                    raise _unwrap(e) from None
            p = ray.get(coord.progress.remote())
            done_units = p["tokens_before"] + p["tokens_done"]
            if task is None:
                task = bar.add_task("extract", total=total, completed=p["tokens_before"], rate="")
            rate = p["tokens_done"] / max(time.time() - t0, 1e-9)
            bar.update(task, completed=done_units, rate=f"{rate:,.0f} {unit}/s")
        if task is not None and total is not None:
            bar.update(task, total=max(total, done_units), completed=done_units)
    result = ray.get(coord.finish.remote())
    p = ray.get(coord.progress.remote())
    manifest.status, manifest.num_rows, manifest.num_fragments = "complete", result["num_rows"], result["num_fragments"]
    write_manifest(store, manifest)
    elapsed = time.time() - t0
    console.print(
        f"[green]done[/]: {result['num_rows']:,} rows in {result['num_fragments']} fragments "
        f"({p['tokens_done']:,} {unit} this run in {elapsed:.1f}s, "
        f"{_rate(p['tokens_done'] / max(elapsed, 1e-9))} {unit}/s; "
        f"{p['units_skipped']} unit(s) already committed) → {job.out}"
    )
    return job.out
