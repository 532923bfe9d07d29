"""The driver a submitted extraction job runs: ``python -m actlake.service.driver SPEC``.

It joins the cluster (``--address``, default ``RAY_ADDRESS`` or ``auto``), creates or re-attaches to
the job's named coordinator (``actlake-coord-<job hash>`` in namespace ``actlake``), and supervises
ModelWorker actors elastically (:class:`service.supervisor.Supervisor`): nodes are re-discovered every
few seconds and each gets its workers (one per GPU, else one using the node's CPUs); a worker or a
node lost → its leases go back to the queue and other workers take them.  Progress goes to stdout
as one line every few seconds (the Ray job's logs) and to ``_progress.json`` in the dataset.
Killing the driver and submitting the same job again resumes from the commit log."""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
from typing import Callable

from actlake.schemas.errors import ActlakeError, JobSpecError
from actlake.schemas.job import JobSpec, load_job, parse_job
from actlake.store.fs import open_store
from actlake.store.manifest_io import write_manifest

NAMESPACE = "actlake"
SPEC_ENV = "ACTLAKE_JOB_SPEC"


def coordinator_name(job: JobSpec) -> str:
    """Deterministic actor name of a job: the same spec (content fields + out) → the same name."""
    ident = json.dumps(job.identity(), sort_keys=True, default=str).encode()
    return "actlake-coord-" + hashlib.sha256(ident).hexdigest()[:16]


def run_cluster_job(job: JobSpec, address: str | None = None, storage_options: dict | None = None,
                    detached: bool = False, lease_s: float = 600.0, discover_s: float = 2.0,
                    log: Callable[[str], None] = print) -> str:
    """Run (or resume) ``job`` on the Ray cluster at ``address`` with elastic workers; returns the URI.

    Args:
        job: the job spec.
        address: Ray address (``auto``, ``HOST:PORT``, ``ray://…``); None joins ``RAY_ADDRESS`` or ``auto``.
            When Ray is already initialised in this process, that connection is used.
        detached: create the coordinator with ``lifetime="detached"`` (it outlives this driver; a
            resubmitted driver re-attaches to it and requeues the old leases).
        lease_s: seconds a unit stays leased to a worker that stops renewing it.
        discover_s: seconds between node discoveries (nodes added mid-job get workers).
    Raises:
        ActlakeError subclasses for bad input (source, model, store location); ClusterError when
        the cluster cannot be reached or no worker can run for too long."""
    import ray

    from actlake.schemas.errors import ClusterError
    from actlake.service.preflight import preflight
    from actlake.service.cluster import stop_actors
    from actlake.service.runner import _clear, discard_failed_attempt, ensure_manifest, root_exists
    from actlake.service.supervisor import Supervisor

    from actlake.service.coordinator import check_plan

    check_plan(job)
    job = job.with_absolute_paths()  # actors do not share the driver's working directory
    store = open_store(job.out, storage_options)
    pre = preflight(job, store, address=address or "auto")
    existing, probe = pre.existing, pre.probe_image
    if existing is not None and existing.status == "complete":
        log(f"{job.out} is already complete ({existing.num_rows:,} rows); nothing to do")
        return job.out
    if not ray.is_initialized():
        os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
        try:
            ray.init(address=address or os.environ.get("RAY_ADDRESS") or "auto", namespace=NAMESPACE,
                     logging_level="WARNING", log_to_driver=True)
        except (ConnectionError, RuntimeError) as e:
            raise ClusterError(f"cannot join the Ray cluster at {address or 'auto'}: {e}") from None
    root_existed = root_exists(store)
    if pre.replace and existing is None:
        _clear(store)  # an earlier attempt that committed nothing: its location is reused
    sup = Supervisor(job, storage_options, probe, lease_s=lease_s, discover_s=discover_s, log=log)
    coord = sup.start_coordinator(coordinator_name(job), NAMESPACE, detached)
    try:
        described = sup.first_worker()
        manifest = ensure_manifest(job, store, existing, described)
        result = sup.supervise()
        manifest.status, manifest.num_rows, manifest.num_fragments = (
            "complete", result["num_rows"], result["num_fragments"])
        write_manifest(store, manifest)
    except BaseException:
        sup.stop_workers()
        # nothing to resume: the coordinator (even a detached one) is stopped too before the clean-up
        if discard_failed_attempt(store, existing, root_existed, stop=lambda: stop_actors([coord])):
            log(f"nothing was committed; {job.out} was removed")
        else:
            log("committed fragments are kept; resubmit the same job to resume")
        raise
    finally:
        sup.stop_workers()
    if detached:
        ray.kill(coord)  # the job is complete: nothing left to re-attach to
    log(f"done: {manifest.num_rows:,} rows in {manifest.num_fragments} fragments → {job.out}")
    return job.out


def _load_spec(path: str | None, env: str | None) -> JobSpec:
    if env:
        raw = os.environ.get(env)
        if not raw:
            raise JobSpecError(f"environment variable {env} holds no job spec")
        return parse_job(json.loads(raw))
    if path is None:
        raise JobSpecError("give a job spec file or --spec-env VAR")
    return load_job(path)


def main(argv: list[str] | None = None) -> int:
    """CLI of the driver (what ``actlake submit`` runs on the cluster).  Exit 0 on success, 2 on an
    ActlakeError (one ``error:`` line on stderr)."""
    p = argparse.ArgumentParser(prog="python -m actlake.service.driver", description=__doc__.splitlines()[0])
    p.add_argument("spec", nargs="?", help="job YAML/JSON file")
    p.add_argument("--spec-env", default=None, help=f"read the job spec (JSON) from this env var, e.g. {SPEC_ENV}")
    p.add_argument("--address", default=None, help="Ray address (default: RAY_ADDRESS or auto)")
    p.add_argument("--detached", action="store_true", help="coordinator outlives the driver")
    p.add_argument("--lease-s", type=float, default=600.0, help="lease expiry in seconds (default 600)")
    p.add_argument("--discover-s", type=float, default=2.0, help="seconds between node discoveries (default 2)")
    a = p.parse_args(argv)
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    try:
        job = _load_spec(a.spec, a.spec_env)
        run_cluster_job(job, a.address, detached=a.detached, lease_s=a.lease_s, discover_s=a.discover_s,
                        log=lambda s: print(s, flush=True))
    except ActlakeError as e:
        print(f"error: {e}", file=sys.stderr, flush=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
