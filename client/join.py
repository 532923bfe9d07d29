"""``actlake.join(ds_a, ds_b)``: two datasets aligned on identical tokens, seen as one.

Two extraction jobs over the same source and token selection (two models sharing a tokenizer, two
seeds, two hooks extracted at different times) store the same tokens, possibly in different row
orders.  Rows are matched on their provenance key — ``(doc_id, doc_pos)`` where both sides have
``doc_pos``, else ``(doc_id, context_id, context_pos)``; vision: ``(image_id, patch_row,
patch_col)`` plus ``context_pos`` — and the ``token_id`` of every matched pair must agree, so a
one-token shift (same key, neighbouring token) is an :class:`AlignmentError` naming the first
differing row.  Rows present on one side only (different BOS handling, truncation) are reported in
``JoinedDataset.report`` and raise unless ``on_mismatch="drop"``.

Row r of the joined dataset is the r-th matched row in ``ds_a``'s row order; ``index_a[r]`` /
``index_b[r]`` are its row ids in each side.  Hooks are the union (a name on both sides becomes
``a/NAME`` and ``b/NAME``).  The provenance key columns are read once (24–32 bytes per row and side)."""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import numpy as np
import pyarrow as pa

from actlake.query.rowsource import MappedRows, StoreRows
from actlake.schemas.errors import AlignmentError, QueryError

if TYPE_CHECKING:
    from actlake.client.join_batches import JoinedBatches

TEXT_KEYS = (("doc_id", "doc_pos"), ("doc_id", "context_id", "context_pos"))
VISION_KEYS = (("image_id", "context_pos", "patch_row", "patch_col"), ("doc_id", "context_pos"))


@dataclass
class JoinReport:
    """What the join found.

    Attributes:
        keys: the provenance columns rows were matched on.  matched: rows in the joined dataset.
        only_a / only_b: int64 row ids present on one side only (dropped with ``on_mismatch="drop"``).
    """

    keys: tuple[str, ...]
    matched: int
    only_a: np.ndarray
    only_b: np.ndarray

    def __str__(self) -> str:
        return (f"{self.matched:,} rows matched on {', '.join(self.keys)}; {len(self.only_a):,} only in a, "
                f"{len(self.only_b):,} only in b")


def _keys_of(ds: Any) -> list[str]:
    return list(ds.manifest.provenance_columns)


def _prov(ds: Any, cols: list[str]) -> pa.Table:
    parts = [ds.access.reader(f).read_provenance(columns=cols) for f in range(len(ds.snapshot.fragments))]
    t = pa.concat_tables(parts) if parts else pa.table({c: pa.array([], pa.int64()) for c in cols})
    return t.append_column("_row", pa.array(np.arange(t.num_rows, dtype=np.int64)))


def _describe(t: pa.Table, row: int, cols: list[str]) -> str:
    return ", ".join(f"{c} {t.column(c)[row].as_py()}" for c in cols if c in t.column_names)


def align(ds_a: Any, ds_b: Any, on_mismatch: str = "error") -> tuple[np.ndarray, np.ndarray, JoinReport]:
    """Match the rows of two datasets on provenance.  Returns (index_a, index_b, report): int64
    ``[m]`` row ids, in ds_a's row order.

    Raises: AlignmentError (token differs at a key — names the first such row of a —, repeated
    keys, or unmatched rows with ``on_mismatch="error"``); QueryError (no common key columns, bad
    ``on_mismatch``)."""
    if on_mismatch not in ("error", "drop"):
        raise QueryError(f"on_mismatch: must be 'error' or 'drop', got {on_mismatch!r}")
    ca, cb = set(_keys_of(ds_a)), set(_keys_of(ds_b))
    vision = "patch_row" in ca and "patch_row" in cb
    keys = next((k for k in (VISION_KEYS if vision else TEXT_KEYS) if set(k) <= ca and set(k) <= cb), None)
    if keys is None:
        raise QueryError(f"ds_b: no common provenance key to align on (a has {sorted(ca)}, b has {sorted(cb)})")
    tok = "token_id" if "token_id" in ca and "token_id" in cb else None
    cols = list(keys) + ([tok] if tok else [])
    ta, tb = _prov(ds_a, cols), _prov(ds_b, cols)
    for name, t in (("ds_a", ta), ("ds_b", tb)):
        if t.group_by(list(keys)).aggregate([]).num_rows != t.num_rows:
            raise AlignmentError(f"{name}: provenance keys ({', '.join(keys)}) repeat; rows cannot be aligned")
    j = ta.rename_columns([*cols, "_row"][: len(cols)] + ["_a"]).join(
        tb.rename_columns(list(keys) + ([f"{tok}_b"] if tok else []) + ["_b"]), list(keys), join_type="full outer")
    a = j.column("_a").to_numpy(zero_copy_only=False)
    b = j.column("_b").to_numpy(zero_copy_only=False)
    a = np.where(np.isnan(a), -1, a).astype(np.int64) if a.dtype.kind == "f" else a.astype(np.int64)
    b = np.where(np.isnan(b), -1, b).astype(np.int64) if b.dtype.kind == "f" else b.astype(np.int64)
    both = (a >= 0) & (b >= 0)
    if tok:
        t_a = j.column(tok).to_numpy(zero_copy_only=False)
        t_b = j.column(f"{tok}_b").to_numpy(zero_copy_only=False)
        bad = np.flatnonzero(both & (t_a != t_b))
        if bad.size:
            i = bad[np.argmin(a[bad])]
            ra, rb = int(a[i]), int(b[i])
            raise AlignmentError(
                f"ds_b: rows differ at row {ra} of a ({_describe(ta, ra, list(keys))}): token {int(t_a[i])} in a, "
                f"{int(t_b[i])} in b (row {rb}); {bad.size:,} of {int(both.sum()):,} matched rows differ — "
                "a token shift? (check BOS handling / context_len)")
    only_a = np.sort(a[b < 0])
    only_b = np.sort(b[a < 0])
    order = np.argsort(a[both], kind="stable")
    ia, ib = a[both][order], b[both][order]
    report = JoinReport(tuple(keys), len(ia), only_a, only_b)
    if on_mismatch == "error" and (len(only_a) or len(only_b)):
        side, t, r = ("a", ta, int(only_a[0])) if len(only_a) else ("b", tb, int(only_b[0]))
        raise AlignmentError(f"ds_b: row {r} of {side} ({_describe(t, r, cols)}) has no counterpart ({report}); "
                             "pass on_mismatch='drop' to drop such rows")
    return ia, ib, report


class JoinedDataset:
    """Rows matched between two datasets; hooks are the union (see the module docstring).

    API as ``ActivationDataset`` where it makes sense: ``num_rows``, ``hooks``, ``take``,
    ``provenance`` (of side a, with ``row_id_a`` / ``row_id_b``), ``batches`` and ``query`` (top-k,
    bottom-k, stats, correlate, covariance, pca).  ``report`` says what was matched and dropped."""

    def __init__(self, ds_a: Any, ds_b: Any, on_mismatch: Literal["error", "drop"] = "error",
                 prefixes: tuple[str, str] = ("a/", "b/")):
        self.ds_a, self.ds_b = ds_a, ds_b
        self.index_a, self.index_b, self.report = align(ds_a, ds_b, on_mismatch)
        common = set(ds_a.manifest.hooks) & set(ds_b.manifest.hooks)
        self._canon: dict[str, tuple[int, str]] = {}  # the joined names: prefixed only where both sides have h
        self._side: dict[str, tuple[int, str]] = {}  # those, and "a/NAME" / "b/NAME" for every hook
        for i, (ds, pre) in enumerate(((ds_a, prefixes[0]), (ds_b, prefixes[1]))):
            for h in ds.manifest.hooks:
                self._canon[pre + h if h in common else h] = (i, h)
                self._side[pre + h] = (i, h)
        self._side.update(self._canon)

    @property
    def num_rows(self) -> int:
        return len(self.index_a)

    def __len__(self) -> int:
        return self.num_rows

    def __repr__(self) -> str:
        return (f"JoinedDataset({self.ds_a.uri!r} ⋈ {self.ds_b.uri!r}, rows={self.num_rows:,}, "
                f"hooks={list(self._canon)})")

    @property
    def hooks(self) -> dict[str, dict[str, Any]]:
        return {n: (self.ds_a, self.ds_b)[i].hooks[h] for n, (i, h) in self._canon.items()}

    @property
    def hook_infos(self) -> dict[str, Any]:
        """Joined name → HookInfo of the side it comes from."""
        return {n: (self.ds_a, self.ds_b)[i].manifest.hooks[h] for n, (i, h) in self._side.items()}

    def _check(self, hooks: Any, arg: str = "hooks") -> list[str]:
        names = list(self._canon) if hooks is None else [hooks] if isinstance(hooks, str) else list(hooks)
        bad = [h for h in names if h not in self._side]
        if bad:
            raise QueryError(f"{arg}: {bad[0]!r} is not in this joined dataset; it has {', '.join(self._canon)} "
                             "(any hook also as a/NAME or b/NAME)")
        return names

    def row_source(self, hook: str, arg: str = "hook") -> MappedRows:
        """Row source of a joined hook (``query.rowsource.MappedRows`` over its side)."""
        self._check(hook, arg)
        i, h = self._side[hook]
        ds = (self.ds_a, self.ds_b)[i]
        snap = ds.snapshot
        base = StoreRows(ds.store, snap.fragments, snap.offsets.tolist(), ds.manifest.hooks, ds.chunk_rows)
        return MappedRows(base, (self.index_a, self.index_b)[i], {hook: h})

    def column(self, name: str) -> np.ndarray:
        """Side a's provenance column ``name`` over the joined rows: ``[num_rows]`` (numbers as numpy
        dtypes, strings as object arrays), read once and cached (8 bytes a row for ids).
        Raises: QueryError if side a has no such column."""
        cache = self.__dict__.setdefault("_columns", {})
        if name not in cache:
            if name not in _keys_of(self.ds_a):
                cols = ", ".join(_keys_of(self.ds_a))
                raise QueryError(f"{name}: provenance column {name!r} is not in side a ({cols})")
            from actlake.query.scan import _column

            t = _prov(self.ds_a, [name])
            cache[name] = _column(t, name)[self.index_a]
        return cache[name]

    def _ids(self, row_ids: Any) -> np.ndarray:
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        if ids.size and (ids.min() < 0 or ids.max() >= self.num_rows):
            from actlake.schemas.errors import RowIdError

            raise RowIdError(f"row_ids: {int(ids[(ids < 0) | (ids >= self.num_rows)][0])} is out of range "
                             f"[0, {self.num_rows})")
        return ids

    def take(self, row_ids: Any, hooks: Any = None) -> dict[str, Any]:
        """Rows by joined id, in the order given: ``{hook: tensor [n, ...]}`` in the stored dtype."""
        ids = self._ids(row_ids)
        out = {}
        for name in self._check(hooks):
            i, h = self._side[name]
            out[name] = (self.ds_a, self.ds_b)[i].take((self.index_a, self.index_b)[i][ids], hooks=h)[h]
        return out

    def provenance(self, row_ids: Any) -> pa.Table:
        """Side a's provenance of the rows, ``row_id`` = joined id, plus ``row_id_a`` and ``row_id_b``."""
        ids = self._ids(row_ids)
        t = self.ds_a.provenance(self.index_a[ids]).drop_columns(["row_id"])
        return (t.add_column(0, "row_id", pa.array(ids)).append_column("row_id_a", pa.array(self.index_a[ids]))
                .append_column("row_id_b", pa.array(self.index_b[ids])))

    def batches(self, batch_size: int, hooks: Any = None, shuffle: bool = True, seed: int = 0, epoch: int = 0,
                rank: int = 0, world_size: int = 1, drop_last: bool = True, with_provenance: bool = False,
                block_rows: int = 4096, window_blocks: int = 16) -> JoinedBatches:
        """Shuffled batches ``{hook: tensor[B, ...]}`` over the joined rows (see JoinedBatches)."""
        from actlake.client.join_batches import JoinedBatches

        return JoinedBatches(self, batch_size, self._check(hooks), shuffle, seed, epoch, rank, world_size, drop_last,
                             with_provenance, block_rows, window_blocks)

    @property
    def query(self) -> Any:
        """Top-k, bottom-k, stats, correlate, covariance and PCA over the joined rows."""
        from actlake.client.join_query import JoinedQuery

        return self.__dict__.setdefault("_query", JoinedQuery(self))


def join(ds_a: Any, ds_b: Any, on_mismatch: Literal["error", "drop"] = "error",
         prefixes: tuple[str, str] = ("a/", "b/")) -> JoinedDataset:
    """Align two datasets on identical tokens and expose them as one (hooks: the union).

    Args:
        ds_a, ds_b: open datasets (``actlake.open_dataset``).  on_mismatch: "error" raises when a row
            exists on one side only; "drop" drops such rows (``.report`` lists them).
        prefixes: put in front of a hook name present on both sides.
    Returns: JoinedDataset, rows in ds_a's order.
    Raises: AlignmentError (a token differs at the same key, e.g. a one-token shift — the message
        names the first differing row —; repeated keys; unmatched rows with "error");
        QueryError (no common provenance key)."""
    return JoinedDataset(ds_a, ds_b, on_mismatch, prefixes)
