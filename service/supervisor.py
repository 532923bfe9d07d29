"""Elastic supervision of ModelWorker actors for one job (events as log lines, no UI).

State: ``workers`` maps a worker id to (actor, run ref, node id).  Every ``discover_s`` seconds the
alive nodes are listed and each node gets its slots (one worker per GPU; else one worker owning the
node's CPUs), pinned to it with a hard node-affinity strategy; so a node that joins mid-job gets work
at the next discovery.  A run ref that fails with ``RayActorError`` (worker process or node lost) →
``coordinator.release(worker)`` puts its leased units back in the queue; a slot on a live node is
refilled at the next discovery.  A ``RayTaskError`` carrying an ActlakeError (bad input) ends the job
with that error.  The job is done when the coordinator reports every unit committed.

The coordinator is pinned (hard affinity) to the head node: a worker node may be killed at any time,
the head's loss ends the cluster anyway.  A coordinator call that finds it temporarily unavailable
(``ActorUnavailableError``: a slow or restarting connection) is retried for ``COORD_RETRY_S``; one
whose actor died raises ``ClusterError`` (committed fragments are kept; resubmitting resumes)."""
from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from actlake.schemas.errors import ActlakeError, ClusterError
from actlake.schemas.job import JobSpec

MAX_FAILURES = 20  # worker losses tolerated per job before giving up (resubmit to continue)
NO_WORKER_TIMEOUT_S = 600.0  # fail when no worker can be placed for this long
PROGRESS_EVERY_S = 5.0
COORD_RETRY_S = 60.0  # how long a temporarily unavailable coordinator is waited for


def _unwrap(e: BaseException) -> BaseException:
    cause = getattr(e, "cause", None)
    return cause if isinstance(cause, ActlakeError) else e


class Supervisor:
    def __init__(self, job: JobSpec, storage_options: dict | None, probe: str | None, lease_s: float = 600.0,
                 discover_s: float = 2.0, log: Callable[[str], None] = print):
        self.job, self.storage_options, self.probe = job, storage_options, probe
        self.lease_s, self.discover_s, self.log = lease_s, discover_s, log
        self.workers: dict[str, tuple[Any, Any, str]] = {}
        self.failures = 0
        self._seq = 0
        self.coord: Any = None

    def start_coordinator(self, name: str, namespace: str, detached: bool) -> Any:
        """Create the named coordinator next to this driver, or re-attach to a live one."""
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from actlake.service.coordinator import Coordinator

        opts: dict[str, Any] = dict(name=name, namespace=namespace, get_if_exists=True, num_cpus=0,
                                    scheduling_strategy=NodeAffinitySchedulingStrategy(_head_node_id(),
                                                                                       soft=False))
        if detached:
            opts["lifetime"] = "detached"
        self.coord = ray.remote(Coordinator).options(**opts).remote(self.job, self.storage_options, self.lease_s)
        requeued = self._call("release_all")
        again = f": re-attached, {requeued} lease(s) requeued" if requeued else ""
        self.log(f"coordinator {namespace}/{name}{again}")
        return self.coord

    def _call(self, method: str, *args: Any) -> Any:
        """``ray.get(coordinator.method(*args))``, retrying while the actor is temporarily unavailable.

        Raises:
            ClusterError: the coordinator actor died (or stayed unreachable for ``COORD_RETRY_S``).
            ActlakeError: the coordinator refused the call (bad job, damaged store)."""
        import ray
        from ray.exceptions import ActorUnavailableError, RayActorError

        deadline = time.time() + COORD_RETRY_S
        while True:
            try:
                return ray.get(getattr(self.coord, method).remote(*args))
            except ActorUnavailableError:
                if time.time() > deadline:
                    raise ClusterError(f"the job's coordinator stayed unreachable for {COORD_RETRY_S:.0f}s; "
                                       "committed fragments are kept, resubmit the job to resume") from None
                time.sleep(1.0)
            except RayActorError as e:
                cause = _unwrap(getattr(e, "cause", None) or e)
                if isinstance(cause, ActlakeError):
                    raise cause from None
                first = (str(cause).strip().splitlines() or ["no message"])[0][:200]
                raise ClusterError(f"the job's coordinator died ({first}); committed fragments are kept, "
                                   "resubmit the job to resume") from None

    # -- placement -------------------------------------------------------------------------------------
    def _slots(self) -> dict[str, tuple[str, int, dict[str, Any], int | None]]:
        """node id → (ip, workers wanted, actor resources, torch threads) for every alive node."""
        import ray

        want_gpu = self.job.device == "auto" or self.job.device.startswith("cuda")
        out = {}
        for n in ray.nodes():
            if not n.get("Alive"):
                continue
            res = n.get("Resources", {})
            gpus, cpus = int(res.get("GPU", 0)), int(res.get("CPU", 0))
            if gpus and want_gpu:
                out[n["NodeID"]] = (n["NodeManagerAddress"], gpus, {"num_gpus": 1, "num_cpus": min(1, cpus)}, None)
            elif cpus >= 1 and not self.job.device.startswith("cuda"):
                out[n["NodeID"]] = (n["NodeManagerAddress"], 1, {"num_cpus": cpus}, cpus)
        return out

    def _spawn(self, node_id: str, ip: str, resources: dict, threads: int | None) -> tuple[str, Any]:
        import ray
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        from actlake.workers.model_worker import ModelWorker

        wid = f"w{self._seq}"
        self._seq += 1
        actor = ray.remote(max_restarts=0)(ModelWorker).options(
            scheduling_strategy=NodeAffinitySchedulingStrategy(node_id, soft=False), **resources,
        ).remote(self.job, wid, self.storage_options, threads)
        return wid, actor

    def _fill(self) -> int:
        cap = self.job.num_workers
        added = 0
        for node_id, (ip, n, res, threads) in self._slots().items():
            have = sum(1 for _, _, nid in self.workers.values() if nid == node_id)
            for _ in range(n - have):
                if cap is not None and len(self.workers) >= cap:
                    return added
                wid, actor = self._spawn(node_id, ip, res, threads)
                ref = actor.start.remote(self.coord, self.probe, self.lease_s)
                self.workers[wid] = (actor, ref, node_id)
                self.log(f"worker {wid} started on {ip}")
                added += 1
        return added

    def first_worker(self) -> tuple:
        """Start one worker and return its describe() (hooks, model, tokenizer) for the manifest."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        deadline = time.time() + NO_WORKER_TIMEOUT_S
        while not self._slots():
            if time.time() > deadline:
                raise ClusterError("no node of the cluster can run a model worker (no CPU/GPU resources)")
            time.sleep(self.discover_s)
        node_id, (ip, _, res, threads) = next(iter(self._slots().items()))
        wid, actor = self._spawn(node_id, ip, res, threads)
        try:
            described = ray.get(actor.describe.remote(self.probe))
        except (RayTaskError, RayActorError) as e:
            raise _unwrap(e) from None
        self.workers[wid] = (actor, actor.start.remote(self.coord, self.probe, self.lease_s), node_id)
        self.log(f"worker {wid} started on {ip}")
        return described

    # -- the loop --------------------------------------------------------------------------------------
    def supervise(self) -> dict:
        """Keep every node busy until the coordinator has committed every unit; returns finish()."""
        import ray
        from ray.exceptions import RayActorError, RayTaskError

        last_discover = last_progress = 0.0
        idle_since: float | None = None
        while True:
            now = time.time()
            if now - last_discover >= self.discover_s:
                self._fill()
                last_discover = now
            refs = {ref: wid for wid, (_, ref, _) in self.workers.items()}
            done, _ = ray.wait(list(refs), num_returns=1, timeout=0.5) if refs else ([], [])
            for ref in done:
                wid = refs[ref]
                del self.workers[wid]
                try:
                    ray.get(ref)
                    self.log(f"worker {wid} finished")
                except RayActorError:
                    self.failures += 1
                    requeued = self._call("release", wid)
                    self.log(f"worker {wid} lost; {requeued} unit(s) requeued")
                    if self.failures > MAX_FAILURES:
                        raise ClusterError(f"{self.failures} workers lost; committed fragments are kept, "
                                           "resubmit the job to resume") from None
                except RayTaskError as e:
                    raise _unwrap(e) from None
            if now - last_progress >= PROGRESS_EVERY_S:
                self.log(format_status(self._call("status")))
                last_progress = now
            if self._call("progress")["exhausted"]:
                break  # every unit committed (workers still pending placement are stopped below)
            if not self.workers:
                idle_since = idle_since or now
                if now - idle_since > NO_WORKER_TIMEOUT_S:
                    raise ClusterError("no model worker could run for "
                                       f"{NO_WORKER_TIMEOUT_S:.0f}s; resubmit the job to resume")
                time.sleep(min(self.discover_s, 0.5))
            else:
                idle_since = None
        result = self._call("finish")
        self.log(format_status(self._call("status")))
        return result

    def stop_workers(self) -> None:
        """Kill every model worker of this driver and wait until they are dead (none writes afterwards)."""
        from actlake.service.cluster import stop_actors

        stop_actors([actor for actor, _, _ in self.workers.values()])
        self.workers.clear()


def _head_node_id() -> str:
    """The alive head node's id (Ray marks it with the ``node:__internal_head__`` resource); the driver's
    own node when none is marked."""
    import ray

    for n in ray.nodes():
        if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {}):
            return n["NodeID"]
    return ray.get_runtime_context().get_node_id()


def format_status(s: dict) -> str:
    """One line of a coordinator status dict (see ``Coordinator.status``)."""
    unit = s.get("unit", "tokens")
    total = f"/{s['tokens_total']:,}" if s.get("tokens_total") is not None else ""
    eta = f", eta {s['eta_s']:.0f}s" if s.get("eta_s") is not None else ""
    left = s.get("units_left")
    nodes = ", ".join(f"{k}: {v}" for k, v in sorted(s.get("workers_per_node", {}).items())) or "none"
    return (f"progress: {s['tokens_done']:,}{total} {unit}, {s['tokens_per_s']:,.0f} {unit}/s, units "
            f"{s['units_done']} done / {s['units_leased']} leased / {'?' if left is None else left} left, "
            f"workers per node {{{nodes}}}, errors {len(s.get('errors', []))}{eta} [{s.get('state', '?')}]")
