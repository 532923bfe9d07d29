"""Co-moments of two sets of columns: the mergeable state behind correlate, covariance and PCA.

Same four-method contract as ``query/aggregates.py`` (zero / update / merge / finalize), over
:class:`PairBlock` s (values of the same rows seen through two projections).  All sums are float64.

Each block's co-moment matrix is formed about the block's own means and blocks are merged with the
pairwise update of Chan, Golub & LeVeque (1979) for the second moment, generalised to co-moments by
Pébay (2008), "Formulas for robust, one-pass parallel computation of covariances and arbitrary-order
statistical moments", Sandia SAND2008-6212, eq. (3.5)::

    C_AB = C_A + C_B + (n_A n_B / n) (mean_B(x) - mean_A(x)) ⊗ (mean_B(y) - mean_A(y))

so no raw sums of products are ever formed (data with mean 1e4 keeps its precision).  Blockwise:
``update`` folds at most ``max_temp_bytes`` of float64 temporaries at a time, so a 4,096 × 4,096
correlation over any number of rows holds the [p, q] state plus a few tens of MB."""
from __future__ import annotations

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
        max_temp_bytes: bound on the float64 temporaries of one ``update`` (rows are folded in
            sub-blocks of that size).
    State: ``n`` (int), ``mean_a`` [p], ``mean_b`` [q], ``m2_a`` [p], ``m2_b`` [q], ``c`` [p, q], all
    float64.  ``update`` folds into the state it is given (owned by the caller's task) and returns it.
    """

    def __init__(self, p: int, q: int | None = None, max_temp_bytes: int = 64 << 20):
        self.p, self.q, self.same = p, p if q is None else q, q is None
        self.max_temp_bytes = max_temp_bytes

    def zero(self) -> State:
        p, q = self.p, self.q
        return {"n": 0, "mean_a": np.zeros(p), "mean_b": np.zeros(q), "m2_a": np.zeros(p), "m2_b": np.zeros(q),
                "c": np.zeros((p, q))}

    def of(self, a: np.ndarray, b: np.ndarray | None) -> State:
        """State of one block computed directly about its own means (float64)."""
        n = a.shape[0]
        if n == 0:
            return self.zero()
        a64 = a.astype(np.float64)
        ma = a64.sum(axis=0) / n
        a64 -= ma
        if self.same or b is None:
            c = a64.T @ a64
            m2 = np.einsum("ij,ij->j", a64, a64)
            return {"n": n, "mean_a": ma, "mean_b": ma, "m2_a": m2, "m2_b": m2, "c": c}
        b64 = b.astype(np.float64)
        mb = b64.sum(axis=0) / n
        b64 -= mb
        return {"n": n, "mean_a": ma, "mean_b": mb, "m2_a": np.einsum("ij,ij->j", a64, a64),
                "m2_b": np.einsum("ij,ij->j", b64, b64), "c": a64.T @ b64}

    def update(self, state: State, block: PairBlock) -> State:
        n = block.a.shape[0]
        step = max(1, self.max_temp_bytes // (8 * (self.p + (0 if self.same else self.q))))
        for lo in range(0, n, step):
            part = self.of(block.a[lo:lo + step], None if block.b is None else block.b[lo:lo + step])
            state = self._fold(state, part, inplace=True)
        return state

    def merge(self, a: State, b: State) -> State:
        return self._fold(a, b, inplace=False)

    def _fold(self, a: State, b: State, inplace: bool) -> State:
        na, nb = a["n"], b["n"]
        if nb == 0:
            return a
        if na == 0:
            return b
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
