"""Top-k, interval-sample and statistics results from aggregates: shared by ``ds.query`` over a store
(client/query.py) and ``joined.query`` over a join (client/join_query.py).

Each function gets ``run``, a callable that scans the whole plan with one aggregate and returns the
aggregate's finalized result; the engine behind it (thread pool or Ray, store chunks or joined row
ranges) is the caller's.  Tables hold no provenance: the caller appends its own."""
from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from actlake.query.aggregates import Grouped, Histogram, ValueStats
from actlake.query.rangescan import RangeScan
from actlake.query.scan import ScanContext
from actlake.query.topk import IntervalSample, Maximum, TopK
from actlake.query.values import Projection
from actlake.schemas.errors import QueryError
from actlake.schemas.query import QuerySpec

Run = Callable[[Any], Any]  # aggregate -> its finalized result over every plan item


def label(spec: QuerySpec) -> str:
    """Name of the column that says what was ranked: ``unit``, ``direction`` or ``latent`` (SAE)."""
    return "unit" if spec.unit is not None else "direction" if spec.direction is not None else "latent"


def ranked(run: Run, spec: QuerySpec, proj: Projection, largest: bool) -> pa.Table:
    """Top-k (``largest``) or bottom-k rows of every value of ``proj`` (one :class:`TopK` pass).

    Returns: table with ``unit``/``direction``/``latent`` (int64: the unit index, else the column of
    the projection), ``rank`` (int32, 0 = best), ``row_id`` (int64), ``value`` (float32); grouped by
    unit, each group by rank; a unit with fewer than ``k`` rows has fewer entries."""
    agg = TopK(proj.num_values, spec.k, largest=largest, dedup="context_id" if spec.dedup else None)
    res = run(agg)
    vals, rids = res["values"], res["row_ids"]  # [k, C]; row id -1 marks an empty slot
    idx = proj.units if proj.units is not None else np.arange(proj.num_values)
    col = np.broadcast_to(np.arange(vals.shape[1])[None, :], vals.shape)
    rank = np.broadcast_to(np.arange(vals.shape[0])[:, None], vals.shape)
    keep = (rids >= 0).T.reshape(-1)
    return pa.table({label(spec): pa.array(idx[col.T.reshape(-1)][keep].astype(np.int64)),
                     "rank": pa.array(rank.T.reshape(-1)[keep].astype(np.int32)),
                     "row_id": pa.array(rids.T.reshape(-1)[keep]),
                     "value": pa.array(vals.T.reshape(-1)[keep])})


def interval_samples(run: Run, spec: QuerySpec, proj: Projection) -> pa.Table:
    """Up to ``spec.per_bin`` random rows from each of ``spec.bins`` equal intervals of (0, max] of the
    one value of ``proj``: two passes, the max (:class:`Maximum`), then :class:`IntervalSample`.

    Returns: table with ``bin`` (int64), ``lo``, ``hi`` (float64 interval edges), ``row_id``,
    ``value``, by bin; empty when no value is > 0.
    Raises: QueryError when ``proj`` has more than one value (unit / direction / latent)."""
    if proj.num_values != 1:
        raise QueryError(f"{label(spec)}: sample_intervals takes one unit/direction/latent, got {proj.num_values}")
    vmax = float(run(Maximum(1))[0])
    edges = np.linspace(0.0, max(vmax, 0.0), spec.bins + 1)
    if not vmax > 0:
        res = {"bin": np.empty(0, np.int64), "row_ids": np.empty(0, np.int64), "values": np.empty(0, np.float32)}
    else:
        res = run(IntervalSample(spec.bins, spec.per_bin, vmax, spec.seed))
    b = res["bin"]
    return pa.table({"bin": pa.array(b), "lo": pa.array(edges[b]), "hi": pa.array(edges[b + 1]),
                     "row_id": pa.array(res["row_ids"]), "value": pa.array(res["values"])})


def unit_stats(run: Run, spec: QuerySpec, proj: Projection, ctx: ScanContext | RangeScan) -> dict:
    """Per-value statistics: :class:`Moments` and :class:`Density` (and :class:`RowSummary` with
    ``spec.rows``) in one compiled pass (:class:`ValueStats`), grouped by ``spec.by`` if set; with
    ``spec.histogram_bins`` a second pass of :class:`Histogram` over shared edges from the first
    pass's min and max.  ``ctx`` is the scan context ``run`` reads through: its ``need_x`` (full
    rows in each block) is cleared for the second pass, which needs only the projected values.

    Returns: see ``QueryEngine.stats`` (``{group: dict}`` with ``by``)."""
    c = proj.num_values

    def wrap(a: Any) -> Any:
        return Grouped(a, spec.by) if spec.by else a

    if isinstance(ctx, ScanContext):
        ctx.stored_bits = True  # ValueStats widens bfloat16 rows itself, one row at a time in L1
    try:
        res = run(wrap(ValueStats(c, spec.threshold, spec.rows)))
    finally:
        if isinstance(ctx, ScanContext):
            ctx.stored_bits = False
    if spec.histogram_bins:
        flat = list(res.values()) if spec.by else [res]
        lo = float(np.nanmin([np.nanmin(r["min"]) for r in flat]))
        hi = float(np.nanmax([np.nanmax(r["max"]) for r in flat]))
        ctx.need_x = False
        hist = run(wrap(Histogram(c, spec.histogram_bins, lo, hi)))
        if spec.by:
            for key in res:
                res[key].update(hist[key])
        else:
            res.update(hist)
    return res
