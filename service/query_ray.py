"""Ray executor for queries: one Ray task per plan item, partial states merged in plan order.

Runs exactly the code of the local executor (``actlake.query.scan.scan_item`` with the same
aggregate) in each task, so for the same plan the result equals ``LocalExecutor``'s bit for bit.
The scan context (store handle, fragment records, projection matrices) is put in the object store
once per query; tasks read their chunks directly from the store (local disk shared by the nodes, or
S3), never through the driver.  Reached from ``client/query.py`` through ``RAY_EXECUTOR``."""
from __future__ import annotations

from typing import Any

from actlake.query.local import Progress
from actlake.query.plan import PlanItem
from actlake.query.scan import ScanContext, scan_item
from actlake.schemas.errors import ClusterError


def _scan(ctx: ScanContext, item: PlanItem, agg: Any):
    return scan_item(ctx, item, agg)


def _call(fn: Any, shared: Any, item: Any):
    return fn(shared, item)


class RayExecutor:
    """Runs a query's plan items as Ray tasks.

    Args:
        address: ``"local"`` (an embedded single-node Ray on a loopback address, or the Ray this
            process already joined) or a cluster address (``HOST:PORT``, ``ray://…``, ``auto``).
        max_in_flight: tasks submitted at once (bounds the partial states held by the driver).
    Raises:
        ClusterError: the cluster cannot be reached.
    """

    def __init__(self, address: str, max_in_flight: int = 64):
        import ray

        from actlake.service.cluster import ensure_ray

        try:
            ensure_ray(None if address == "local" else address)
        except Exception as e:  # ConnectionError, RuntimeError, ValueError from ray.init
            raise ClusterError(f"address: cannot connect to Ray at {address!r}: {e}") from None
        self.ray = ray
        self.max_in_flight = max_in_flight
        self._remote = ray.remote(num_cpus=1)(_scan)
        self._call = ray.remote(num_cpus=1)(_call)

    def run(self, ctx: ScanContext, plan: list[PlanItem], agg: Any, progress: Progress | None = None) -> Any:
        """Same contract as ``LocalExecutor.run``: the merged (not finalized) state."""
        ray = self.ray
        ctx_ref, agg_ref = ray.put(ctx), ray.put(agg)
        total, done = sum(i.rows for i in plan), 0
        out = agg.zero()
        pending = [self._remote.remote(ctx_ref, item, agg_ref) for item in plan[: self.max_in_flight]]
        nxt = len(pending)
        for item in plan:
            state = ray.get(pending.pop(0))  # plan order: merges are deterministic
            if nxt < len(plan):
                pending.append(self._remote.remote(ctx_ref, plan[nxt], agg_ref))
                nxt += 1
            out = agg.merge(out, state)
            done += item.rows
            if progress is not None:
                progress(done, total)
        return out

    def map(self, fn: Any, shared: Any, items: list, sizes: list[int], progress: Progress | None = None) -> list:
        """``[fn(shared, item) for item in items]`` as one Ray task per item, results in item order
        (``query.derive.Mapper``: the per-fragment tasks of ``ds.query.project(..., address=)``).

        Args: fn: a picklable top-level function.  shared: put in the object store once.
            sizes: what each item adds to ``progress(done, total)`` (rows).
        Raises: whatever ``fn`` raised in a task (Ray re-raises it with the original type)."""
        ray = self.ray
        ref, fn_ref = ray.put(shared), ray.put(fn)
        total, done, out = sum(sizes), 0, []
        pending = [self._call.remote(fn_ref, ref, it) for it in items[: self.max_in_flight]]
        nxt = len(pending)
        for size in sizes:
            out.append(ray.get(pending.pop(0)))
            if nxt < len(items):
                pending.append(self._call.remote(fn_ref, ref, items[nxt]))
                nxt += 1
            done += size
            if progress is not None:
                progress(done, total)
        return out
