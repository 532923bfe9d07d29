"""``joined.query``: top-k / bottom-k (with ``dedup="context"``), interval samples, stats (``by``,
histograms), correlate, covariance and PCA over a JoinedDataset.

Same aggregates (``query/topk.py``, ``query/aggregates.py``, ``query/comoments.py``) and the same
plan / merge execution as ``ds.query``, over row ranges of the joined row space
(``query/rangescan.py``); provenance, contexts and the dedup / group-by columns come from side a
(``JoinedDataset.column``), row ids are joined row ids."""
from __future__ import annotations

from typing import Any

import numpy as np
import pyarrow as pa

from actlake.client import analysis
from actlake.query.rangescan import RangeScan, range_plan
from actlake.query.results import interval_samples, ranked, unit_stats
from actlake.query.validate import check_columns, parse_spec, projection_for


class JoinedQuery:
    """Queries over a joined dataset (rows: ``joined.num_rows``; ids: joined row ids)."""

    def __init__(self, joined: Any, threads: int | None = None):
        self.j, self.threads = joined, threads

    def _scan(self, hook: str, unit: Any, direction: Any, encoder: Any, kind: str, tasks: int | None,
              **spec_kw: Any) -> tuple[Any, RangeScan, list]:
        src = analysis.row_source(self.j, hook)
        spec = parse_spec(kind=kind, hook=hook, unit=unit, direction=direction, encoder=encoder, tasks=tasks, **spec_kw)
        proj = projection_for(spec, src.hooks[hook])
        need = check_columns(spec, list(self.j.ds_a.manifest.provenance_columns))
        ctx = RangeScan(src, hook, proj, need_x=kind == "stats" and bool(spec.rows),
                        cols={c: self.j.column(c) for c in need})
        return spec, ctx, range_plan(src.num_rows, ctx.block_rows, src.hooks[hook].row_bytes, spec.tasks)

    def _exec(self, ctx: RangeScan, plan: list, agg: Any, address: str | None, progress: Any) -> Any:
        return agg.finalize(analysis._run(ctx, plan, agg, address, self.threads, progress))

    def _with_provenance(self, table: pa.Table, context: int) -> pa.Table:
        rid = table.column("row_id").to_numpy()
        prov = self.j.provenance(rid).drop_columns(["row_id"])
        for name in prov.column_names:
            table = table.append_column(name, prov.column(name))
        if context >= 0:
            ctxs = self.j.ds_a.query.contexts(self.j.index_a[rid], context)
            table = table.append_column("context", pa.array(ctxs, pa.string()))
        return table

    def topk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
             dedup: str | None = None, largest: bool = True, encoder: Any = None, address: str | None = None,
             progress: Any = None, tasks: int | None = None) -> pa.Table:
        """As ``ds.query.topk``: ``unit``/``direction``/``latent``, ``rank``, ``row_id`` (joined),
        ``value``, side a's provenance with ``row_id_a``/``row_id_b``, and ``context``.
        ``dedup="context"`` keeps one row per context of side a (its ``context_id``).
        Raises: QueryError (unknown hook, bad unit / direction, k <= 0, no ``context_id`` for dedup)."""
        spec, ctx, plan = self._scan(hook, unit, direction, encoder, "topk" if largest else "bottomk", tasks, k=k,
                                     context=max(context, 0), dedup=dedup)
        table = ranked(lambda agg: self._exec(ctx, plan, agg, address, progress), spec, ctx.proj_a, largest)
        return self._with_provenance(table, context)

    def bottomk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
                dedup: str | None = None, **kw: Any) -> pa.Table:
        """``topk(..., largest=False)``."""
        return self.topk(hook, unit, direction, k, context, dedup, largest=False, **kw)

    def sample_intervals(self, hook: str, unit: Any = None, bins: int = 11, per_bin: int = 10, direction: Any = None,
                         encoder: Any = None, seed: int = 0, context: int = 8, address: str | None = None,
                         progress: Any = None, tasks: int | None = None) -> pa.Table:
        """As ``ds.query.sample_intervals`` over the joined rows: ``bin``, ``lo``, ``hi``, ``row_id``
        (joined), ``value``, provenance and ``context``; the sample depends on the joined row ids
        and ``seed`` only.  Raises: QueryError as ``topk``, and for more than one unit/direction."""
        spec, ctx, plan = self._scan(hook, unit, direction, encoder, "intervals", tasks, bins=bins, per_bin=per_bin,
                                     seed=seed)
        table = interval_samples(lambda agg: self._exec(ctx, plan, agg, address, progress), spec, ctx.proj_a)
        return self._with_provenance(table, context)

    def stats(self, hook: str, unit: Any = None, direction: Any = None, encoder: Any = None, threshold: float = 0.0,
              by: str | None = None, histogram_bins: int | None = None, rows: bool = True,
              address: str | None = None, progress: Any = None, tasks: int | None = None) -> dict:
        """As ``ds.query.stats`` for one hook over the joined rows: per-unit ``count``, ``mean``,
        ``var``, ``skew``, ``kurtosis``, ``min``, ``max``, ``density``, ``active`` (float64, Pébay
        moments); ``by`` groups on a provenance column of side a; ``histogram_bins`` adds ``hist`` /
        ``hist_edges`` (second pass); ``rows`` (all units only) adds ``row_norm`` / ``row_kurtosis``.
        Raises: QueryError (unknown hook or ``by`` column, bad unit / direction)."""
        spec, ctx, plan = self._scan(hook, unit, direction, encoder, "stats", tasks, threshold=threshold, by=by,
                                     histogram_bins=histogram_bins,
                                     rows=rows and unit is None and direction is None and encoder is None)
        return unit_stats(lambda agg: self._exec(ctx, plan, agg, address, progress), spec, ctx.proj_a, ctx)

    def correlate(self, hook_a: str, hook_b: str | None = None, units_a: Any = None, units_b: Any = None,
                  **kw: Any) -> analysis.CorrelationResult:
        """As ``ds.query.correlate``; the hooks may come from different sides (universality)."""
        return analysis.correlate(self.j, hook_a, hook_b, units_a, units_b, threads=kw.pop("threads", self.threads),
                                  **kw)

    def covariance(self, hook: str, **kw: Any) -> np.ndarray:
        """As ``ds.query.covariance`` over the joined rows."""
        return analysis.covariance(self.j, hook, threads=kw.pop("threads", self.threads), **kw)

    def pca(self, hook: str, n_components: int, **kw: Any) -> analysis.PCAResult:
        """As ``ds.query.pca`` over the joined rows."""
        return analysis.pca(self.j, hook, n_components, threads=kw.pop("threads", self.threads), **kw)
