"""In-process executor: plan items on a thread pool, partial results merged in plan order (no Ray).

numpy releases the GIL in reads, casts, matmuls and reductions, so threads use every core."""
from __future__ import annotations

import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from actlake.query.aggregates import State
from actlake.query.plan import PlanItem
from actlake.query.scan import ScanContext, SelfScanning, scan_item

Progress = Callable[[int, int], None]  # (rows done, rows total)


def merge_in_order(agg: Any, states) -> State:
    """Fold partial states left to right (plan order), starting from ``agg.zero()``."""
    out = agg.zero()
    for s in states:
        out = agg.merge(out, s)
    return out


MATMUL_BOUND = 32  # flops per stored value above which a projection is left to BLAS's own threads


class LocalExecutor:
    """Runs plan items on ``threads`` threads (default: the machine's cores, at most 8; one thread
    when the projection is a large matmul — ≥ 16 directions or latents — which BLAS already spreads
    over the cores: two layers of threads oversubscribe them and cost ~20% more CPU, measured)."""

    def __init__(self, threads: int | None = None):
        self.explicit = threads is not None
        self.threads = threads or min(8, os.cpu_count() or 1)

    def threads_for(self, ctx: ScanContext | SelfScanning) -> int:
        """Threads for a query: the configured number, or 1 for matmul-bound projections."""
        p = getattr(ctx, "projection", None)
        if not self.explicit and p is not None and p.flops_per_row >= MATMUL_BOUND * p.width:
            return 1
        return self.threads

    def run(self, ctx: ScanContext | SelfScanning, plan: list[PlanItem], agg: Any,
            progress: Progress | None = None) -> State:
        """Scan every item and return the merged (not finalized) state.

        Args:
            ctx: what to read and compute; plan: items in row order; agg: a mergeable aggregate.
            progress: called as ``progress(rows_done, rows_total)`` after each item.
        """
        total = sum(i.rows for i in plan)
        done = 0
        out = agg.zero()
        with ThreadPoolExecutor(max(1, min(self.threads_for(ctx), len(plan)))) as pool:
            for item, state in zip(plan, pool.map(lambda it: scan_item(ctx, it, agg), plan), strict=True):
                out = agg.merge(out, state)
                done += item.rows
                if progress is not None:
                    progress(done, total)
        return out
