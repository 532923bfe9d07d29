"""``ds.query.covariance / pca / correlate``: co-moment queries over one or two row-aligned hooks
(mixed into ``client.query.QueryEngine``; same plan, executors and ``address=`` as every query)."""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa

from actlake.query.comoments import CoMoments, pca_from_cov
from actlake.query.local import Progress
from actlake.query.validate import as_array, check_hook, parse_spec, projection_for
from actlake.schemas.errors import QueryError


@dataclass
class PCAResult:
    """``mean`` float64 [d]; ``components`` float64 [k, d] (unit rows, largest variance first);
    ``explained_variance`` [k] and ``explained_variance_ratio`` [k]; ``cosines`` [m, k]: the cosine
    of each given vector with each component (None when no vectors were given)."""

    mean: np.ndarray
    components: np.ndarray
    explained_variance: np.ndarray
    explained_variance_ratio: np.ndarray
    cosines: np.ndarray | None = None


@dataclass
class CorrelationResult:
    """``matrix`` float64 [n_a, n_b] Pearson correlations; ``best`` table of ``unit``, ``best_unit``,
    ``corr`` (for every column of A, the column of B with the largest correlation; ties: lower index)."""

    matrix: np.ndarray
    best: pa.Table


class AnalysisMixin:
    """Covariance, PCA and correlation queries (needs ``self.ds``, ``self._prepare``, ``self._run``)."""

    ds: Any

    def _comoments(self, hook_a: str, hook_b: str | None, sel_a: dict, sel_b: dict | None, address: str | None,
                   progress: Progress | None, tasks: int | None) -> dict:
        spec_b = info_b = proj_b = None
        if hook_b is not None:
            spec_b = parse_spec(kind="stats", hook=hook_b, **(sel_b or {}))
            info_b = check_hook(spec_b, self.ds.manifest.hooks, self.ds.num_rows)
            proj_b = projection_for(spec_b, info_b)
        prepare = self._prepare  # type: ignore[attr-defined]
        spec, ctx, plan = prepare(kind="stats", hook=hook_a, rows=False, tasks=tasks, **sel_a)
        ctx.hook_b, ctx.info_b, ctx.projection_b = hook_b, info_b, proj_b
        agg = CoMoments(ctx.projection.num_values, None if proj_b is None else proj_b.num_values)
        return self._run(ctx, plan, agg, address, progress)  # type: ignore[attr-defined]

    def covariance(self, hook: str, unit: Sequence[int] | None = None, address: str | None = None,
                   progress: Progress | None = None, tasks: int | None = None) -> np.ndarray:
        """Population covariance of a hook's units (all, or ``unit``), float64 ``[C, C]``, one pass.

        Raises: QueryError (unknown hook, unit out of range, empty store)."""
        return self._comoments(hook, None, {"unit": unit}, None, address, progress, tasks)["cov"]

    def pca(self, hook: str, n_components: int, vectors: Any = None, address: str | None = None,
            progress: Progress | None = None, tasks: int | None = None) -> PCAResult:
        """Streaming mean and covariance (float64), then ``numpy.linalg.eigh``.

        Args: n_components: 1..d.  vectors: optional float ``[d]`` or ``[m, d]``: their cosines with
        the components come back in ``cosines``.
        Raises: QueryError (unknown hook, n_components out of range, vectors of the wrong width)."""
        info = check_hook(parse_spec(kind="stats", hook=hook), self.ds.manifest.hooks, self.ds.num_rows)
        d = int(np.prod(info.shape))
        if not 0 < int(n_components) <= d:
            raise QueryError(f"n_components: must be in [1, {d}], got {n_components}")
        vec = None
        if vectors is not None:
            vec = as_array("vectors", vectors, (1, 2))
            vec = vec.reshape(1, -1) if vec.ndim == 1 else vec
            if vec.shape[1] != d:
                raise QueryError(f"vectors: width {vec.shape[1]} does not match the hook's d = {d}")
        r = self._comoments(hook, None, {}, None, address, progress, tasks)
        p = pca_from_cov(r["mean_a"], r["cov"], int(n_components))
        cos = None
        if vec is not None:
            v = vec.astype(np.float64)
            cos = (v / np.linalg.norm(v, axis=1, keepdims=True)) @ p["components"].T
        return PCAResult(p["mean"], p["components"], p["explained_variance"], p["explained_variance_ratio"], cos)

    def correlate(self, hook_a: str, hook_b: str | None = None, units_a: Sequence[int] | None = None,
                  units_b: Sequence[int] | None = None, direction_a: Any = None, encoder_a: Any = None,
                  address: str | None = None, progress: Progress | None = None,
                  tasks: int | None = None) -> CorrelationResult:
        """Pearson correlation of units (or directions / SAE latents of ``hook_a``) with the units of
        ``hook_b`` (default: ``hook_a``'s own units), over the same rows, in one pass.

        Returns: CorrelationResult (``matrix`` float64 [n_a, n_b], ``best``).
        Raises: QueryError (unknown hooks, units out of range, bad direction/encoder)."""
        sel_a = {"unit": units_a, "direction": direction_a, "encoder": encoder_a}
        sel_a = {k: v for k, v in sel_a.items() if v is not None}
        hb = hook_b if hook_b is not None else hook_a
        sel_b = {"unit": units_b} if units_b is not None else {}
        r = self._comoments(hook_a, hb, sel_a, sel_b, address, progress, tasks)
        m = r["corr"]
        filled = np.where(np.isnan(m), -np.inf, m)
        best = filled.argmax(axis=1)
        spec_b = parse_spec(kind="stats", hook=hb, **sel_b)
        idx_b = projection_for(spec_b, self.ds.manifest.hooks[hb])
        names_b = idx_b.units if idx_b.units is not None else np.arange(idx_b.num_values)
        names_a = np.asarray(units_a) if units_a is not None else np.arange(m.shape[0])
        table = pa.table({"unit": pa.array(np.asarray(names_a, dtype=np.int64)),
                          "best_unit": pa.array(np.asarray(names_b, dtype=np.int64)[best]),
                          "corr": pa.array(m[np.arange(m.shape[0]), best])})
        return CorrelationResult(m, table)
