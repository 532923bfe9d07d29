"""Top-k heaps and interval samples: mergeable aggregates over projected values (pure numpy).

Same four-method contract as ``query/aggregates.py``.  Ties are broken by row id (the smaller row
id ranks first), so the result is a function of the data alone, never of how rows were split into
tasks or blocks."""
from __future__ import annotations

import numpy as np

from actlake.query.aggregates import Block, State
from actlake.query.values import splitmix64

NO_ROW = np.iinfo(np.int64).max  # row id of an empty slot (sorts after every real row)


def _clean(key: np.ndarray) -> np.ndarray:
    """NaN ranks below every number (-inf)."""
    return np.where(np.isnan(key), -np.inf, key) if np.isnan(key.max()) else key  # max propagates NaN


def select_block(key: np.ndarray, k: int) -> np.ndarray:
    """Indices of the k largest keys per column of one block whose rows have ascending row ids.

    Ties at the k-th value take the earliest rows (= smallest row ids).  O(n·C): one partition, no
    sort.  Args: key float ``[n, C]`` with n > k.  Returns: int64 ``[k, C]`` (unordered)."""
    n, c = key.shape
    thr = np.partition(key, n - k, axis=0)[n - k]
    gt = key > thr
    eq = key == thr
    need = k - gt.sum(axis=0)
    over = eq.sum(axis=0) > need
    if over.any():
        sel = gt | (eq & (np.cumsum(eq, axis=0) <= need))
    else:
        sel = gt | eq
    cols, rows = np.nonzero(sel.T)
    return rows.reshape(c, k).T


def _order(key: np.ndarray, rid: np.ndarray, k: int) -> np.ndarray:
    """Per column, indices of the first k entries by (key desc, row id asc).  ``[m, C]`` → ``[≤k, C]``."""
    return np.lexsort((rid, -key), axis=0)[:k]


class TopK:
    """The k rows with the largest values per column (``largest=False``: the smallest).

    With ``dedup`` (a provenance column, e.g. "context_id"), at most one row per distinct value of
    that column is kept per column: each context's best row, then the k best contexts.  This is
    exact under merging: a context dropped from a partial top-k has k better contexts there.

    ``finalize`` → ``{"values": float32 [k', C], "row_ids": int64 [k', C]}`` ordered best first,
    k' = min(k, rows); with dedup, a column with fewer than k' groups is padded with row id -1 and
    value NaN."""

    def __init__(self, width: int, k: int, largest: bool = True, dedup: str | None = None):
        self.width, self.k, self.largest, self.dedup = width, k, largest, dedup

    def zero(self) -> State:
        s = {"key": np.empty((0, self.width), np.float32), "rid": np.empty((0, self.width), np.int64)}
        if self.dedup:
            s["grp"] = np.empty((0, self.width), np.int64)
        return s

    def _block_state(self, block: Block) -> State:
        key = _clean(block.values if self.largest else -block.values)
        n = key.shape[0]
        rid = block.row_ids
        if self.dedup:
            grp = np.asarray(block.cols[self.dedup], dtype=np.int64)
            order = np.argsort(grp, kind="stable")  # row ids stay ascending inside a group
            g_sorted, key_s, rid_s = grp[order], key[order], rid[order]
            starts = np.flatnonzero(np.r_[True, g_sorted[1:] != g_sorted[:-1]])
            gmax = np.maximum.reduceat(key_s, starts, axis=0)
            member = np.repeat(np.arange(len(starts)), np.diff(np.r_[starts, n]))
            pos = np.where(key_s == gmax[member], np.arange(n)[:, None], n)
            first = np.minimum.reduceat(pos, starts, axis=0)
            first = np.minimum(first, n - 1)  # all-NaN groups were cleaned to -inf, so always found
            s = {"key": gmax, "rid": rid_s[first], "grp": np.broadcast_to(g_sorted[starts][:, None], gmax.shape)}
            return self._truncate(s)
        if n > self.k:
            idx = select_block(key, self.k)
            return {"key": np.take_along_axis(key, idx, axis=0), "rid": rid[idx]}
        # a copy: block arrays may be views of a read buffer that the next chunk overwrites
        return {"key": np.array(key), "rid": np.broadcast_to(rid[:, None], key.shape).copy()}

    def _truncate(self, s: State) -> State:
        o = _order(s["key"], s["rid"], self.k)
        return {name: np.take_along_axis(v, o, axis=0) for name, v in s.items()}

    def update(self, state: State, block: Block) -> State:
        """Fold a block in.  Fast path (no dedup, block rows after the state's rows, as a scan
        delivers them): a per-column threshold picks a few candidates in one comparison pass —
        with a full state, values strictly above its k-th value (an equal value has a larger row id
        and loses the tie); otherwise the smallest of the maxima of k row groups of the block, a
        lower bound of its k-th value — and a flat lexsort merges them.  Else a full merge."""
        rid = block.row_ids
        k, c, n = self.k, self.width, len(block.row_ids)
        full = len(state["key"]) >= k
        if self.dedup or not n or (len(state["rid"]) and rid[0] <= state["rid"].max()) or not (full or n >= k):
            return self.merge(state, self._block_state(block))
        key = block.values if self.largest else -block.values
        if full:  # NaN (ranked as -inf) never beats a full state: NaN > t is False, no cleaning pass
            flat = np.flatnonzero(key > state["key"][k - 1])  # flatnonzero: ~6x faster than nonzero
            if not len(flat):
                return state
        else:
            key = _clean(key)
            m = n // k
            thr = key[: k * m].reshape(k, m, c).max(axis=1).min(axis=0)
            flat = np.flatnonzero(key >= thr)
        r, j = np.divmod(flat, c)
        ks = len(state["key"])
        col = np.concatenate([np.tile(np.arange(c), ks), j])  # state is [ks, C] row-major
        allkey = np.concatenate([state["key"].ravel(), key[r, j]])
        allrid = np.concatenate([state["rid"].ravel(), rid[r]])
        o = np.lexsort((allrid, -allkey, col))
        starts = np.searchsorted(col[o], np.arange(c))
        keep = o[np.arange(len(o)) - starts[col[o]] < k]  # column-major, best first, k per column
        return {"key": np.ascontiguousarray(allkey[keep].reshape(c, k).T),
                "rid": np.ascontiguousarray(allrid[keep].reshape(c, k).T)}

    def merge(self, a: State, b: State) -> State:
        s = {name: np.concatenate([a[name], b[name]]) for name in a}
        if self.dedup and len(s["key"]):
            o = np.lexsort((s["rid"], -s["key"], s["grp"]), axis=0)
            s = {name: np.take_along_axis(v, o, axis=0) for name, v in s.items()}
            dup = np.zeros(s["grp"].shape, bool)
            dup[1:] = s["grp"][1:] == s["grp"][:-1]
            s["key"] = np.where(dup, -np.inf, s["key"]).astype(np.float32)
            s["rid"] = np.where(dup, NO_ROW, s["rid"])
        return self._truncate(s)

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        s = self._truncate(s)
        empty = s["rid"] == NO_ROW  # dedup with fewer than k distinct groups in a column
        vals = np.where(empty, np.nan, s["key"] if self.largest else -s["key"])
        return {"values": vals.astype(np.float32), "row_ids": np.where(empty, -1, s["rid"]).astype(np.int64)}


class Maximum:
    """Max of each column (NaN ignored); ``finalize`` → float64 ``[C]`` (-inf when empty)."""

    def __init__(self, width: int):
        self.width = width

    def zero(self) -> State:
        return {"max": np.full(self.width, -np.inf)}

    def update(self, state: State, block: Block) -> State:
        if not len(block.values):
            return state
        return self.merge(state, {"max": np.nanmax(_clean(block.values), axis=0).astype(np.float64)})

    def merge(self, a: State, b: State) -> State:
        return {"max": np.maximum(a["max"], b["max"])}

    def finalize(self, s: State) -> np.ndarray:
        return s["max"]


def interval_of(v: np.ndarray, vmax: float, bins: int) -> np.ndarray:
    """Interval index of each value: ``bins`` equal intervals of (0, vmax]; -1 for v <= 0 or NaN.

    Interval i holds ``i·vmax/bins <= v < (i+1)·vmax/bins`` (the last one includes vmax).
    Args: v float ``[n]``.  Returns: int64 ``[n]``."""
    v = np.asarray(v, dtype=np.float64)
    b = np.floor(v * (bins / vmax)) if vmax > 0 else np.zeros_like(v)
    b = np.clip(np.nan_to_num(b, nan=-1.0), -1, bins - 1).astype(np.int64)
    b[~(v > 0)] = -1
    return b


class IntervalSample:
    """Random rows from each of ``bins`` equal activation intervals between 0 and ``vmax``
    (the interval view of Bricken et al. 2023, "Towards Monosemanticity").

    Per interval, the ``per_bin`` rows with the smallest ``splitmix64(row_id ^ seed)`` priority are
    kept: a uniform sample without replacement that depends only on the data and the seed, so it
    merges exactly across tasks.  One column (the first) only.

    ``finalize`` → ``{"bin", "row_ids", "values"}`` (int64, int64, float32), by bin then priority."""

    def __init__(self, bins: int, per_bin: int, vmax: float, seed: int = 0):
        self.bins, self.per_bin, self.vmax, self.seed = bins, per_bin, float(vmax), seed

    def zero(self) -> State:
        return {"bin": np.empty(0, np.int64), "prio": np.empty(0, np.uint64), "rid": np.empty(0, np.int64),
                "val": np.empty(0, np.float32)}

    def priority(self, row_ids: np.ndarray) -> np.ndarray:
        """uint64 ``[n]`` sampling priority of each row id."""
        return splitmix64(np.asarray(row_ids, np.int64).astype(np.uint64) ^ splitmix64(np.array([self.seed]))[0])

    def update(self, state: State, block: Block) -> State:
        v = block.values[:, 0]
        b = interval_of(v, self.vmax, self.bins)
        keep = b >= 0
        rid = block.row_ids[keep]
        return self.merge(state, {"bin": b[keep], "prio": self.priority(rid), "rid": rid,
                                  "val": v[keep].astype(np.float32)})

    def merge(self, a: State, b: State) -> State:
        s = {name: np.concatenate([a[name], b[name]]) for name in a}
        o = np.lexsort((s["rid"], s["prio"], s["bin"]))
        s = {name: v[o] for name, v in s.items()}
        starts = np.searchsorted(s["bin"], s["bin"], side="left")
        keep = np.arange(len(o)) - starts < self.per_bin
        return {name: v[keep] for name, v in s.items()}

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        return {"bin": s["bin"], "row_ids": s["rid"], "values": s["val"]}
