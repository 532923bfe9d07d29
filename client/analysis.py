"""Analyses over whole hooks: correlate, covariance, PCA, and projections written as derived hooks.

Reached through ``ds.query.correlate / covariance / pca / project`` (plain or joined datasets).
One streaming pass of float64 co-moments (``actlake.query.comoments``), the same plan / merge
execution as every query: threads in-process, Ray tasks with ``address=``."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from actlake.query.comoments import CoMoments, correlation
from actlake.query.comoments import covariance as cov_of
from actlake.query.rangescan import RangeScan, range_plan, run_bounded
from actlake.query.rowsource import StoreRows, check_hook_in
from actlake.query.validate import as_array, check_count, parse_spec, projection_for
from actlake.query.values import Projection
from actlake.schemas.errors import QueryError


@dataclass
class CorrelationResult:
    """Pearson correlation between two sets of columns.

    Attributes:
        matrix: float64 ``[n_a, n_b]``; NaN where a column is constant.
        units_a, units_b: int64 labels of the rows / columns (unit, direction or latent indices).
        best: ``pyarrow.Table`` (``unit`` int64, ``best_unit`` int64, ``corr`` float64): per row of
            ``matrix`` the column with the largest correlation (``|corr|`` with ``best="abs"``; the
            unit itself is excluded when both sets are the same); -1 / NaN when all are NaN.
        n: rows seen.  mean_a, mean_b: float64 column means.
    """

    matrix: np.ndarray
    units_a: np.ndarray
    units_b: np.ndarray
    best: pa.Table
    n: int
    mean_a: np.ndarray
    mean_b: np.ndarray


@dataclass
class PCAResult:
    """Principal components of a hook (eigendecomposition of its float64 covariance).

    Attributes:
        mean: float64 ``[d]``.  components: float64 ``[k, d]``, unit rows, by decreasing variance
            (sign fixed so the entry of largest magnitude is positive).
        explained_variance: float64 ``[k]`` eigenvalues of the covariance (``ddof`` as computed).
        explained_variance_ratio: float64 ``[k]`` of the total variance (trace).  n: rows seen.
    """

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    n: int

    def cosine(self, vectors: Any) -> np.ndarray:
        """Cosine similarity of ``vectors`` (float ``[d]`` or ``[m, d]``) with each component.
        Returns float64 ``[m, k]`` (``[k]`` for one vector).  Raises QueryError on a wrong width."""
        v = as_array("vectors", vectors, (1, 2)).astype(np.float64)
        one = v.ndim == 1
        v = v.reshape(-1, v.shape[-1])
        if v.shape[1] != self.components.shape[1]:
            raise QueryError(f"vectors: width {v.shape[1]} != {self.components.shape[1]}")
        with np.errstate(divide="ignore", invalid="ignore"):
            cos = (v @ self.components.T) / np.linalg.norm(v, axis=1, keepdims=True)
        return cos[0] if one else cos

    def transform(self, x: Any) -> np.ndarray:
        """Coordinates of rows ``x`` ``[n, d]`` on the components: float64 ``[n, k]``."""
        return (np.asarray(x, dtype=np.float64) - self.mean) @ self.components.T


def row_source(ds: Any, hook: str, arg: str = "hook") -> Any:
    """The row source of ``hook`` of a plain (StoreRows) or joined (its ``row_source``) dataset.
    Raises: QueryError naming ``arg`` (unknown hook), or on an empty store."""
    if hasattr(ds, "row_source"):
        return ds.row_source(hook, arg)
    check_hook_in(ds.manifest, hook, arg)
    if ds.num_rows == 0:
        raise QueryError("dataset: the store has no committed rows to query")
    snap = ds.snapshot
    return StoreRows(ds.store, snap.fragments, snap.offsets.tolist(), ds.manifest.hooks, ds.chunk_rows)


def _projection(src: Any, hook: str, units: Any, direction: Any, encoder: Any, arg: str) -> Projection:
    info = check_hook_in(src, hook, f"hook_{arg}")
    given = [f"{k}_{arg}" for k, v in (("units", units), ("direction", direction), ("encoder", encoder))
             if v is not None]
    if len(given) > 1:
        raise QueryError(f"{given[1]}: give only one of units_{arg}, direction_{arg}, encoder_{arg} "
                         f"(got {', '.join(given)})")
    if units is not None and not hasattr(units, "detach"):
        flat = np.asarray(units, dtype=object).reshape(-1)
        if not all(isinstance(u, (int, np.integer)) and not isinstance(u, bool) for u in flat):
            raise QueryError(f"units_{arg}: must be whole unit indices, got {units!r}")
        if len(set(int(u) for u in flat)) < len(flat):
            raise QueryError(f"units_{arg}: a unit is listed twice ({units!r})")
    try:
        spec = parse_spec(kind="stats", hook=hook, unit=units, direction=direction, encoder=encoder)
        return projection_for(spec, info)
    except QueryError as e:  # name the side: units_a, direction_b, ...
        msg = str(e)
        for key in ("unit", "direction", "encoder"):
            if msg.startswith(key):
                raise QueryError(f"{key}s_{arg}{msg[len(key):]}" if key == "unit" else f"{key}_{arg}{msg[len(key):]}") \
                    from None
        raise


def _labels(p: Projection) -> np.ndarray:
    return p.units.astype(np.int64) if p.units is not None else np.arange(p.num_values, dtype=np.int64)


def _run(ctx: RangeScan, plan: list, agg: Any, address: str | None, threads: int | None, progress: Any) -> Any:
    if address is None:
        return run_bounded(ctx, plan, agg, threads, progress)
    from actlake.client.query import executor_for

    return executor_for(address, threads).run(ctx, plan, agg, progress)


def check_common(precision: str = "float64", tasks: Any = None, threads: Any = None) -> None:
    """The arguments every analysis takes, checked before any other work.  Raises: QueryError."""
    if precision not in ("float64", "float32"):
        raise QueryError(f"precision: must be 'float64' or 'float32', got {precision!r}")
    check_count("tasks", tasks)
    check_count("threads", threads)


def comoments(ds: Any, hook_a: str, hook_b: str | None = None, units_a: Any = None, units_b: Any = None,
              direction_a: Any = None, direction_b: Any = None, encoder_a: Any = None, encoder_b: Any = None,
              address: str | None = None, threads: int | None = None, progress: Any = None,
              tasks: int | None = None, max_temp_bytes: int = 64 << 20,
              precision: str = "float64", arg_a: str = "hook_a") -> tuple[dict, Projection, Projection, bool]:
    """One pass of float64 co-moments between two column sets.  Returns (state, proj_a, proj_b, same).

    ``precision``: "float64" (products in float64) or "float32" (float32 products of sub-blocks
    shifted by their first rows' mean, merged in float64; see ``actlake.query.comoments.CoMoments``).
    Raises: QueryError (bad hook / selection / precision, empty store)."""
    check_common(precision, tasks, threads)
    src_a = row_source(ds, hook_a, arg_a)  # arg_a: the caller's name for it ("hook" in covariance / pca)
    pa_ = _projection(src_a, hook_a, units_a, direction_a, encoder_a, "a")
    no_sel_a = units_a is None and direction_a is None and encoder_a is None
    no_sel_b = units_b is None and direction_b is None and encoder_b is None
    if hook_b is None and no_sel_a and no_sel_b:  # every unit of one hook against every unit of it
        hook_b, src_b, pb, same = hook_a, src_a, pa_, True
    else:
        hook_b = hook_a if hook_b is None else hook_b
        src_b = row_source(ds, hook_b, "hook_b")
        pb = _projection(src_b, hook_b, units_b, direction_b, encoder_b, "b")
        same = False
    if src_a.num_rows != src_b.num_rows:
        raise QueryError(f"hook_b: {src_b.num_rows} rows but hook_a has {src_a.num_rows}")
    row_bytes = src_a.hooks[hook_a].row_bytes + (0 if same else src_b.hooks[hook_b].row_bytes)
    ctx = RangeScan(src_a, hook_a, pa_, src_b, hook_b, pb, same=same)
    plan = range_plan(src_a.num_rows, ctx.block_rows, row_bytes, tasks, src_a)
    agg = CoMoments(pa_.num_values, None if same else pb.num_values, max_temp_bytes, precision)
    return _run(ctx, plan, agg, address, threads, progress), pa_, pb, same


def correlate(ds: Any, hook_a: str, hook_b: str | None = None, units_a: Any = None, units_b: Any = None,
              best: str = "max", **kw: Any) -> CorrelationResult:
    """Pearson correlation of every column of set a with every column of set b, one streaming pass.

    Sets are units (``units_a``; all units by default), directions (``direction_a`` ``[C, d]``) or
    SAE latents (``encoder_a``) of ``hook_a``, likewise for ``_b`` of ``hook_b`` (default: the same
    hook, all its units; with no selection on either side, every unit against every other unit of
    ``hook_a``).  ``best``: "max" or "abs".
    ``precision="float32"`` multiplies shifted sub-blocks in float32 (merged in float64):
    ~1.4–2× less CPU, correlations within ~1e-6 of float64 (default "float64").  ``address=``: Ray.
    Returns: CorrelationResult (float64 ``matrix [n_a, n_b]``, ``best`` table).
    Raises: QueryError (unknown hook, unit out of range, wrong direction width, empty store).
    Algorithm: pairwise co-moment merge, Pébay (2008) eq. (3.5) / Chan et al. (1979)."""
    if best not in ("max", "abs"):
        raise QueryError(f"best: must be 'max' or 'abs', got {best!r}")
    s, pa_, pb, same = comoments(ds, hook_a, hook_b, units_a, units_b, **kw)
    m = correlation(s)
    la, lb = _labels(pa_), _labels(pb)
    key = np.abs(m) if best == "abs" else m.copy()
    if same:
        np.fill_diagonal(key, np.nan)
    elif ((hook_b is None or hook_b == hook_a)
          and pa_.kind in ("identity", "units") and pb.kind in ("identity", "units")):
        key[la[:, None] == lb[None, :]] = np.nan  # a unit is not its own best match
    key = np.where(np.isnan(key), -np.inf, key)
    j = np.argmax(key, axis=1) if key.shape[1] else np.zeros(key.shape[0], np.int64)
    found = np.isfinite(key[np.arange(len(j)), j]) if key.shape[1] else np.zeros(len(j), bool)
    table = pa.table({"unit": pa.array(la), "best_unit": pa.array(np.where(found, lb[j], -1).astype(np.int64)),
                      "corr": pa.array(np.where(found, m[np.arange(len(j)), j], np.nan))})
    return CorrelationResult(m, la, lb, table, int(s["n"]), s["mean_a"], s["mean_b"])


def covariance(ds: Any, hook: str, units: Any = None, ddof: int = 1, **kw: Any) -> np.ndarray:
    """Covariance ``[d, d]`` (or ``[C, C]`` of ``units``) in float64, one pass; ddof=1 as numpy.cov.
    Takes ``precision=`` / ``address=`` / ``tasks=`` as ``correlate``.  Raises: QueryError as ``correlate``."""
    s, *_ = comoments(ds, hook, None, units, arg_a="hook", **kw)
    return cov_of(s, ddof)


def pca(ds: Any, hook: str, n_components: int, ddof: int = 1, **kw: Any) -> PCAResult:
    """Principal components of a hook: streaming float64 mean and covariance, then ``numpy.linalg.eigh``.
    Takes ``precision=`` / ``address=`` / ``tasks=`` as ``correlate``.

    Returns: PCAResult (``mean [d]``, ``components [k, d]`` unit rows, ``explained_variance [k]``).
    Raises: QueryError (n_components not in [1, d], unknown hook, empty store, fewer than ``ddof + 1``
    rows, non-finite values)."""
    check_common(kw.get("precision", "float64"), kw.get("tasks"), kw.get("threads"))
    src = row_source(ds, hook)
    d = src.width(hook)
    if not 0 < int(n_components) <= d:
        raise QueryError(f"n_components: must be in [1, {d}], got {n_components}")
    s, *_ = comoments(ds, hook, arg_a="hook", **kw)
    if s["n"] <= ddof:
        raise QueryError(f"hook: PCA needs more than {ddof} row(s); {hook} has {s['n']}")
    c = cov_of(s, ddof)
    if not np.all(np.isfinite(c)):
        raise QueryError(f"hook: the covariance of {hook} has NaN or infinite entries (non-finite values in the "
                         "data); PCA needs finite values")
    w, v = np.linalg.eigh(c)
    order = np.argsort(w)[::-1][: int(n_components)]
    comps = v[:, order].T.copy()
    sign = np.sign(comps[np.arange(len(comps)), np.argmax(np.abs(comps), axis=1)])
    comps *= np.where(sign == 0, 1.0, sign)[:, None]
    total = float(np.trace(c))
    return PCAResult(s["mean_a"], comps, w[order], w[order] / total if total > 0 else np.full(len(order), np.nan),
                     int(s["n"]))


def project(ds: Any, hook: str, directions: Any, name: str, threads: int | None = None, progress: Any = None,
            address: str | None = None) -> str:
    """Write the values of every row on ``directions`` (float ``[C, d]`` or ``[d]``) as derived hook
    ``name`` of the same dataset (float32 ``[C]`` per row, row-aligned, committed through the log).

    Values: ``float32(float64(X) @ float64(D).T)``, bit-equal to that expression on the whole array.
    One task per fragment writes that fragment's derived array — threads in-process, Ray tasks with
    ``address=`` (``"local"`` or a cluster address; the nodes must reach the store) — and this
    process commits the one log entry, so the result is the same bits either way.  After the call
    ``ds`` (and every dataset opened later) has the hook: batches, take, top-k, stats and correlate
    work on it.  Returns: ``name``.
    Raises: QueryError (unknown hook, name taken, directions of the wrong width / not finite);
        ClusterError (Ray unreachable)."""
    from actlake.query.derive import write_projection

    if hasattr(ds, "row_source"):
        raise QueryError("dataset: project writes into a store; call it on one side of a join")
    check_common(threads=threads)
    info = check_hook_in(ds.manifest, hook)
    if ds.num_rows == 0:
        raise QueryError("dataset: the store has no committed rows to query")
    if not isinstance(name, str) or not name or "/" in name:
        raise QueryError(f"name: must be a non-empty hook name without '/', got {name!r}")
    if name in ds.manifest.hooks:
        raise QueryError(f"name: {name!r} is already a hook of this dataset")
    dirs = as_array("directions", directions, (1, 2))
    dirs = dirs.reshape(1, -1) if dirs.ndim == 1 else dirs
    if dirs.shape[1] != int(np.prod(info.shape)):
        raise QueryError(f"directions: width {dirs.shape[1]} does not match hook {hook} "
                         f"(d = {int(np.prod(info.shape))})")
    d64 = directions.detach().cpu().double().numpy() if hasattr(directions, "detach") else directions
    mapper = None
    if address is not None:
        from actlake.client.query import executor_for

        mapper = executor_for(address, threads).map
    rec, _ = write_projection(ds.store, ds.snapshot, ds.manifest.hooks, ds.chunk_rows, hook,
                              np.asarray(d64, dtype=np.float64).reshape(dirs.shape), name, threads, progress,
                              mapper)
    ds.access.add_derived(name, rec)  # the open snapshot sees it now; its fragments are all covered
    return name
