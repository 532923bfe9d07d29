"""From stored rows to the values a query ranks or summarises (pure numpy).

A :class:`Projection` maps a block of rows ``x`` (float32 ``[n, d]``) to values ``[n, C]``: C
selected units, C directions (``x @ D.T``), or the C latents of a sparse autoencoder encoder
computed on the fly (``act((x - b_dec) @ W_enc + b_enc)``, act = ReLU or TopK as in Gao et al. 2024,
"Scaling and evaluating sparse autoencoders")."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np

Kind = Literal["identity", "units", "directions", "sae"]


def to_float32(raw: np.ndarray, dtype: str) -> np.ndarray:
    """Stored rows → float32 rows of the same shape.

    Args:
        raw: rows in the storage dtype (float32, float16, or uint16 bits of bfloat16).
        dtype: the logical dtype recorded in the manifest ("float32" | "float16" | "bfloat16").
    Returns:
        float32 array, same shape (a view when already float32).
    """
    if dtype == "bfloat16":
        return (raw.astype(np.uint32) << 16).view(np.float32)
    if raw.dtype == np.float32:
        return raw
    return raw.astype(np.float32)


def widen_into(raw: np.ndarray, dtype: str, out: np.ndarray) -> np.ndarray:
    """Write stored rows into ``out`` as float32, in one pass (same bits as :func:`to_float32`).

    Args:
        raw: rows in the storage dtype (uint16 bits of bfloat16, float16 or float32), ``[n, d]``.
        dtype: the logical dtype recorded in the manifest ("float32" | "float16" | "bfloat16").
        out: float32 ``[n, d]`` (its buffer is written; for bfloat16 through a uint32 view).
    Returns: ``out``."""
    if dtype == "bfloat16":
        np.left_shift(raw, 16, out=out.view(np.uint32), dtype=np.uint32)  # the bits move to the high half
    else:
        np.copyto(out, raw, casting="safe")  # float16 → float32 is exact
    return out


@dataclass(frozen=True, eq=False)
class Projection:
    """What a query computes per row.

    Attributes:
        kind: "identity" (all d units), "units" (a subset), "directions" or "sae".
        width: d, the hook's per-row width.
        units: int64 ``[C]`` unit indices (kind "units").
        matrix: float32 ``[d, C]``: directions as columns, or the SAE's ``W_enc``.
        b_enc: float32 ``[C]`` encoder bias (kind "sae").
        b_dec: float32 ``[d]`` subtracted from x before encoding (kind "sae"; optional).
        activation: "relu" or "topk" (kind "sae").
        topk: latents kept per row for activation "topk".
    """

    kind: Kind
    width: int
    units: np.ndarray | None = None
    matrix: np.ndarray | None = None
    b_enc: np.ndarray | None = None
    b_dec: np.ndarray | None = None
    activation: Literal["relu", "topk"] = "relu"
    topk: int | None = None

    @property
    def num_values(self) -> int:
        """C: values per row."""
        if self.kind == "identity":
            return self.width
        if self.kind == "units":
            assert self.units is not None
            return len(self.units)
        assert self.matrix is not None
        return self.matrix.shape[1]

    @property
    def flops_per_row(self) -> int:
        """Multiply-adds × 2 of the projection (0 for unit selections)."""
        return 0 if self.kind in ("identity", "units") else 2 * self.width * self.num_values

    def __call__(self, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """Args: x float32 ``[n, d]``; out: optional float32 ``[≥n, C]`` buffer the matmul kinds
        write into (the result is then a view of it).  Returns: float32 ``[n, C]``."""
        if self.kind == "identity":
            return x
        if self.kind == "units":
            return x[:, self.units]
        assert self.matrix is not None
        if out is not None:
            out = out[: x.shape[0]]
        if self.kind == "directions":
            return np.matmul(x, self.matrix, out=out)
        pre = np.matmul(x - self.b_dec if self.b_dec is not None else x, self.matrix, out=out)
        if self.b_enc is not None:
            pre += self.b_enc
        if self.activation == "relu":
            return np.maximum(pre, 0, out=pre)
        k = int(self.topk or 1)
        keep = np.argpartition(pre, pre.shape[1] - k, axis=1)[:, pre.shape[1] - k:]
        top = np.maximum(np.take_along_axis(pre, keep, axis=1), 0)
        pre[...] = 0
        np.put_along_axis(pre, keep, top, axis=1)
        return pre


def row_norms(x: np.ndarray) -> np.ndarray:
    """L2 norm of every row.  Args: x float ``[n, d]``.  Returns: float64 ``[n]``."""
    x64 = x.astype(np.float64)
    return np.sqrt(np.einsum("ij,ij->i", x64, x64))


def row_kurtosis(x: np.ndarray) -> np.ndarray:
    """Excess (Fisher) kurtosis of each row's d values, the null-code sparsity measure.

    ``m4 / m2**2 - 3`` with population central moments over the row's d entries (as
    ``scipy.stats.kurtosis(x, axis=1)``); NaN for constant rows.
    Args: x float ``[n, d]``.  Returns: float64 ``[n]``."""
    x64 = x.astype(np.float64)
    r = x64 - x64.mean(axis=1, keepdims=True)
    r2 = r * r
    m2 = r2.mean(axis=1)
    m4 = np.einsum("ij,ij->i", r2, r2) / x.shape[1]
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(m2 > 0, m4 / (m2 * m2) - 3.0, np.nan)


def slab_rows(width: int, itemsize: int = 8) -> int:
    """Rows of a ``width``-wide float64 slab of about 256 KiB: per-row work on such slabs stays in the
    L2 cache (measured fastest for d = 512 at 64-256 rows).  At least 16."""
    return max(16, (256 << 10) // max(1, width * itemsize))


def row_norms_kurtosis(x: np.ndarray) -> np.ndarray:
    """L2 norm and excess kurtosis of every row, float64 throughout (as :func:`row_norms` and
    :func:`row_kurtosis`), over cache-sized slabs: per slab one float64 copy, the row means, the
    centred rows squared in place, two row reductions; ``norm² = Σ r² + d · mean²``.

    Args: x float ``[n, d]``.  Returns: float64 ``[n, 2]`` (norm, kurtosis; NaN kurtosis for
    constant rows)."""
    n, d = x.shape
    out = np.empty((n, 2))
    rows = slab_rows(d)
    buf = np.empty((min(rows, n), d))
    for r0 in range(0, n, rows):
        xs = x[r0:r0 + rows]
        r = buf[: len(xs)]
        np.copyto(r, xs)
        mean = np.add.reduce(r, axis=1) / d
        np.subtract(r, mean[:, None], out=r)
        s2 = np.einsum("ij,ij->i", r, r)
        np.multiply(r, r, out=r)
        s4 = np.einsum("ij,ij->i", r, r)
        out[r0:r0 + len(xs), 0] = np.sqrt(s2 + d * mean * mean)
        with np.errstate(divide="ignore", invalid="ignore"):
            out[r0:r0 + len(xs), 1] = np.where(s2 > 0, d * s4 / (s2 * s2) - 3.0, np.nan)
    return out


def splitmix64(x: np.ndarray) -> np.ndarray:
    """SplitMix64 finaliser (Steele, Lea & Flood 2014): a fixed pseudo-random uint64 per input.

    Used as a row's sampling priority so that random samples do not depend on how rows are split
    into tasks.  Args: x int/uint ``[n]``.  Returns: uint64 ``[n]``."""
    z = np.asarray(x).astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return z ^ (z >> np.uint64(31))
