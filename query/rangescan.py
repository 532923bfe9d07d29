"""Scans over contiguous row ranges of row sources: two hooks at once (correlate, covariance, PCA)
and queries over joined datasets.

A :class:`RangeScan` is a scan context with its own ``scan(item, agg)``: ``query.scan.scan_item``
hands such contexts their plan items, so the thread executor and the Ray executor
(``service/query_ray.py``) run them unchanged and merge partial states in plan order.  Items are
row ranges ``[item.first_row, item.first_row + item.rows)`` of the row space (``query.plan``)."""
from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlake.query.aggregates import Block, State
from actlake.query.blas import one_blas_thread_per_task
from actlake.query.comoments import PairBlock
from actlake.query.plan import PlanItem, make_plan
from actlake.query.values import Projection


@dataclass
class RangeScan:
    """What a task reads and computes.

    Attributes:
        source_a: row source of ``hook_a`` (StoreRows or MappedRows).  proj_a: rows → values ``[n, p]``.
        source_b / hook_b / proj_b: the second set; ``hook_b`` None makes blocks single (``Block``).
        same: the second set is the first (auto-correlation, covariance): ``PairBlock.b`` is None.
        block_rows: rows read and folded at a time.  need_x: single blocks carry the full rows.
        cols: provenance columns over the whole row space (name → ``[num_rows]`` array; e.g. a
            join's ``context_id`` for top-k dedup, the ``by`` column of grouped stats), sliced into
            each single block's ``Block.cols``.
    """

    source_a: Any
    hook_a: str
    proj_a: Projection
    source_b: Any = None
    hook_b: str | None = None
    proj_b: Projection | None = None
    same: bool = False
    block_rows: int = 8192
    need_x: bool = False
    cols: dict[str, np.ndarray] = field(default_factory=dict)

    def scan(self, item: PlanItem, agg: Any) -> State:
        """Fold rows ``[item.first_row, item.first_row + item.rows)`` into ``agg.zero()``."""
        state = agg.zero()
        end = item.first_row + item.rows
        bufs_a: dict = {}
        bufs_b: dict = {}
        # pair scans over all units of a stored bf16/fp16 hook hand its stored rows to the
        # aggregate, which widens them slab by slab in cache (CoMoments.update)
        raw_a = self.hook_b is not None and self._stored(self.source_a, self.hook_a, self.proj_a)
        raw_b = self.hook_b is not None and not self.same and self._stored(self.source_b, self.hook_b, self.proj_b)
        dt_a = self.source_a.hooks[self.hook_a].dtype if raw_a else "float32"  # what PairBlock says it holds
        dt_b = self.source_b.hooks[self.hook_b].dtype if raw_b else "float32"
        for lo in range(item.first_row, end, self.block_rows):
            hi = min(end, lo + self.block_rows)
            self._prefetch(hi, min(end, hi + self.block_rows))  # the next block, read while this one computes
            rid = np.arange(lo, hi, dtype=np.int64)
            if raw_a:
                va = self.source_a.read(self.hook_a, lo, hi, bufs_a, raw=True)
            else:
                xa = self.source_a.read(self.hook_a, lo, hi, bufs_a)  # views of reused buffers
                va = self.proj_a(xa)
                if self.hook_b is None:
                    cols = {k: v[lo:hi] for k, v in self.cols.items()}
                    state = agg.update(state, Block(va, rid, xa if self.need_x else None, cols))
                    continue
            if self.same:
                state = agg.update(state, PairBlock(va, None, rid, dt_a))
                continue
            assert self.proj_b is not None
            if raw_b:
                vb = self.source_b.read(self.hook_b, lo, hi, bufs_b, raw=True)
            else:
                vb = self.proj_b(self.source_b.read(self.hook_b, lo, hi, bufs_b))
            state = agg.update(state, PairBlock(va, vb, rid, dt_a, dt_b))
        return state

    def _prefetch(self, r0: int, r1: int) -> None:
        """Start reading rows ``[r0, r1)`` of the hooks this scan reads (sources that can)."""
        pairs = [(self.source_a, self.hook_a)]
        other = self.source_b is not self.source_a or self.hook_b != self.hook_a
        if self.hook_b is not None and not self.same and other:
            pairs.append((self.source_b, self.hook_b))
        for source, hook in pairs:
            if hasattr(source, "prefetch"):
                source.prefetch(hook, r0, r1)

    @staticmethod
    def _stored(source: Any, hook: str | None, proj: Projection | None) -> bool:
        """Whether blocks of ``hook`` can go to the aggregate as stored bf16/fp16 rows: every unit,
        no projection, read from one store (``StoreRows``; a join's ``MappedRows`` gathers floats)."""
        from actlake.query.rowsource import StoreRows

        return (isinstance(source, StoreRows) and hook is not None and proj is not None
                and proj.kind == "identity" and source.hooks[hook].dtype in ("bfloat16", "float16"))


def range_plan(num_rows: int, block_rows: int, row_bytes: int, tasks: int | None, source: Any = None) -> list[PlanItem]:
    """Plan items over a row space: the chunk ranges of the store when ``source`` is a StoreRows
    (items never split a chunk), else ranges of ``block_rows`` rows."""
    from actlake.query.rowsource import StoreRows

    if isinstance(source, StoreRows):
        rows = [f.num_rows for f in source.fragments]
        return make_plan(rows, source.chunk_rows, row_bytes, tasks)
    return make_plan([num_rows], block_rows, row_bytes, tasks)


def run_bounded(ctx: Any, plan: list[PlanItem], agg: Any, threads: int | None = None, progress: Any = None) -> State:
    """Local executor with at most ``threads + 1`` partial states alive at once (a 4,096 × 4,096
    co-moment state is 128 MB); merges in plan order like ``LocalExecutor``.  Returns the merged
    (not finalized) state."""
    threads = max(1, threads or min(8, os.cpu_count() or 1))
    total, done = sum(i.rows for i in plan), 0
    out = agg.zero()
    with ThreadPoolExecutor(threads) as pool, one_blas_thread_per_task(min(threads, len(plan))):
        pending = [pool.submit(ctx.scan, it, agg) for it in plan[: threads + 1]]
        nxt = len(pending)
        for item in plan:
            state = pending.pop(0).result()
            if nxt < len(plan):
                pending.append(pool.submit(ctx.scan, plan[nxt], agg))
                nxt += 1
            out = agg.merge(out, state)
            del state
            done += item.rows
            if progress is not None:
                progress(done, total)
    return out
