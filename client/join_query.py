"""``joined.query``: top-k, bottom-k, stats, correlate, covariance and PCA over a JoinedDataset.

Same aggregates (``query/topk.py``, ``query/aggregates.py``, ``query/comoments.py``) and the same
plan / merge execution as ``ds.query``, over row ranges of the joined row space
(``query/rangescan.py``); provenance and contexts come from side a."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from actlake.client import analysis
from actlake.query.aggregates import Combined, Density, Moments
from actlake.query.rangescan import RangeScan, range_plan
from actlake.query.topk import TopK
from actlake.query.validate import parse_spec, projection_for


class JoinedQuery:
    """Queries over a joined dataset (rows: ``joined.num_rows``; ids: joined row ids)."""

    def __init__(self, joined: Any, threads: int | None = None):
        self.j, self.threads = joined, threads

    def _scan(self, hook: str, unit: Any, direction: Any, encoder: Any, kind: str, tasks: int | None,
              **spec_kw: Any) -> tuple[Any, RangeScan, list]:
        src = analysis.row_source(self.j, hook)
        spec = parse_spec(kind=kind, hook=hook, unit=unit, direction=direction, encoder=encoder, tasks=tasks, **spec_kw)
        proj = projection_for(spec, src.hooks[hook])
        ctx = RangeScan(src, hook, proj)
        return spec, ctx, range_plan(src.num_rows, ctx.block_rows, src.hooks[hook].row_bytes, spec.tasks)

    def topk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
             largest: bool = True, encoder: Any = None, address: str | None = None, progress: Any = None,
             tasks: int | None = None) -> pa.Table:
        """As ``ds.query.topk`` (no ``dedup``): ``unit``/``direction``/``latent``, ``rank``, ``row_id``
        (joined), ``value``, side a's provenance with ``row_id_a``/``row_id_b``, and ``context``.
        Raises: QueryError (unknown hook, bad unit / direction, k <= 0)."""
        spec, ctx, plan = self._scan(hook, unit, direction, encoder, "topk" if largest else "bottomk", tasks, k=k)
        agg = TopK(ctx.proj_a.num_values, spec.k, largest=largest)
        res = agg.finalize(analysis._run(ctx, plan, agg, address, self.threads, progress))
        vals, rids = res["values"], res["row_ids"]
        p = ctx.proj_a
        idx = p.units if p.units is not None else np.arange(p.num_values)
        col = np.broadcast_to(np.arange(vals.shape[1])[None, :], vals.shape)
        rank = np.broadcast_to(np.arange(vals.shape[0])[:, None], vals.shape)
        label = "unit" if unit is not None else "direction" if direction is not None else "latent"
        keep = (rids >= 0).T.reshape(-1)
        rid = rids.T.reshape(-1)[keep]
        table = pa.table({label: pa.array(idx[col.T.reshape(-1)][keep].astype(np.int64)),
                          "rank": pa.array(rank.T.reshape(-1)[keep].astype(np.int32)),
                          "row_id": pa.array(rid), "value": pa.array(vals.T.reshape(-1)[keep])})
        prov = self.j.provenance(rid).drop_columns(["row_id"])
        for name in prov.column_names:
            table = table.append_column(name, prov.column(name))
        if context >= 0:
            ctxs = self.j.ds_a.query.contexts(self.j.index_a[rid], context)
            table = table.append_column("context", pa.array(ctxs, pa.string()))
        return table

    def bottomk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
                **kw: Any) -> pa.Table:
        """``topk(..., largest=False)``."""
        return self.topk(hook, unit, direction, k, context, largest=False, **kw)

    def stats(self, hook: str, unit: Any = None, direction: Any = None, encoder: Any = None, threshold: float = 0.0,
              address: str | None = None, progress: Any = None, tasks: int | None = None) -> dict:
        """Per-unit ``count``, ``mean``, ``var``, ``skew``, ``kurtosis``, ``min``, ``max``, ``density``,
        ``active`` over the joined rows (float64, Pébay moments)."""
        _, ctx, plan = self._scan(hook, unit, direction, encoder, "stats", tasks, threshold=threshold)
        c = ctx.proj_a.num_values
        agg = Combined({"m": Moments(c), "d": Density(c, threshold)})
        return agg.finalize(analysis._run(ctx, plan, agg, address, self.threads, progress))

    def correlate(self, hook_a: str, hook_b: str | None = None, units_a: Any = None, units_b: Any = None,
                  **kw: Any) -> analysis.CorrelationResult:
        """As ``ds.query.correlate``; the hooks may come from different sides (universality)."""
        return analysis.correlate(self.j, hook_a, hook_b, units_a, units_b, threads=kw.pop("threads", self.threads),
                                  **kw)

    def covariance(self, hook: str, **kw: Any) -> np.ndarray:
        return analysis.covariance(self.j, hook, threads=kw.pop("threads", self.threads), **kw)

    def pca(self, hook: str, n_components: int, **kw: Any) -> analysis.PCAResult:
        return analysis.pca(self.j, hook, n_components, threads=kw.pop("threads", self.threads), **kw)
