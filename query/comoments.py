"""Co-moments of two sets of columns: covariance, Pearson correlation and PCA in one streaming pass.

Same four-method contract as ``query/aggregates.py``.  Each block contributes its centred
cross-product matrix (one float64 matmul); blocks merge with the pairwise update of Chan, Golub &
LeVeque (1979) / Pébay (2008, SAND2008-6212, eq. 3.3 for covariances):
``C = C_a + C_b + (μ_b − μ_a)(ν_b − ν_a)ᵀ · n_a n_b / n``.  Memory is ``A × B`` float64,
independent of the number of rows."""
from __future__ import annotations

import numpy as np

from actlake.query.aggregates import Block, State


class CoMoments:
    """Means, variances and the cross-product matrix of columns A (``block.values``) against
    columns B (``block.values_b``, or A itself when ``cross`` is False).

    ``finalize`` → ``{"n", "mean_a" [A], "mean_b" [B], "cov" [A, B] (population), "corr" [A, B]
    (Pearson; NaN where a column is constant)}``, all float64."""

    def __init__(self, width_a: int, width_b: int | None = None):
        self.width_a = width_a
        self.cross = width_b is not None
        self.width_b = width_b if width_b is not None else width_a

    def zero(self) -> State:
        a, b = self.width_a, self.width_b
        return {"n": 0, "mean_a": np.zeros(a), "mean_b": np.zeros(b), "m2_a": np.zeros(a), "m2_b": np.zeros(b),
                "c": np.zeros((a, b))}

    def _b(self, block: Block) -> np.ndarray:
        if not self.cross:
            return block.values
        assert block.values_b is not None, "CoMoments(width_a, width_b) needs block.values_b"
        return block.values_b

    def update(self, state: State, block: Block) -> State:
        va, vb = block.values, self._b(block)
        n = va.shape[0]
        if n == 0:
            return state
        ma = va.sum(axis=0, dtype=np.float64) / n
        ra = va - ma
        if self.cross:
            mb = vb.sum(axis=0, dtype=np.float64) / n
            rb = vb - mb
        else:
            mb, rb = ma, ra
        part = {"n": n, "mean_a": ma, "mean_b": mb, "m2_a": np.einsum("ij,ij->j", ra, ra),
                "m2_b": np.einsum("ij,ij->j", rb, rb), "c": ra.T @ rb}
        return self.merge(state, part)

    def merge(self, a: State, b: State) -> State:
        na, nb = a["n"], b["n"]
        if nb == 0:
            return a
        if na == 0:
            return b
        n = na + nb
        da, db = b["mean_a"] - a["mean_a"], b["mean_b"] - a["mean_b"]
        f = na * nb / n
        return {"n": n, "mean_a": a["mean_a"] + da * (nb / n), "mean_b": a["mean_b"] + db * (nb / n),
                "m2_a": a["m2_a"] + b["m2_a"] + da * da * f, "m2_b": a["m2_b"] + b["m2_b"] + db * db * f,
                "c": a["c"] + b["c"] + np.outer(da, db) * f}

    def finalize(self, s: State) -> dict[str, np.ndarray]:
        n = s["n"]
        with np.errstate(divide="ignore", invalid="ignore"):
            cov = s["c"] / n if n else np.full_like(s["c"], np.nan)
            denom = np.sqrt(np.outer(s["m2_a"], s["m2_b"]))
            corr = np.where(denom > 0, s["c"] / np.where(denom > 0, denom, 1.0), np.nan)
        return {"n": n, "mean_a": s["mean_a"], "mean_b": s["mean_b"], "cov": cov, "corr": corr}


def pca_from_cov(mean: np.ndarray, cov: np.ndarray, n_components: int) -> dict[str, np.ndarray]:
    """Principal components of a covariance matrix (``numpy.linalg.eigh``), largest first.

    Args: mean float64 ``[d]``, cov float64 ``[d, d]`` (symmetric), n_components k <= d.
    Returns: ``mean`` [d], ``components`` [k, d] (unit rows; sign fixed so each row's largest-|·|
    entry is positive), ``explained_variance`` [k], ``explained_variance_ratio`` [k]."""
    w, v = np.linalg.eigh((cov + cov.T) / 2)
    order = np.argsort(w)[::-1][:n_components]
    comps = v[:, order].T
    sign = np.sign(comps[np.arange(len(comps)), np.abs(comps).argmax(axis=1)])
    comps = comps * np.where(sign == 0, 1.0, sign)[:, None]
    total = float(np.clip(w, 0, None).sum())
    ev = np.clip(w[order], 0, None)
    return {"mean": mean, "components": comps, "explained_variance": ev,
            "explained_variance_ratio": ev / total if total > 0 else np.full(len(ev), np.nan)}
