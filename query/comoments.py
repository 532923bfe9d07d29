"""Co-moments of two sets of columns: the mergeable state behind correlate, covariance and PCA.

Same four-method contract as ``query/aggregates.py`` (zero / update / merge / finalize), over
:class:`PairBlock` s (values of the same rows seen through two projections).  All sums are float64.

Each block's co-moment matrix is formed about the block's own means and blocks are merged with the
pairwise update of Chan, Golub & LeVeque (1979) for the second moment, generalised to co-moments by
Pébay (2008), "Formulas for robust, one-pass parallel computation of covariances and arbitrary-order
statistical moments", Sandia SAND2008-6212, eq. (3.5)::

    C_AB = C_A + C_B + (n_A n_B / n) (mean_B(x) - mean_A(x)) ⊗ (mean_B(y) - mean_A(y))

so no raw sums of products are ever formed (data with mean 1e4 keeps its precision).  Blockwise:
``update`` folds at most ``max_temp_bytes`` of temporaries at a time (reused across the sub-blocks
of a block: no allocation or page faults per sub-block), so a 4,096 × 4,096 correlation over any
number of rows holds the [p, q] state, one [p, q] product buffer and a few MB."""
from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import numpy as np

State = dict[str, Any]


@dataclass
class PairBlock:
    """Rows handed to :meth:`CoMoments.update`.

    Attributes:
        a: float32/float64 ``[n, p]`` values of the first set (units, directions or latents).
        b: float ``[n, q]`` values of the second set for the same rows, or None when it is ``a``
            itself (auto-correlation, covariance).
        row_ids: int64 ``[n]`` global row ids (unused by the math; kept for symmetry with Block).
    """

    a: np.ndarray
    b: np.ndarray | None
    row_ids: np.ndarray


class CoMoments:
    """Count, means, M2 per column and the co-moment matrix ``C[i, j] = Σ (a_i - ā_i)(b_j - b̄_j)``.

    Args:
        p: columns of ``a``.  q: columns of ``b`` (None: ``b`` is ``a``, the state keeps one mean).
        max_temp_bytes: bound on the temporaries of one ``update``: rows are folded in sub-blocks
            of ``max_temp_bytes / (8 (p + q))`` rows (default 64 MB: a whole 8,192-row scan block
            of a 512 + 512 pair or a 768-wide hook — measured fastest: a GEMM / SYRK over 8,192
            rows runs 10–30% faster than over 1,024 — and 1,024-row sub-blocks at 4,096 + 4,096).
        precision: "float64" (default): centred sub-blocks and their products in float64, equal to
            numpy's float64 ``cov`` / ``corrcoef`` to ~1e-12.  "float32": each sub-block is centred
            about its float64 mean, rounded to float32 and multiplied in float32 (sums of at most
            one sub-block's rows); sub-block results are merged in float64 as above.  About 1.5–2×
            less CPU per row; correlations within ~1e-6 of float64 (measured in
            tests/analysis/test_comoments_precision.py) — far below the resolution of bf16 data.
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

    def of(self, a: np.ndarray, b: np.ndarray | None, bufs: dict | None = None) -> State:
        """State of one block computed directly about its own means.

        Args: a float ``[n, p]``; b float ``[n, q]`` or None (``b`` is ``a``).  bufs: reusable
            temporaries (filled on first use); the returned ``c`` may then be one of them, valid
            until the next call with the same ``bufs``."""
        n = a.shape[0]
        if n == 0:
            return self.zero()
        bufs = {} if bufs is None else bufs
        dt = np.float64 if self.precision == "float64" else np.float32

        def centred(x: np.ndarray, key: str) -> tuple[np.ndarray, np.ndarray]:
            mean = np.add.reduce(x, axis=0, dtype=np.float64) / n
            buf = bufs.get(key)
            if buf is None or buf.shape[0] < n or buf.shape[1] != x.shape[1]:
                buf = bufs[key] = np.empty((max(n, 1), x.shape[1]), dt)
            out = buf[:n]
            np.subtract(x, mean if dt is np.float64 else mean.astype(np.float32), out=out, casting="same_kind")
            return mean, out

        def product(x: np.ndarray, y: np.ndarray) -> np.ndarray:
            c = bufs.get("c")
            if c is None or c.shape != (x.shape[1], y.shape[1]):
                c = bufs["c"] = np.empty((x.shape[1], y.shape[1]), dt)
            return np.matmul(x.T, y, out=c)

        ma, xa = centred(a, "a")
        if self.same or b is None:
            c = product(xa, xa)  # x.T @ x: numpy calls SYRK
            m2 = np.diagonal(c).astype(np.float64)
            return {"n": n, "mean_a": ma, "mean_b": ma, "m2_a": m2, "m2_b": m2, "c": c}
        mb, xb = centred(b, "b")
        return {"n": n, "mean_a": ma, "mean_b": mb, "m2_a": np.einsum("ij,ij->j", xa, xa, dtype=np.float64),
                "m2_b": np.einsum("ij,ij->j", xb, xb, dtype=np.float64), "c": product(xa, xb)}

    def update(self, state: State, block: PairBlock) -> State:
        n = block.a.shape[0]
        width = self.p + (0 if self.same else self.q)
        step = max(1, self.max_temp_bytes // (8 * width))
        bufs = self._local.__dict__.setdefault("bufs", {})  # this thread's; never shared between threads
        for lo in range(0, n, step):
            part = self.of(block.a[lo:lo + step], None if block.b is None else block.b[lo:lo + step], bufs)
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


def correlation(s: State) -> np.ndarray:
    """Pearson correlation ``[p, q]`` float64 from a CoMoments state; NaN where a column is constant."""
    with np.errstate(divide="ignore", invalid="ignore"):
        den = np.sqrt(np.multiply.outer(s["m2_a"], s["m2_b"]))
        return np.where(den > 0, s["c"] / np.where(den > 0, den, 1.0), np.nan)


def covariance(s: State, ddof: int = 1) -> np.ndarray:
    """Covariance ``[p, q]`` float64 = ``C / (n - ddof)`` (ddof=1: as ``numpy.cov``)."""
    n = s["n"]
    return s["c"] / (n - ddof) if n > ddof else np.full_like(s["c"], np.nan)
