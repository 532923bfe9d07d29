"""Run one plan item: read its chunks through the store's FragmentReader, project, fold blocks.

A :class:`ScanContext` is everything a task needs (picklable: Ray ships it once per query)."""
from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

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
        stored_bits: with an identity projection over a bfloat16 hook, blocks carry the stored uint16
            bits as ``values`` (and ``x``), unwidened, for aggregates that widen rows themselves
            (``aggregates.ValueStats``); other aggregates need this off (the default).
        hook_b, info_b, projection_b: a second, row-aligned hook whose projected rows become
            ``block.values_b`` (correlations across hooks), or None.
        verify: check every chunk read against its fragment's CRC-32C (the dataset's ``verify_reads``).
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
    stored_bits: bool = False
    hook_b: str | None = None
    info_b: HookInfo | None = None
    projection_b: Projection | None = None
    verify: bool = True
    _readers: dict = field(default_factory=dict, repr=False, compare=False)

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_readers": {}}  # readers hold locks; each process opens its own

    def reader(self, f: int, hooks: dict[str, HookInfo]) -> FragmentReader:
        """The fragment's reader, shared by the tasks of this query in one process (its checksum
        file is read and checked once, not once per task)."""
        r = self._readers.get(f)
        if r is None:
            r = self._readers.setdefault(f, FragmentReader(self.store, self.fragments[f], hooks, self.chunk_rows,
                                                           verify=self.verify))
        return r


def _column(table: pa.Table, name: str) -> np.ndarray:
    col = table.column(name)
    if pa.types.is_dictionary(col.type):
        col = col.cast(pa.string())
    if pa.types.is_string(col.type) or pa.types.is_large_string(col.type):
        return np.asarray(col.fill_null("").to_pylist(), dtype=object)
    return col.to_numpy(zero_copy_only=False)


class SelfScanning(Protocol):
    """A scan context with its own loop over a plan item (``query.rangescan.RangeScan``: two hooks,
    joins); ``scan_item`` hands it the item, so every executor runs both kinds unchanged."""

    def scan(self, item: PlanItem, agg: Any) -> State: ...


def scan_item(ctx: ScanContext | SelfScanning, item: PlanItem, agg: Any) -> State:
    """Fold every chunk of ``item`` into ``agg.zero()``, in row order.  Returns the partial state.

    Raises: StoreDamagedError / ActlakeError from the reader on missing or truncated chunks."""
    if not isinstance(ctx, ScanContext):  # contexts with their own loop
        return ctx.scan(item, agg)
    state = agg.zero()
    hooks = {ctx.hook: ctx.info}
    if ctx.hook_b is not None and ctx.info_b is not None:
        hooks[ctx.hook_b] = ctx.info_b
    # uncompressed chunks are read into one reused buffer per thread and hook (no allocation or page
    # faults per chunk or task); aggregates never keep references to a block's arrays
    bufs = {h: _buffer(h, (ctx.chunk_rows, *i.shape), STORAGE[i.dtype]) if i.codec == "none" else None
            for h, i in hooks.items()}

    p = ctx.projection  # matmul kinds write their values into a reused buffer too
    pout = _buffer("\0values", (ctx.chunk_rows, p.num_values), np.dtype(np.float32)) if p.flops_per_row else None

    def raw_rows(reader: FragmentReader, hook: str, c: int) -> np.ndarray:
        """The chunk's rows in the storage dtype, ``[n, d]``: a view of the mapped file on local disks
        (no copy; checked in place), else read into this thread's buffer or decoded."""
        raw = reader.map_rows(hook, c)
        if raw is None:
            buf = bufs[hook]
            if buf is None:
                raw = reader.read_chunk(hook, c)
            else:
                n = reader.chunk_rows_of(c)
                reader.read_rows_into(hook, c, 0, n, buf[:n])
                raw = buf[:n]
        return raw.reshape(raw.shape[0], -1)

    def read(reader: FragmentReader, hook: str, c: int) -> np.ndarray:
        return to_float32(raw_rows(reader, hook, c), hooks[hook].dtype)

    # a few units of a wide hook: select them before widening (bf16/fp16 chunks are not widened whole)
    select_first = p.kind == "units" and not ctx.need_x and p.units is not None and len(p.units) * 4 <= p.width

    bits = ctx.stored_bits and p.kind == "identity" and ctx.info.dtype == "bfloat16"

    # each chunk's successor is read by the OS in the background while this one computes
    order = [(f, c) for f, c0, c1 in item.segments for c in range(c0, c1)]
    nxt = iter(order[1:])

    def prefetch_next() -> None:
        ahead = next(nxt, None)
        if ahead is not None:
            r_ = ctx.reader(ahead[0], hooks)
            for h in hooks:
                r_.prefetch(h, ahead[1])

    for f, c0, c1 in item.segments:
        reader = ctx.reader(f, hooks)
        cols = {}
        if ctx.columns:
            lo, hi = c0 * ctx.chunk_rows, min(c1 * ctx.chunk_rows, ctx.fragments[f].num_rows)
            prov = reader.read_provenance(columns=ctx.columns).slice(lo, hi - lo)
            cols = {c: _column(prov, c) for c in ctx.columns}
        for c in range(c0, c1):
            prefetch_next()
            if select_first:
                x = None
                values = to_float32(raw_rows(reader, ctx.hook, c)[:, p.units], ctx.info.dtype)
                n = values.shape[0]
            elif bits:
                x = raw_rows(reader, ctx.hook, c)
                values, n = x, x.shape[0]
            else:
                x = read(reader, ctx.hook, c)
                values, n = ctx.projection(x, pout), x.shape[0]
            lo = c * ctx.chunk_rows
            rid = np.arange(ctx.offsets[f] + lo, ctx.offsets[f] + lo + n, dtype=np.int64)
            vb = None
            if ctx.hook_b is not None and ctx.projection_b is not None:
                vb = ctx.projection_b(read(reader, ctx.hook_b, c))
            o = lo - c0 * ctx.chunk_rows
            block = Block(values, rid, x if ctx.need_x else None, {k: v[o:o + n] for k, v in cols.items()}, vb)
            state = agg.update(state, block)
            del x, values, block, vb  # a mapped chunk is released with its last view
    return state


_local = threading.local()
KEEP_BYTES = 256 << 20  # largest buffer a thread keeps between chunks and tasks


def _buffer(hook: str, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """This thread's reusable read buffer for ``hook`` (one per hook and thread, replaced when the
    shape or dtype changes), so a thread's pages are faulted in once per query, not per chunk.
    Buffers over ``KEEP_BYTES`` (e.g. the latents of a wide SAE) are not kept: a Ray worker lives on
    after the query."""
    if int(np.prod(shape)) * np.dtype(dtype).itemsize > KEEP_BYTES:
        return np.empty(shape, dtype)
    bufs = getattr(_local, "bufs", None)
    if bufs is None:
        bufs = _local.bufs = {}
    buf = bufs.get(hook)
    if buf is None or buf.shape != shape or buf.dtype != dtype:
        if len(bufs) >= 4:
            bufs.clear()
        buf = bufs[hook] = np.empty(shape, dtype)
    return buf
