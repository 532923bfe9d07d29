"""Run one plan item: read its chunks through the store's FragmentReader, project, fold blocks.

A :class:`ScanContext` is everything a task needs (picklable: Ray ships it once per query)."""
from __future__ import annotations

from dataclasses import dataclass, field
from collections.abc import Sequence
from typing import Any

import numpy as np
import pyarrow as pa

from actlake.query.aggregates import Block, State
from actlake.query.plan import PlanItem
from actlake.query.values import Projection, to_float32
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store.dtypes import STORAGE
from actlake.store.fragment import FragmentReader
from actlake.store.fs import StoreFS


@dataclass
class ScanContext:
    """What a task reads and computes.

    Attributes:
        store: the dataset root.
        hook: the queried hook; ``info`` its manifest entry.
        chunk_rows: rows per stored chunk.
        fragments: the snapshot's fragment records; ``offsets`` their first global row ids.
        projection: rows → values.
        columns: provenance columns the aggregate needs (dedup / group-by).
        need_x: whether blocks must carry the full rows (per-row summaries).
        hook_b, info_b, projection_b: a second, row-aligned hook whose projected rows become
            ``block.values_b`` (correlations across hooks), or None.
    """

    store: StoreFS
    hook: str
    info: HookInfo
    chunk_rows: int
    fragments: Sequence[FragmentRecord]
    offsets: list[int]
    projection: Projection
    columns: list[str] = field(default_factory=list)
    need_x: bool = False
    hook_b: str | None = None
    info_b: HookInfo | None = None
    projection_b: Projection | None = None


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.fill_null("").to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


def scan_item(ctx: ScanContext, item: PlanItem, agg: Any) -> State:
    """Fold every chunk of ``item`` into ``agg.zero()``, in row order.  Returns the partial state.

    Raises: StoreDamagedError / ActlakeError from the reader on missing or truncated chunks."""
    if hasattr(ctx, "scan"):  # contexts with their own loop (query/rangescan.py: two hooks, joins)
        return ctx.scan(item, agg)
    state = agg.zero()
    hooks = {ctx.hook: ctx.info}
    if ctx.hook_b is not None and ctx.info_b is not None:
        hooks[ctx.hook_b] = ctx.info_b
    # uncompressed chunks are read into one reused buffer (no allocation or page faults per chunk);
    # aggregates never keep references to a block's arrays
    bufs = {h: np.empty((ctx.chunk_rows, *i.shape), STORAGE[i.dtype]) if i.codec == "none" else None
            for h, i in hooks.items()}

    def read(reader: FragmentReader, hook: str, c: int) -> np.ndarray:
        buf = bufs[hook]
        if buf is None:
            raw = reader.read_chunk(hook, c)
        else:
            n = reader.chunk_rows_of(c)
            reader.read_rows_into(hook, c, 0, n, buf[:n])
            raw = buf[:n]
        x = to_float32(raw, hooks[hook].dtype)
        return x.reshape(x.shape[0], -1)

    for f, c0, c1 in item.segments:
        rec = ctx.fragments[f]
        reader = FragmentReader(ctx.store, rec, hooks, ctx.chunk_rows)
        cols = {}
        if ctx.columns:
            prov = reader.read_provenance(columns=ctx.columns)
            cols = {c: _column(prov, c) for c in ctx.columns}
        for c in range(c0, c1):
            x = read(reader, ctx.hook, c)
            lo = c * ctx.chunk_rows
            rid = np.arange(ctx.offsets[f] + lo, ctx.offsets[f] + lo + x.shape[0], dtype=np.int64)
            vb = None
            if ctx.hook_b is not None and ctx.projection_b is not None:
                vb = ctx.projection_b(read(reader, ctx.hook_b, c))
            block = Block(ctx.projection(x), rid, x if ctx.need_x else None,
                          {k: v[lo:lo + x.shape[0]] for k, v in cols.items()}, vb)
            state = agg.update(state, block)
    return state
