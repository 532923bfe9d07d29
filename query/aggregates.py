"""Mergeable aggregates: the four-method contract every query is built from (pure numpy).

An aggregate is a small object holding its configuration; its *state* is a plain dict of numpy
arrays (picklable, so Ray tasks can return it).  The contract, after Ray's ``AggregateFnV2``:

* ``zero() -> state``                      the empty partial result;
* ``update(state, block) -> state``        fold one :class:`Block` of rows in;
* ``merge(a, b) -> state``                 combine two partial results (a's rows precede b's);
* ``finalize(state) -> result``            the user-facing numbers.

For every class ``finalize(merge(update(zero, A), update(zero, B))) == finalize(update(zero, A⊕B))``
(up to float rounding), which is proven once per class in ``tests/query/test_aggregates.py``; an
executor then only has to merge partial results in plan order to be correct.  Top-k and interval
samples live in ``query/topk.py``."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from actlake.query.values import row_norms_kurtosis, slab_rows

State = dict[str, Any]


@dataclass
class Block:
    """Rows handed to ``update``.

    Attributes:
        values: float32 ``[n, C]`` projected values (units, directions or SAE latents); for
            :class:`ValueStats` over a bfloat16 hook, its stored uint16 bits (``ScanContext.stored_bits``).
        row_ids: int64 ``[n]`` global row ids, ascending.
        x: float32 ``[n, d]`` the hook's full rows (needed by per-row summaries), or None.
        cols: provenance columns needed by the query (``context_id`` for dedup, the ``by`` column).
        values_b: float32 ``[n, B]`` values of a second hook / projection (co-moments), or None.
    """

    values: np.ndarray
    row_ids: np.ndarray
    x: np.ndarray | None = None
    cols: dict[str, np.ndarray] = field(default_factory=dict)
    values_b: np.ndarray | None = None

    def take(self, idx: np.ndarray) -> Block:
        """The rows at ``idx`` (ascending indices keep row ids ascending); values that are the rows
        themselves (no projection) are taken once and stay the rows."""
        values = self.values[idx]
        x = None if self.x is None else values if self.x is self.values else self.x[idx]
        return Block(values, self.row_ids[idx], x,
                     {k: v[idx] for k, v in self.cols.items()}, None if self.values_b is None else self.values_b[idx])


def _shifted_power_sums(v: np.ndarray, ref: np.ndarray, rows: int, minmax: bool = True):
    """Column sums of ``(v - ref)**p`` for p = 1..4 (float64 ``[4, C]``) and, with ``minmax``, the
    column min and max of ``v`` (its dtype; else None), over slabs of ``rows`` rows that fit in cache.
    Each slab: one subtraction into a float64 buffer, its square into another, three reductions."""
    n, c = v.shape
    sums = np.zeros((4, c))
    y = np.empty((min(rows, n), c))
    y2 = np.empty_like(y)
    lo = hi = None
    for r0 in range(0, n, rows):
        x = v[r0:r0 + rows]
        m = len(x)
        d, d2 = np.subtract(x, ref, out=y[:m]), y2[:m]
        sums[0] += np.add.reduce(d, axis=0)
        np.multiply(d, d, out=d2)
        sums[1] += np.add.reduce(d2, axis=0)
        sums[2] += np.einsum("ij,ij->j", d2, d)
        sums[3] += np.einsum("ij,ij->j", d2, d2)
        if minmax:
            a, b = np.minimum.reduce(x, axis=0), np.maximum.reduce(x, axis=0)
            lo = a if lo is None else np.minimum(lo, a)
            hi = b if hi is None else np.maximum(hi, b)
    return sums, lo, hi


def _far(n: int, sums: np.ndarray) -> bool:
    """Whether the shift of power sums ``sums`` ``[4, C]`` over ``n`` rows lies more than one standard
    deviation from the mean in some column (then the sums are taken again about the mean)."""
    mu = sums[0] / n
    return bool(np.any(mu * mu * n > sums[1] - n * mu * mu))


def _central(n: int, ref: np.ndarray, sums: np.ndarray, lo: np.ndarray, hi: np.ndarray) -> State:
    """A :class:`Moments` state from power sums ``[4, C]`` of ``v - ref`` over ``n > 0`` rows."""
    s1, s2, s3, s4 = sums
    mu = s1 / n
    m2 = s2 - n * mu * mu
    m3 = s3 - 3.0 * mu * s2 + 2.0 * n * mu ** 3
    m4 = s4 - 4.0 * mu * s3 + 6.0 * mu * mu * s2 - 3.0 * n * mu ** 4
    return {"n": n, "mean": ref + mu, "m2": np.maximum(m2, 0.0), "m3": m3, "m4": np.maximum(m4, 0.0),
            "min": lo.astype(np.float64), "max": hi.astype(np.float64)}


class Moments:
    """Count, mean, central moments M2..M4, min and max per column, in float64.

    Each block's moments are computed about (nearly) the block's own mean and merged with the pairwise
    update of Chan, Golub & LeVeque (1979) extended to 3rd and 4th order by Pébay (2008), "Formulas
    for robust, one-pass parallel computation of covariances and arbitrary-order statistical
    moments", Sandia SAND2008-6212, eq. (3.1): no sum of raw powers is ever formed, so data with
    a large mean (1e4) and a small variance keeps its precision.

    ``finalize`` returns population statistics: ``var = M2/n``, ``skew = sqrt(n) M3 / M2^1.5``,
    ``kurtosis = n M4 / M2^2 - 3`` (excess, Fisher; as ``scipy.stats`` with ``bias=True``); NaN where
    a column is constant or empty."""

    def __init__(self, width: int):
        self.width = width

    def zero(self) -> State:
        z = np.zeros(self.width)
        return {"n": 0, "mean": z, "m2": z, "m3": z, "m4": z,
                "min": np.full(self.width, np.inf), "max": np.full(self.width, -np.inf)}

    def of(self, v: np.ndarray) -> State:
        """State of one array ``[n, C]`` (any float dtype), float64 throughout.

        Power sums of ``v - ref`` are taken in float64 over cache-sized slabs of rows, ``ref`` being
        the mean of the first slab; they are turned into central moments once per array.  The shift
        keeps this exact in float64 for data with large means: should ``ref`` lie more than one
        standard deviation from the array's mean in some column, the sums are taken again about that
        mean (the classical two-pass algorithm)."""
        n = v.shape[0]
        if n == 0:
            return self.zero()
        rows = slab_rows(v.shape[1])
        ref = v[:rows].mean(axis=0, dtype=np.float64)
        sums, lo, hi = _shifted_power_sums(v, ref, rows)
        if _far(n, sums):  # ref far from the mean (trend, outliers in the first rows)
            ref = ref + sums[0] / n
            sums, _, _ = _shifted_power_sums(v, ref, rows, minmax=False)
        assert lo is not None and hi is not None  # set by the first pass (minmax=True, n > 0)
        return _central(n, ref, sums, lo, hi)

    def update(self, state: State, block: Block) -> State:
        return self.merge(state, self.of(block.values))

    def merge(self, a: State, b: State) -> State:
        na, nb = a["n"], b["n"]
        if nb == 0:
            return a
        if na == 0:
            return b
        n = na + nb
        d = b["mean"] - a["mean"]
        d2 = d * d
        f = na * nb / n
        m2 = a["m2"] + b["m2"] + d2 * f
        m3 = a["m3"] + b["m3"] + d * d2 * f * (na - nb) / n + 3.0 * d * (na * b["m2"] - nb * a["m2"]) / n
        m4 = (a["m4"] + b["m4"] + d2 * d2 * f * (na * na - na * nb + nb * nb) / (n * n)
              + 6.0 * d2 * (na * na * b["m2"] + nb * nb * a["m2"]) / (n * n)
              + 4.0 * d * (na * b["m3"] - nb * a["m3"]) / n)
        return {"n": n, "mean": a["mean"] + d * (nb / n), "m2": m2, "m3": m3, "m4": m4,
                "min": np.minimum(a["min"], b["min"]), "max": np.maximum(a["max"], b["max"])}

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        n = s["n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            ok = s["m2"] > 0
            var = s["m2"] / n if n else np.full(self.width, np.nan)
            skew = np.where(ok, np.sqrt(n) * s["m3"] / np.where(ok, s["m2"], 1.0) ** 1.5, np.nan)
            kurt = np.where(ok, n * s["m4"] / np.where(ok, s["m2"], 1.0) ** 2 - 3.0, np.nan)
        empty = np.full(self.width, np.nan)
        return {"count": np.full(self.width, n, dtype=np.int64), "mean": s["mean"] if n else empty, "var": var,
                "skew": skew, "kurtosis": kurt, "min": s["min"] if n else empty, "max": s["max"] if n else empty}


class Density:
    """Fraction of rows whose value is ``> threshold``, per column (the SAE "feature density")."""

    def __init__(self, width: int, threshold: float = 0.0):
        self.width, self.threshold = width, threshold

    def zero(self) -> State:
        return {"n": 0, "above": np.zeros(self.width, dtype=np.int64)}

    def update(self, state: State, block: Block) -> State:
        v = block.values
        above = np.zeros(self.width, np.int64)
        rows = slab_rows(self.width)
        gt = np.empty((min(rows, len(v)), self.width), np.bool_)
        for r0 in range(0, len(v), rows):  # cache-sized slabs; counts summed as uint8 → int32 per slab
            g = np.greater(v[r0:r0 + rows], self.threshold, out=gt[: len(v[r0:r0 + rows])])
            above += np.add.reduce(g.view(np.uint8), axis=0, dtype=np.int32)
        return self.merge(state, {"n": v.shape[0], "above": above})

    def merge(self, a: State, b: State) -> State:
        return {"n": a["n"] + b["n"], "above": a["above"] + b["above"]}

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        with np.errstate(divide="ignore", invalid="ignore"):
            return {"density": s["above"] / s["n"] if s["n"] else np.full(self.width, np.nan),
                    "active": s["above"]}


class Histogram:
    """Counts in ``bins`` equal-width bins over ``[lo, hi]``, the same bins for every column.

    Values below ``lo`` / above ``hi`` are counted in the first / last bin (the engine takes the
    range from a first pass's min and max, so nothing falls outside).  NaN is not counted.  Bin
    membership equals ``numpy.histogram(v, bins, (lo, hi))`` (same edge correction)."""

    def __init__(self, width: int, bins: int, lo: float, hi: float):
        self.width, self.bins = width, bins
        lo, hi = float(lo), float(hi)
        if not hi > lo:  # constant data: numpy.histogram's own choice of range
            lo, hi = lo - 0.5, hi + 0.5
        self.lo, self.hi = lo, hi

    @property
    def edges(self) -> np.ndarray:
        """float64 ``[bins + 1]``."""
        return np.linspace(self.lo, self.hi, self.bins + 1)

    def zero(self) -> State:
        return {"counts": np.zeros((self.width, self.bins), dtype=np.int64)}

    def update(self, state: State, block: Block) -> State:
        from actlake.query import kernels

        counts = np.zeros((self.width, self.bins), dtype=np.int64)
        kernels.histogram_counts(block.values, self.lo, self.hi, self.edges, counts)
        return {"counts": state["counts"] + counts}

    def merge(self, a: State, b: State) -> State:
        return {"counts": a["counts"] + b["counts"]}

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        return {"hist": s["counts"], "hist_edges": self.edges}


class RowSummary:
    """Moments of two per-row quantities: the L2 norm and the excess kurtosis of the row's d values
    (the sparsity measure of the "null code" studies), computed from ``block.x``.  A constant row
    (all d values equal, e.g. a dead MLP row of zeros) has no kurtosis: it counts in ``row_norm``
    but not in ``row_kurtosis`` (whose ``count`` is then smaller)."""

    def __init__(self) -> None:
        self._m = Moments(1)

    def zero(self) -> State:
        return {"norm": self._m.zero(), "kurt": self._m.zero()}

    def of(self, rows: np.ndarray) -> State:
        """State of per-row (norm, kurtosis) pairs, float64 ``[n, 2]`` (kurtosis NaN: skipped)."""
        kurt = rows[:, 1:]
        return {"norm": self._m.of(rows[:, :1]), "kurt": self._m.of(kurt[~np.isnan(kurt[:, 0])])}

    def update(self, state: State, block: Block) -> State:
        assert block.x is not None, "RowSummary needs the full rows"
        return self.merge(state, self.of(row_norms_kurtosis(block.x)))

    def merge(self, a: State, b: State) -> State:
        return {k: self._m.merge(a[k], b[k]) for k in ("norm", "kurt")}

    def finalize(self, s: State) -> dict[str, dict[str, float]]:
        return {name: {k: v[0].item() for k, v in self._m.finalize(s[key]).items()}
                for name, key in (("row_norm", "norm"), ("row_kurtosis", "kurt"))}


class Combined:
    """Several aggregates over the same blocks; the result merges their result dicts."""

    def __init__(self, parts: dict[str, Any]):
        self.parts = parts

    def zero(self) -> State:
        return {k: a.zero() for k, a in self.parts.items()}

    def update(self, state: State, block: Block) -> State:
        return {k: a.update(state[k], block) for k, a in self.parts.items()}

    def merge(self, a: State, b: State) -> State:
        return {k: agg.merge(a[k], b[k]) for k, agg in self.parts.items()}

    def finalize(self, s: State) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for k, a in self.parts.items():
            out.update(a.finalize(s[k]))
        return out


class ValueStats(Combined):
    """:class:`Moments`, :class:`Density` and, with ``rows``, :class:`RowSummary` in one compiled pass
    per block (``query/kernels.py``): the same states and results as ``Combined`` of the three, about
    eight times less CPU per value.  The shift and its fallback are those of ``Moments.of``.  Blocks
    may carry float rows or the uint16 bits of bfloat16 rows (widened inside the pass)."""

    def __init__(self, width: int, threshold: float = 0.0, rows: bool = False):
        self.parts: dict[str, Any] = {"m": Moments(width), "d": Density(width, threshold)}
        if rows:
            self.parts["r"] = RowSummary()
        self.threshold, self.rows = threshold, rows

    def update(self, state: State, block: Block) -> State:
        from actlake.query import kernels

        v, n = block.values, block.values.shape[0]
        if n == 0:
            return state
        fused = self.rows and block.x is v  # unprojected: the values are the rows (scans and take keep this)
        ref = kernels.floats(v[: slab_rows(v.shape[1])]).mean(axis=0, dtype=np.float64)
        sums, lo, hi, above, rows = kernels.value_stats(v, ref, self.threshold, fused)
        if _far(n, sums):  # the fall-back of Moments.of: the sums again, about the mean
            ref = ref + sums[0] / n
            sums = kernels.value_stats(v, ref, self.threshold, False)[0]
        part = {"m": _central(n, ref, sums, lo, hi), "d": {"n": n, "above": above}}
        if self.rows:
            assert block.x is not None, "per-row summaries need the full rows"
            rows = rows if fused else kernels.row_norms_kurtosis(block.x)
            part["r"] = self.parts["r"].of(rows)
        return self.merge(state, part)


class Grouped:
    """``inner`` computed separately for every distinct value of provenance column ``by``.

    Memory is one inner state per group seen (e.g. positions × units for ``by="context_pos"``)."""

    def __init__(self, inner: Any, by: str):
        self.inner, self.by = inner, by

    def zero(self) -> State:
        return {}

    def update(self, state: State, block: Block) -> State:
        keys = block.cols[self.by]
        uniq, inv = np.unique(keys, return_inverse=True)
        order = np.argsort(inv.reshape(-1), kind="stable")
        bounds = np.searchsorted(inv.reshape(-1)[order], np.arange(len(uniq) + 1))
        out = dict(state)
        for i, key in enumerate(uniq.tolist()):
            part = self.inner.update(self.inner.zero(), block.take(order[bounds[i]:bounds[i + 1]]))
            out[key] = self.inner.merge(out[key], part) if key in out else part
        return out

    def merge(self, a: State, b: State) -> State:
        out = dict(a)
        for key, s in b.items():
            out[key] = self.inner.merge(out[key], s) if key in out else s
        return out

    def finalize(self, s: State) -> dict[Any, Any]:
        return {key: self.inner.finalize(s[key]) for key in sorted(s, key=lambda k: (str(type(k)), k))}
