"""``ds.query``: top-k / bottom-k, interval samples, statistics and fetch over a dataset.

Runs in-process on a thread pool (``actlake.query.local``) and, with ``address=``, as Ray tasks on a
cluster.  This module never imports Ray or ``actlake.service`` at import time: the Ray executor is
found through the indirection :data:`RAY_EXECUTOR` ("module:Class") and imported only when a query
is given ``address=``, so a trainer box without Ray can query local and S3 stores."""
from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from actlake.query.context import Decode, text_windows, vision_labels
from actlake.query.fetch import find_rows, key_table
from actlake.query.local import LocalExecutor, Progress
from actlake.query.plan import make_plan
from actlake.query.results import interval_samples, ranked, unit_stats
from actlake.query.scan import ScanContext
from actlake.query.validate import check_columns, check_count, check_hook, parse_spec, projection_for
from actlake.schemas.errors import QueryError, RowIdError
from actlake.schemas.query import QuerySpec

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset

RAY_EXECUTOR = "actlake.service.query_ray:RayExecutor"
"""Where the Ray executor lives; imported lazily (``address=`` given).  Its ``run(ctx, plan, agg,
progress)`` has the local executor's signature and returns the same merged state."""


def executor_for(address: str | None, threads: int | None = None) -> Any:
    """``LocalExecutor`` without an address; the Ray executor (``"local"``: an embedded Ray on a
    loopback address; else a cluster address) with one."""
    check_count("threads", threads)
    if address is None:
        return LocalExecutor(threads)
    module, cls = RAY_EXECUTOR.split(":")
    return getattr(importlib.import_module(module), cls)(address)


class QueryEngine:
    """Queries over one dataset snapshot.  Every method validates its arguments first (a
    ``QueryError`` naming the argument, before any chunk is read), takes ``address=`` (Ray) and
    ``progress=`` (``callable(rows_done, rows_total)``), and reads through the store's readers."""

    def __init__(self, ds: ActivationDataset, threads: int | None = None, tokenizer: Any = None):
        self.ds, self.threads = ds, threads
        self._tokenizer = tokenizer
        self._decode: Decode | Literal[False] | None = None if tokenizer is None else False

    # ---- plumbing -----------------------------------------------------------------------------
    def _prepare(self, **kw: Any) -> tuple[QuerySpec, ScanContext, list]:
        spec = parse_spec(**kw)
        info = check_hook(spec, self.ds.manifest.hooks, self.ds.num_rows)
        proj = projection_for(spec, info)
        cols = check_columns(spec, self.ds.manifest.provenance_columns)
        snap = self.ds.snapshot
        ctx = ScanContext(self.ds.store, spec.hook, info, self.ds.chunk_rows, snap.fragments,
                          snap.offsets.tolist(), proj, cols, need_x=spec.kind == "stats" and spec.rows,
                          verify=self.ds.verify_reads)
        plan = make_plan([f.num_rows for f in snap.fragments], self.ds.chunk_rows, info.row_bytes, spec.tasks)
        return spec, ctx, plan

    def _run(self, ctx: ScanContext, plan: list, agg: Any, address: str | None, progress: Progress | None) -> Any:
        return agg.finalize(executor_for(address, self.threads).run(ctx, plan, agg, progress))

    def _decoder(self) -> Decode | None:
        """Token decoder from ``tokenizer=`` or the manifest's tokenizer (offline only); None → ids."""
        if self._decode is None or self._decode is False:
            tok = self._tokenizer
            if tok is None:
                cands = []
                m = self.ds.manifest
                if m.tokenizer is not None:
                    cands.append(m.tokenizer.name)
                if m.job is not None:
                    cands.append(m.job.model)
                for c in cands:
                    try:
                        from transformers import AutoTokenizer

                        tok = AutoTokenizer.from_pretrained(c, local_files_only=True)
                        break
                    except Exception:
                        continue
            elif isinstance(tok, str):
                from transformers import AutoTokenizer

                tok = AutoTokenizer.from_pretrained(tok, local_files_only=True)
            self._decode = (lambda ids, t=tok: t.decode(list(ids))) if tok is not None else None
        return self._decode or None

    def contexts(self, row_ids: Sequence[int] | np.ndarray, width: int = 8) -> list[str]:
        """The ``context`` string of each row (see ``actlake.query.context``)."""
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        out = [""] * len(ids)
        if not len(ids):
            return out
        frag, local = self.ds.snapshot.locate(ids)
        vision = self.ds.manifest.model.kind == "vision" or "patch_row" in self.ds.manifest.provenance_columns
        decode = None if vision else self._decoder()
        for f in np.unique(frag):
            sel = np.flatnonzero(frag == f)
            prov = self.ds.access.provenance_of(int(f))
            strs = vision_labels(prov, local[sel]) if vision else text_windows(prov, local[sel], width, decode)
            for i, s in zip(sel.tolist(), strs, strict=True):
                out[i] = s
        return out

    def _with_provenance(self, table: pa.Table, context: int) -> pa.Table:
        rid = table.column("row_id").to_numpy()
        prov = self.ds.provenance(rid).drop_columns(["row_id"])
        for name in prov.column_names:
            table = table.append_column(name, prov.column(name))
        if context >= 0:
            table = table.append_column("context", pa.array(self.contexts(rid, context), pa.string()))
        return table

    # ---- top-k / bottom-k ---------------------------------------------------------------------
    def topk(self, hook: str, unit: int | Sequence[int] | None = None, direction: Any = None, k: int = 20,
             context: int = 8, dedup: str | None = None, largest: bool = True, encoder: Any = None,
             address: str | None = None, progress: Progress | None = None, tasks: int | None = None) -> pa.Table:
        """The ``k`` rows with the largest (``largest=False``: smallest) values of a unit, of each of
        several units, of a direction / each row of a matrix of directions, or of each latent of an
        SAE ``encoder`` (``{"W_enc": [d, L], "b_enc": [L], "b_dec": [d], "activation": "relu"|"topk",
        "k": K}``) computed on the fly.  Ties go to the smaller row id.

        Args:
            hook: hook name.  unit: int or list.  direction: float ``[d]`` or ``[C, d]``.
            k: rows per unit/direction/latent (> 0).  context: tokens each side in ``context``
            (-1: no context column).  dedup: "context" keeps one row per model context.
        Returns:
            ``pyarrow.Table`` with ``unit``/``direction``/``latent``, ``rank``, ``row_id`` (int64),
            ``value`` (float32), the provenance columns and ``context``; per unit, sorted by value
            descending (ascending for bottom-k).
        Raises:
            QueryError: unknown hook, unit out of range, direction of wrong width or dtype, k <= 0,
            empty store (before any data is read).  StoreDamagedError: missing/truncated chunks.
        """
        spec, ctx, plan = self._prepare(kind="topk" if largest else "bottomk", hook=hook, unit=unit,
                                        direction=direction, encoder=encoder, k=k, context=max(context, 0),
                                        dedup=dedup, tasks=tasks)
        table = ranked(lambda agg: self._run(ctx, plan, agg, address, progress), spec, ctx.projection, largest)
        return self._with_provenance(table, context)

    def bottomk(self, hook: str, unit: int | Sequence[int] | None = None, direction: Any = None, k: int = 20,
                context: int = 8, dedup: str | None = None, **kw: Any) -> pa.Table:
        """``topk(..., largest=False)``: the most negative rows (inhibition studies)."""
        return self.topk(hook, unit, direction, k, context, dedup, largest=False, **kw)

    # ---- interval samples ---------------------------------------------------------------------
    def sample_intervals(self, hook: str, unit: int | None = None, bins: int = 11, per_bin: int = 10,
                         direction: Any = None, encoder: Any = None, seed: int = 0, context: int = 8,
                         address: str | None = None, progress: Progress | None = None,
                         tasks: int | None = None) -> pa.Table:
        """Up to ``per_bin`` random rows from each of ``bins`` equal intervals of (0, max] of one
        unit / direction / latent (two passes: the max, then the samples; see
        ``actlake.query.topk.IntervalSample``).

        Returns: table with ``bin`` (int64), ``lo``, ``hi`` (float64 interval edges), ``row_id``,
        ``value``, provenance and ``context``, by bin.  Empty if no value is > 0.
        Raises: QueryError as ``topk``, and when more than one unit/direction/latent is given."""
        spec, ctx, plan = self._prepare(kind="intervals", hook=hook, unit=unit, direction=direction,
                                        encoder=encoder, bins=bins, per_bin=per_bin, seed=seed, tasks=tasks)
        table = interval_samples(lambda agg: self._run(ctx, plan, agg, address, progress), spec, ctx.projection)
        return self._with_provenance(table, context)

    # ---- statistics ---------------------------------------------------------------------------
    def stats(self, hook: str | Sequence[str] | None, by: str | None = None, threshold: float = 0.0, unit: Any = None,
              direction: Any = None, encoder: Any = None, histogram_bins: int | None = None, rows: bool = True,
              address: str | None = None, progress: Progress | None = None, tasks: int | None = None) -> dict:
        """Per-unit (or per direction / latent) statistics in one pass, float64 throughout.

        Returns:
            dict of numpy arrays ``[C]``: ``count`` (int64), ``mean``, ``var`` (population),
            ``skew``, ``kurtosis`` (excess), ``min``, ``max``, ``density`` (fraction > threshold),
            ``active`` (count > threshold); with ``histogram_bins``: ``hist`` int64 ``[C, bins]`` over
            shared edges ``hist_edges`` ``[bins + 1]`` (a second pass); with ``rows`` (identity
            only): ``row_norm`` and ``row_kurtosis`` summaries (dicts of count/mean/var/skew/
            kurtosis/min/max of each row's L2 norm and excess kurtosis; constant rows have no
            kurtosis and are left out of ``row_kurtosis``, whose ``count`` says how many rows it
            summarises).  Columns follow ``unit``'s order.  ``threshold`` must be finite and
            ``histogram_bins`` ≤ 10,000.  With ``by`` (position,
            token_type, label, token_id): ``{group value: such a dict}``.
            With ``by="hook"`` or a list of hooks (None: every hook): ``{hook: such a dict}``.
        Raises: QueryError (unknown hook, bad unit/direction, unknown ``by`` column, empty store).
        Algorithm: Pébay (2008) pairwise moment updates, see ``actlake.query.aggregates.Moments``."""
        if by == "hook" or hook is None or not isinstance(hook, str):
            names = list(self.ds.manifest.hooks) if hook is None else [hook] if isinstance(hook, str) else list(hook)
            for h in names:  # validate every hook before scanning any
                check_hook(parse_spec(kind="stats", hook=h), self.ds.manifest.hooks, self.ds.num_rows)
            return {h: self.stats(h, None if by == "hook" else by, threshold, unit, direction, encoder,
                                  histogram_bins, rows, address, progress, tasks) for h in names}
        spec, ctx, plan = self._prepare(kind="stats", hook=hook, by=by, threshold=threshold, unit=unit,
                                        direction=direction, encoder=encoder, histogram_bins=histogram_bins,
                                        rows=rows and unit is None and direction is None and encoder is None,
                                        tasks=tasks)
        return unit_stats(lambda agg: self._run(ctx, plan, agg, address, progress), spec, ctx.projection, ctx)

    # ---- fetch --------------------------------------------------------------------------------
    def fetch(self, row_ids: Any = None, *, doc_id: Any = None, context_id: Any = None, context_pos: Any = None,
              doc_pos: Any = None, image_id: Any = None, patch_row: Any = None, patch_col: Any = None,
              hooks: str | list[str] | None = None, context: int = -1) -> pa.Table:
        """Rows by id or by provenance key: ``doc_id`` + ``context_pos`` or ``doc_pos``,
        ``context_id`` + ``context_pos``, ``image_id`` + ``patch_row`` + ``patch_col`` (vectors of
        equal length; scalars broadcast), or a whole ``doc_id`` / ``context_id`` / ``image_id``.

        Returns: table of ``row_id``, provenance, one ``fixed_size_list<float32>[d]`` column per hook
        (all hooks by default; bf16/fp16 widened) and, with ``context >= 0``, ``context``; in the order
        of the keys given.
        Raises: RowIdError (row id out of range), QueryError (unknown hook or key set, key with no row)."""
        hook_list = (list(self.ds.manifest.hooks) if hooks is None else
                     [hooks] if isinstance(hooks, str) else list(hooks))
        bad = [h for h in hook_list if h not in self.ds.manifest.hooks]
        if bad:
            raise QueryError(f"hooks: {bad[0]!r} is not in this dataset; it has {', '.join(self.ds.manifest.hooks)}")
        if row_ids is not None:
            ids = np.asarray(row_ids).reshape(-1)
            if ids.size and not np.issubdtype(ids.dtype, np.integer):
                raise RowIdError(f"row_ids: must be integers, got {ids.dtype}")
            ids = ids.astype(np.int64)
            badr = ids[(ids < 0) | (ids >= self.ds.num_rows)]
            if badr.size:
                raise RowIdError(f"row_ids: {int(badr[0])} is out of range [0, {self.ds.num_rows})")
        else:
            cols = self.ds.manifest.provenance_columns
            keys = {"doc_id": doc_id, "context_id": context_id, "context_pos": context_pos, "doc_pos": doc_pos,
                    "image_id": image_id, "patch_row": patch_row, "patch_col": patch_col}
            kt = key_table(keys)
            missing = [c for c in kt.column_names if c != "_order" and c not in cols]
            if missing:
                raise QueryError(f"{missing[0]}: this dataset has no such provenance column ({', '.join(cols)})")
            access = self.ds.access
            ids = find_rows(kt, lambda f, c: access.reader(f).read_provenance(columns=c), self.ds.snapshot.offsets)
        table = self._with_provenance(pa.table({"row_id": pa.array(ids, pa.int64())}), context)
        acts = self.ds.take(ids, hooks=hook_list)
        for h in hook_list:
            a = acts[h].float().reshape(len(ids), -1).numpy()
            table = table.append_column(h, pa.FixedSizeListArray.from_arrays(pa.array(a.reshape(-1)), a.shape[1]))
        return table

    # ---- analyses (client/analysis.py, client/plots.py) -----------------------------------------
    def correlate(self, hook_a: str, hook_b: str | None = None, units_a: Any = None, units_b: Any = None,
                  **kw: Any) -> Any:
        """Pearson correlation between units / directions / SAE latents of two hooks (one pass,
        float64 co-moments): ``CorrelationResult`` (``.matrix [n_a, n_b]``, ``.best``).  See
        ``actlake.client.analysis.correlate``."""
        from actlake.client.analysis import correlate

        return correlate(self.ds, hook_a, hook_b, units_a, units_b, threads=kw.pop("threads", self.threads), **kw)

    def covariance(self, hook: str, **kw: Any) -> np.ndarray:
        """float64 ``[d, d]`` covariance of a hook (ddof=1); see ``actlake.client.analysis.covariance``."""
        from actlake.client.analysis import covariance

        return covariance(self.ds, hook, threads=kw.pop("threads", self.threads), **kw)

    def pca(self, hook: str, n_components: int, **kw: Any) -> Any:
        """``PCAResult`` (``.mean``, ``.components [k, d]``, ``.explained_variance``, ``.cosine(v)``)."""
        from actlake.client.analysis import pca

        return pca(self.ds, hook, n_components, threads=kw.pop("threads", self.threads), **kw)

    def project(self, hook: str, directions: Any, name: str, **kw: Any) -> str:
        """Write every row's values on ``directions [C, d]`` as derived hook ``name`` (float32)."""
        from actlake.client.analysis import project

        return project(self.ds, hook, directions, name, **kw)

    def plot(self, kind: str, hook: str, path: str | None = None, **kw: Any) -> Any:
        """A matplotlib figure (saved to ``path`` when given): ``kind`` "histogram" (per unit),
        "density" (over units, log scale) or "kurtosis" (per layer); see ``actlake.client.plots``."""
        from actlake.client.plots import plot

        return plot(self.ds, kind, hook, path, **kw)
