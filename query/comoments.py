"""Co-moments of two sets of columns: the mergeable state behind correlate, covariance and PCA.

Same four-method contract as ``query/aggregates.py`` (zero / update / merge / finalize), over
:class:`PairBlock` s (values of the same rows seen through two projections).  All sums are float64.

Each block's co-moment matrix is formed about the block's own means (exactly, from sums of the
block shifted by a value close to its mean: :meth:`CoMoments.of`) and blocks are merged with the
pairwise update of Chan, Golub & LeVeque (1979) for the second moment, generalised to co-moments by
Pébay (2008), "Formulas for robust, one-pass parallel computation of covariances and arbitrary-order
statistical moments", Sandia SAND2008-6212, eq. (3.5)::

    C_AB = C_A + C_B + (n_A n_B / n) (mean_B(x) - mean_A(x)) ⊗ (mean_B(y) - mean_A(y))

so no raw (unshifted) sums of products are ever formed (data with mean 1e4 keeps its precision).  Blockwise:
``update`` folds at most ``max_temp_bytes`` of temporaries at a time (reused across the sub-blocks
of a block: no allocation or page faults per sub-block), so a 4,096 × 4,096 correlation over any
number of rows holds the [p, q] state, one [p, q] product buffer and a few MB."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlake.query.values import widen_into

State = dict[str, Any]


@dataclass
class PairBlock:
    """Rows handed to :meth:`CoMoments.update`.

    Attributes:
        a: float32/float64 ``[n, p]`` values of the first set (units, directions or latents).
        b: float ``[n, q]`` values of the second set for the same rows, or None when it is ``a``
            itself (auto-correlation, covariance).
        row_ids: int64 ``[n]`` global row ids (unused by the math; kept for symmetry with Block).
        dtype_a / dtype_b: "float32" when ``a`` / ``b`` hold values; "bfloat16" or "float16" when
            they are a hook's stored rows (uint16 bits / float16), widened slab by slab in ``update``.
    """

    a: np.ndarray
    b: np.ndarray | None
    row_ids: np.ndarray
    dtype_a: str = "float32"
    dtype_b: str = "float32"


class CoMoments:
    """Count, means, M2 per column and the co-moment matrix ``C[i, j] = Σ (a_i - ā_i)(b_j - b̄_j)``.

    Args:
        p: columns of ``a``.  q: columns of ``b`` (None: ``b`` is ``a``, the state keeps one mean).
        max_temp_bytes: bound on the temporaries of one ``update``: rows are folded in sub-blocks
            of ``max_temp_bytes / (8 (p + q))`` rows (default 64 MB: a whole 8,192-row scan block
            of a 512 + 512 pair or a 768-wide hook — measured fastest: a GEMM / SYRK over 8,192
            rows runs 10–30% faster than over 1,024 — and 1,024-row sub-blocks at 4,096 + 4,096).
        precision: "float64" (default): shifted sub-blocks and their products in float64, equal to
            numpy's float64 ``cov`` / ``corrcoef`` to ~1e-12.  "float32": each sub-block is shifted
            by the mean of its first rows, rounded to float32 and multiplied in float32 (sums of at most
            one sub-block's rows); sub-block results are merged in float64 as above.  About 1.5–2×
            less CPU per row; correlations within ~1e-6 of float64 (measured in
            tests/analysis/test_comoments_precision.py) — far below the resolution of bf16 data;
            covariance within ~1e-6 · sd_a·sd_b, up to ~3e-5 on half-precision data with a mean of
            hundreds of standard deviations (docs/analysis.md).
    State: ``n`` (int), ``mean_a`` [p], ``mean_b`` [q], ``m2_a`` [p], ``m2_b`` [q], ``c`` [p, q], all
    float64.  ``update`` folds into the state it is given (owned by the caller's task) and returns it.
    """

    def __init__(self, p: int, q: int | None = None, max_temp_bytes: int = 64 << 20, precision: str = "float64"):
        if precision not in ("float64", "float32"):
            raise ValueError(f"precision: must be 'float64' or 'float32', got {precision!r}")
        self.p, self.q, self.same = p, p if q is None else q, q is None
        self.max_temp_bytes, self.precision = max_temp_bytes, precision
        self._local = threading.local()  # per-thread temporaries, reused across updates

    def __getstate__(self) -> dict:  # Ray ships the aggregate: without the thread-local buffers
        return {k: v for k, v in self.__dict__.items() if k != "_local"}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state)
        self._local = threading.local()

    def zero(self) -> State:
        p, q = self.p, self.q
        return {"n": 0, "mean_a": np.zeros(p), "mean_b": np.zeros(q), "m2_a": np.zeros(p), "m2_b": np.zeros(q),
                "c": np.zeros((p, q))}

    def of(self, a: np.ndarray, b: np.ndarray | None, bufs: dict | None = None, dtype_a: str = "float32",
           dtype_b: str = "float32") -> State:
        """State of one block: its count, means, M2 and co-moment matrix about its own means.

        One pass over each side in cache-sized slabs (:func:`shifted_slabs`) writes ``x - K`` into
        a reused buffer (``K``: a shift close to the block's mean) and sums the values and the
        shifted squares while the slab is in cache; one GEMM (SYRK when ``b`` is ``a``) forms
        ``Σ (a - K_a)(b - K_b)ᵀ``.  The sums about the block's own means follow exactly (the
        "shifted data" algorithm; Chan, Golub & LeVeque 1983, "Algorithms for computing the sample
        variance", The American Statistician 37(3), eq. 1.7)::

            mean = K + S/n,  M2 = Σ(x - K)² - S²/n,  C = Σ(a - K_a)(b - K_b)ᵀ - S_a S_bᵀ / n

        With ``K`` the mean of the block's first rows, ``|S/n|`` is a small fraction of the
        spread, so the subtraction loses no useful digits (data with mean 1e4 keeps its precision).

        Args: a float ``[n, p]``; b float ``[n, q]`` or None (``b`` is ``a``); either may be a
            hook's stored rows named by ``dtype_a`` / ``dtype_b`` ("bfloat16", "float16"; see
            :class:`PairBlock`).  bufs: reusable temporaries (filled on first use); the returned
            ``c`` may then be one of them, valid until the next call with the same ``bufs``."""
        n = a.shape[0]
        if n == 0:
            return self.zero()
        bufs = {} if bufs is None else bufs
        dt = np.float64 if self.precision == "float64" else np.float32
        same = self.same or b is None
        ka, sa, qa, xa = shifted_slabs(a, _buffer(bufs, "a", (n, a.shape[1]), dt), not same, dtype_a, bufs)
        c = _buffer(bufs, "c", (a.shape[1], a.shape[1] if same else b.shape[1]), dt)  # type: ignore[union-attr]
        if same:
            np.matmul(xa.T, xa, out=c)  # x.T @ x: numpy calls SYRK
            c64 = c if dt is np.float64 else c.astype(np.float64)
            c64 -= np.multiply.outer(sa, sa / n)
            mean = ka + sa / n
            m2 = np.diagonal(c64).copy()
            return {"n": n, "mean_a": mean, "mean_b": mean, "m2_a": m2, "m2_b": m2, "c": c64}
        kb, sb, qb, xb = shifted_slabs(b, _buffer(bufs, "b", (n, b.shape[1]), dt), True, dtype_b, bufs)  # type: ignore[arg-type]
        np.matmul(xa.T, xb, out=c)
        c64 = c if dt is np.float64 else c.astype(np.float64)
        c64 -= np.multiply.outer(sa, sb / n)
        assert qa is not None and qb is not None
        return {"n": n, "mean_a": ka + sa / n, "mean_b": kb + sb / n, "m2_a": qa - sa * sa / n,
                "m2_b": qb - sb * sb / n, "c": c64}

    def update(self, state: State, block: PairBlock) -> State:
        n = block.a.shape[0]
        width = self.p + (0 if self.same else self.q)
        step = max(1, self.max_temp_bytes // (8 * width))
        bufs = self._local.__dict__.setdefault("bufs", {})  # this thread's; never shared between threads
        for lo in range(0, n, step):
            part = self.of(block.a[lo:lo + step], None if block.b is None else block.b[lo:lo + step], bufs,
                           block.dtype_a, block.dtype_b)
            state = self._fold(state, part, inplace=True)
        return state

    def merge(self, a: State, b: State) -> State:
        return self._fold(a, b, inplace=False)

    def _fold(self, a: State, b: State, inplace: bool) -> State:
        na, nb = a["n"], b["n"]
        if nb == 0:
            return a
        if na == 0:  # b's ``c`` may be a reused buffer (``of``): own a float64 copy when folding in place
            return {**b, "c": np.array(b["c"], dtype=np.float64)} if inplace else b
        n = na + nb
        f = na * nb / n
        da = b["mean_a"] - a["mean_a"]
        db = da if self.same else b["mean_b"] - a["mean_b"]
        c = a["c"] if inplace else a["c"].copy()
        c += b["c"]
        c += np.multiply.outer(da * f, db)  # Pébay (2008) eq. (3.5)
        mean_a = a["mean_a"] + da * (nb / n)
        m2_a = a["m2_a"] + b["m2_a"] + da * da * f
        if self.same:
            mean_b, m2_b = mean_a, m2_a
        else:
            mean_b = a["mean_b"] + db * (nb / n)
            m2_b = a["m2_b"] + b["m2_b"] + db * db * f
        return {"n": n, "mean_a": mean_a, "mean_b": mean_b, "m2_a": m2_a, "m2_b": m2_b, "c": c}

    def finalize(self, s: State) -> State:
        """The state itself (float64 arrays); see :func:`correlation` and :func:`covariance`."""
        return s


def _buffer(bufs: dict, key: str, shape: tuple[int, int], dt: type) -> np.ndarray:
    """A ``shape`` view of a reused ``dt`` buffer in ``bufs`` (reallocated only when too small)."""
    buf = bufs.get(key)
    if buf is None or buf.shape[0] < shape[0] or buf.shape[1] != shape[1] or buf.dtype != dt:
        buf = bufs[key] = np.empty((max(shape[0], 1), shape[1]), dt)
    return buf[: shape[0]]


def shifted_slabs(x: np.ndarray, out: np.ndarray, squares: bool, dtype: str = "float32",
                  scratch: dict | None = None,
                  slab_bytes: int = 1 << 20) -> tuple[np.ndarray, np.ndarray, np.ndarray | None, np.ndarray]:
    """Write ``x - K`` into ``out`` one cache-sized slab of rows at a time, summing as it goes.

    Per slab of about ``slab_bytes`` of ``out`` (stays in the L2 cache): the rows are widened
    (``dtype`` names stored rows: bfloat16 bits or float16; ``query.values.widen_into``) and cast into
    ``out``, summed per column in float64, shifted by ``K``, then squared and summed (when
    ``squares``): one pass over memory where one pass per step over the whole block measured ~15%
    slower per row at 512 + 512 columns on two threads.  ``K`` is the mean of the first slab,
    rounded to ``out.dtype``; ``S`` comes from the sum of the values before the shift
    (``Σx - n K``), so ``K + S/n`` is the float64 mean whatever the rounding of ``out``.

    Args: x ``[n, p]``: float32/float64 values, or stored rows (uint16 bfloat16 bits / float16)
        when ``dtype`` says so; out float32/float64 ``[n, p]``; scratch: dict keeping the float32
        slab buffer between calls.
    Returns: (K float64 ``[p]``, S = Σ (x - K) float64 ``[p]``, Σ (x - K)² float64 ``[p]`` or
    None, out)."""
    n, p = x.shape
    rows = max(16, slab_bytes // max(1, p * out.itemsize))
    stored = dtype in ("bfloat16", "float16") and x.dtype != np.float32 and x.dtype != np.float64
    wide = _buffer({} if scratch is None else scratch, "wide", (min(rows, n), p), np.float32) \
        if stored and out.dtype != np.float32 else None
    s = np.zeros(p)
    q = np.zeros(p) if squares else None
    kc = None
    for r0 in range(0, n, rows):
        xs, o = x[r0:r0 + rows], out[r0:r0 + rows]
        if stored:
            if wide is None:
                widen_into(xs, dtype, o)
            else:
                np.copyto(o, widen_into(xs, dtype, wide[: len(xs)]))
        else:
            np.copyto(o, xs, casting="same_kind")
        s += np.add.reduce(o, axis=0, dtype=np.float64)
        if kc is None:
            kc = (s / len(o)).astype(out.dtype)
        o -= kc
        if q is not None:
            q += np.einsum("ij,ij->j", o, o, dtype=np.float64)
    assert kc is not None
    k = kc.astype(np.float64)
    return k, s - n * k, q, out


def correlation(s: State) -> np.ndarray:
    """Pearson correlation ``[p, q]`` float64 from a CoMoments state; NaN where a column is constant."""
    with np.errstate(divide="ignore", invalid="ignore"):
        den = np.sqrt(np.multiply.outer(s["m2_a"], s["m2_b"]))
        return np.where(den > 0, s["c"] / np.where(den > 0, den, 1.0), np.nan)


def covariance(s: State, ddof: int = 1) -> np.ndarray:
    """Covariance ``[p, q]`` float64 = ``C / (n - ddof)`` (ddof=1: as ``numpy.cov``)."""
    n = s["n"]
    return s["c"] / (n - ddof) if n > ddof else np.full_like(s["c"], np.nan)
