"""Submit and manage extraction jobs through the Ray Jobs API (``ray.job_submission``).

``submit(job, address)`` validates the spec locally, then asks the cluster's job server to run
``python -m actlake.service.driver --spec-env ACTLAKE_JOB_SPEC`` with the spec (JSON) in the runtime
env's ``env_vars`` (and an optional ``working_dir`` of local code).  Nothing is submitted when the spec
is malformed or the address cannot be reached.

Authentication (Ray >= 2.5x token auth): the client uses Ray's own mechanism: with
``RAY_AUTH_MODE=token`` it sends the token from ``RAY_AUTH_TOKEN``, ``RAY_AUTH_TOKEN_PATH`` or
``~/.ray/auth_token`` as ``Authorization: Bearer …``.  ``token=`` (CLI ``--token``) sets that header
explicitly instead.  Loopback test clusters run with ``RAY_AUTH_MODE=disabled``.

Progress of a job (running or finished) is read from the dataset it writes: the coordinator's
``_progress.json`` and the commit log (see :func:`job_progress`)."""
from __future__ import annotations

import asyncio
import contextlib
import json
import os
import time
from pathlib import Path
from typing import Any, Iterator

from actlake.schemas.errors import ActlakeError, ClusterError, JobSpecError
from actlake.schemas.job import JobSpec, load_job, parse_job

SPEC_ENV = "ACTLAKE_JOB_SPEC"
TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


def coerce_job(job: JobSpec | dict[str, Any] | str | Path) -> JobSpec:
    """A JobSpec from a spec, a dict of fields or a YAML/JSON path.  Raises JobSpecError."""
    try:
        if isinstance(job, JobSpec):
            spec = job
        elif isinstance(job, dict):
            spec = parse_job(job)
        else:
            spec = load_job(str(job))
        from actlake.service.coordinator import check_plan

        check_plan(spec)
        return spec
    except JobSpecError:
        raise
    except ActlakeError as e:
        if type(e) is ActlakeError:  # the loader's untyped "invalid job" / "not found" errors
            raise JobSpecError(str(e)) from None
        raise


@contextlib.contextmanager
def _api_address(address: str):
    """Ray lets RAY_ADDRESS override an explicit address; an explicit one wins here."""
    old = os.environ.get("RAY_API_SERVER_ADDRESS")
    os.environ["RAY_API_SERVER_ADDRESS"] = address
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("RAY_API_SERVER_ADDRESS", None)
        else:
            os.environ["RAY_API_SERVER_ADDRESS"] = old


def connect(address: str | None = None, token: str | None = None):
    """A ``JobSubmissionClient`` for ``address`` (default ``RAY_ADDRESS``), connection checked.

    Raises:
        ClusterError: no address, or the Jobs API at it cannot be reached (or refuses the token)."""
    from ray.job_submission import JobSubmissionClient

    address = address or os.environ.get("RAY_ADDRESS")
    if not address:
        raise ClusterError("no Ray address: give --address http://HEAD:8265 or set RAY_ADDRESS")
    headers = {"Authorization": f"Bearer {token}"} if token else None
    try:
        with _api_address(address):
            return JobSubmissionClient(address, headers=headers)
    except Exception as e:  # noqa: BLE001 - requests/Ray raise several kinds for one cause
        msg = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise ClusterError(f"cannot reach the Ray Jobs API at {address}: {msg}") from None


class JobHandle:
    """A submitted extraction job.

    Attributes:
        job_id: the Ray submission id (``raysubmit_…``).
        address: the Jobs API address it was submitted to."""

    def __init__(self, client: Any, job_id: str, address: str | None = None):
        self.client, self.job_id, self.address = client, job_id, address

    def __repr__(self) -> str:
        return f"JobHandle({self.job_id!r}, address={self.address!r})"

    def _info(self):
        try:
            return self.client.get_job_info(self.job_id)
        except RuntimeError as e:
            raise ClusterError(f"no job {self.job_id!r} at {self.address}: {str(e).splitlines()[0]}") from None

    def status(self) -> dict[str, Any]:
        """Ray state plus progress: ``state``, ``message``, ``out``, and (once the coordinator has
        written it) tokens done/total, tokens/s, units done/leased/left, workers per node, errors,
        ``eta_s``.  Raises ClusterError for an unknown job id."""
        info = self._info()
        meta = info.metadata or {}
        out = meta.get("actlake_out")
        s: dict[str, Any] = {"job_id": self.job_id, "state": str(info.status.value), "message": info.message,
                             "out": out, "entrypoint": info.entrypoint}
        if out:
            s.update(job_progress(out))
        return s

    def logs(self) -> str:
        """The driver's output so far (progress lines, errors)."""
        self._info()
        return self.client.get_job_logs(self.job_id)

    def follow(self) -> Iterator[str]:
        """Log chunks as they arrive, until the job ends."""
        self._info()
        agen = self.client.tail_job_logs(self.job_id)
        loop = asyncio.new_event_loop()
        try:
            while True:
                try:
                    yield loop.run_until_complete(agen.__anext__())
                except StopAsyncIteration:
                    return
        finally:
            loop.close()

    def cancel(self) -> bool:
        """Stop the job (its driver and workers).  Committed fragments stay; resubmitting resumes."""
        self._info()
        return bool(self.client.stop_job(self.job_id))

    def wait(self, timeout: float | None = None, poll_s: float = 1.0) -> str:
        """Block until the job ends; returns SUCCEEDED, FAILED or STOPPED.

        Raises:
            ClusterError: unknown job id, or still running after ``timeout`` seconds."""
        deadline = None if timeout is None else time.time() + timeout
        while True:
            state = str(self._info().status.value)
            if state in TERMINAL:
                return state
            if deadline is not None and time.time() > deadline:
                raise ClusterError(f"job {self.job_id} still {state} after {timeout:.0f}s")
            time.sleep(poll_s)


def job_progress(out: str, storage_options: dict | None = None) -> dict[str, Any]:
    """Progress of the job writing ``out``: the coordinator's last status, corrected by the commit
    log (authoritative for committed tokens and units).  Empty when the store does not exist yet."""
    from actlake.service.coordinator import PROGRESS_FILE
    from actlake.store.commitlog import CommitLog
    from actlake.store.fs import open_store

    try:
        store = open_store(out, storage_options)
        if not store.exists(""):
            return {}
        s: dict[str, Any] = {}
        if store.exists(PROGRESS_FILE):
            s = {k: v for k, v in json.loads(store.read_bytes(PROGRESS_FILE)).items() if k != "state"}
        snap = CommitLog(store).snapshot()
    except (ActlakeError, OSError, ValueError):
        return {}
    s["units_done"] = len(snap.fragments)
    s["tokens_done"] = sum(f.num_tokens for f in snap.fragments)
    s["rows"] = snap.num_rows
    return s


def submit(job: JobSpec | dict[str, Any] | str | Path, address: str | None = None, *,
           working_dir: str | None = None, token: str | None = None, wait: bool = False,
           python: str = "python", driver_args: str = "", submission_id: str | None = None) -> JobHandle:
    """Submit an extraction job to a Ray cluster through its Jobs API.

    Args:
        job: JobSpec, dict of its fields, or a YAML/JSON path (read here, shipped as JSON).
        address: Jobs API address ``http://HEAD:8265`` (default ``RAY_ADDRESS``).
        working_dir: a local folder shipped as the job's runtime-env ``working_dir`` (local code).
        token: Ray auth token sent as ``Authorization: Bearer``; default: Ray's own token lookup.
        wait: block until the job ends.
        python: interpreter on the cluster that has actlake installed.
        driver_args: extra flags for the driver (e.g. ``--detached --lease-s 120``).
    Returns:
        a JobHandle.
    Raises:
        JobSpecError: malformed spec (nothing submitted).  ClusterError: address unreachable.
    """
    from actlake.service.driver import coordinator_name

    spec = coerce_job(job)
    if working_dir is not None and not Path(working_dir).is_dir():
        raise JobSpecError(f"--working-dir {working_dir} is not a directory")
    client = connect(address, token)
    runtime_env: dict[str, Any] = {"env_vars": {SPEC_ENV: spec.model_dump_json(), "HF_HUB_OFFLINE": "1"}}
    if working_dir is not None:
        runtime_env["working_dir"] = str(working_dir)
    entrypoint = f"{python} -m actlake.service.driver --spec-env {SPEC_ENV} {driver_args}".strip()
    try:
        job_id = client.submit_job(entrypoint=entrypoint, runtime_env=runtime_env, submission_id=submission_id,
                                   metadata={"actlake_out": spec.out, "actlake_coordinator": coordinator_name(spec)})
    except RuntimeError as e:
        raise ClusterError(f"the Ray Jobs API refused the job: {str(e).splitlines()[0]}") from None
    handle = JobHandle(client, job_id, address or os.environ.get("RAY_ADDRESS"))
    if wait:
        handle.wait()
    return handle


def attach(job_id: str, address: str | None = None, token: str | None = None) -> JobHandle:
    """A handle to an existing job.  Raises ClusterError if the address or the job id is unknown."""
    h = JobHandle(connect(address, token), job_id, address or os.environ.get("RAY_ADDRESS"))
    h._info()
    return h


def list_jobs(address: str | None = None, token: str | None = None) -> list[dict[str, Any]]:
    """actlake jobs on the cluster (newest first): job id, state, out, start time (ms)."""
    client = connect(address, token)
    rows = []
    for j in client.list_jobs():
        meta = j.metadata or {}
        if "actlake_out" not in meta:
            continue
        rows.append({"job_id": j.submission_id, "state": str(j.status.value), "out": meta["actlake_out"],
                     "start_time": j.start_time, "message": j.message})
    return sorted(rows, key=lambda r: r["start_time"] or 0, reverse=True)
