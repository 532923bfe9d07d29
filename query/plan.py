"""The query plan: contiguous ranges of chunks (within and across fragments) as independent tasks.

Like Ray Data's ``Datasource.get_read_tasks``, each item knows its rows and bytes before anything is
read, so executors can balance and report progress.  Items are in row order; merging their partial
results in plan order gives the same result whatever ran them (threads, Ray tasks, one task)."""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from actlake.query.validate import check_count

DEFAULT_ITEM_BYTES = 64 << 20  # target bytes of hook data per item when no task count is given


@dataclass(frozen=True)
class PlanItem:
    """One task: chunk ranges ``(fragment, chunk_lo, chunk_hi)`` in row order.

    Attributes:
        index: position in the plan (merge order).
        segments: tuples (fragment index in the snapshot, first chunk, end chunk), chunk end exclusive.
        rows: rows covered.
        bytes: stored bytes of the hook's rows covered (row_bytes × rows; compressed stores read less).
        first_row: global row id of the item's first row.
    """

    index: int
    segments: tuple[tuple[int, int, int], ...]
    rows: int
    bytes: int
    first_row: int


def make_plan(fragment_rows: list[int], chunk_rows: int, row_bytes: int, tasks: int | None = None,
              item_bytes: int = DEFAULT_ITEM_BYTES) -> list[PlanItem]:
    """Split a snapshot's chunks into ``tasks`` contiguous items of about equal chunk counts.

    Args:
        fragment_rows: rows of each committed fragment, in commit order.
        chunk_rows: rows per stored chunk.
        row_bytes: stored bytes per row of the queried hook.
        tasks: number of items wanted (capped by the number of chunks); default: enough items of
            about ``item_bytes`` each.
    Returns:
        list of PlanItem covering every row exactly once, in row order (empty for an empty store).
    Raises: QueryError when ``tasks`` is not a whole number >= 1.
    """
    check_count("tasks", tasks)
    rows = np.asarray(fragment_rows, dtype=np.int64)
    nchunks = -(-rows // chunk_rows)
    total = int(nchunks.sum())
    if total == 0:
        return []
    if tasks is None:
        tasks = max(1, -(-int(rows.sum()) * row_bytes // item_bytes))
    tasks = max(1, min(int(tasks), total))
    # global chunk g -> (fragment, local chunk); rows of a chunk
    frag_of = np.repeat(np.arange(len(rows)), nchunks)
    first_chunk = np.concatenate([[0], np.cumsum(nchunks)[:-1]])
    local = np.arange(total) - first_chunk[frag_of]
    crow = np.minimum(chunk_rows, rows[frag_of] - local * chunk_rows)
    row_start = np.concatenate([[0], np.cumsum(crow)[:-1]])
    cuts = np.linspace(0, total, tasks + 1).round().astype(np.int64)
    items = []
    for i in range(tasks):
        g0, g1 = int(cuts[i]), int(cuts[i + 1])
        segs = []
        for f in np.unique(frag_of[g0:g1]):
            sel = np.flatnonzero(frag_of[g0:g1] == f) + g0
            segs.append((int(f), int(local[sel[0]]), int(local[sel[-1]]) + 1))
        n = int(crow[g0:g1].sum())
        items.append(PlanItem(i, tuple(segs), n, n * row_bytes, int(row_start[g0])))
    return items
