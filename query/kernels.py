"""Compiled per-value statistics: one pass over each row computes everything ``stats`` needs.

The numpy path (``aggregates._shifted_power_sums`` + ``Density`` + ``values.row_norms_kurtosis``)
walks every block about ten times (subtract, square, three reductions, min, max, compare, row
copy, row reductions), each a separate numpy call over a cache-sized slab.  Here one numba loop
reads each float32 row once, widens it to float64 in registers, and updates the column power sums
about a reference, min, max and the count above the threshold; the row is then still in L1, so its
norm and excess kurtosis (two passes over d values: mean, then centred 2nd/4th powers) cost no
memory traffic.  The arithmetic is the same as the numpy path (shifted-data power sums, Chan,
Golub & LeVeque 1983; float64 accumulators), so results agree to float rounding
(``tests/query/test_stats_kernel.py``).

Compiled on first use (a few seconds, once per machine: numba caches the machine code on disk;
later processes load it in a fraction of a second) and run with the GIL released, so the scan's
task threads run it in parallel.  This module is imported lazily (by the aggregates' ``update``), so
numba loads only when a ``stats`` query runs."""
from __future__ import annotations

import numba
import numpy as np

from actlake.query.values import to_float32

_FAST = {"contract", "arcp", "nsz"}  # no reassociation of the column sums; NaN and inf kept
_FAST_ROW = {"reassoc", "contract"}  # the row's own sums may be vectorized (summation order only)


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=_FAST_ROW)
def row_summary(row, out):  # pragma: no cover - compiled
    c = row.shape[0]
    s = 0.0
    for j in range(c):
        s += np.float64(row[j])
    mean = s / c
    r2 = 0.0
    r4 = 0.0
    for j in range(c):
        r = np.float64(row[j]) - mean
        q = r * r
        r2 += q
        r4 += q * q
    out[0] = np.sqrt(r2 + c * mean * mean)
    out[1] = c * r4 / (r2 * r2) - 3.0 if r2 > 0 else np.nan


@numba.njit(cache=True, nogil=True, boundscheck=False, fastmath=_FAST)
def update_columns(row, ref, threshold, s1, s2, s3, s4, lo, hi, above):  # pragma: no cover - compiled
    for j in range(row.shape[0]):  # branch-free, so it vectorizes across columns
        x = np.float64(row[j])
        d = x - ref[j]
        d2 = d * d
        s1[j] += d
        s2[j] += d2
        s3[j] += d2 * d
        s4[j] += d2 * d2
        lo[j] = x if x < lo[j] else lo[j]
        hi[j] = x if x > hi[j] else hi[j]
        above[j] += 1.0 if x > threshold else 0.0


@numba.njit(cache=True, nogil=True, boundscheck=False)
def value_pass(v, ref, threshold, sums, lo, hi, above, rows_out, with_rows):  # pragma: no cover - compiled
    s1, s2, s3, s4 = sums[0], sums[1], sums[2], sums[3]
    for i in range(v.shape[0]):
        update_columns(v[i], ref, threshold, s1, s2, s3, s4, lo, hi, above)
        if with_rows:  # the row is in L1 now
            row_summary(v[i], rows_out[i])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def value_pass_bf16(bits, ref, threshold, sums, lo, hi, above, rows_out, with_rows):  # pragma: no cover
    s1, s2, s3, s4 = sums[0], sums[1], sums[2], sums[3]
    wide = np.empty(bits.shape[1], np.uint32)
    row = wide.view(np.float32)  # each stored row widened once, into L1
    for i in range(bits.shape[0]):
        for j in range(bits.shape[1]):
            wide[j] = np.uint32(bits[i, j]) << 16
        update_columns(row, ref, threshold, s1, s2, s3, s4, lo, hi, above)
        if with_rows:
            row_summary(row, rows_out[i])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def rows_only(x, rows_out):  # pragma: no cover - compiled
    for i in range(x.shape[0]):
        row_summary(x[i], rows_out[i])


@numba.njit(cache=True, nogil=True, boundscheck=False)
def histogram(v, lo, hi, edges, counts):  # pragma: no cover - compiled
    n, c = v.shape
    bins = counts.shape[1]
    scale = bins / (hi - lo)
    for i in range(n):
        for j in range(c):
            x = np.float64(v[i, j])
            if x != x:  # NaN is not counted
                continue
            x = min(max(x, lo), hi)
            b = min(max(int((x - lo) * scale), 0), bins - 1)
            if x < edges[b]:  # the edge corrections of numpy.histogram
                b -= 1
            elif b != bins - 1 and x >= edges[b + 1]:
                b += 1
            counts[j, b] += 1


def warm() -> float:
    """Load (or compile, the first time on a machine) every kernel for float32, float64 and
    bfloat16-bit rows, contiguous and strided: a once-per-process cost a long query would otherwise
    pay inside its first block.  Returns: CPU seconds spent."""
    import time

    t = time.process_time()
    for v in (np.zeros((2, 4), np.float32), np.zeros((2, 4)), np.zeros((2, 4), np.uint16)):
        for x in (v, v[:, ::2]):
            value_stats(x, np.zeros(x.shape[1]), 0.0, True)
            value_stats(x, np.zeros(x.shape[1]), 0.0, False)
            histogram_counts(x, 0.0, 1.0, np.linspace(0.0, 1.0, 3), np.zeros((x.shape[1], 2), np.int64))
    return time.process_time() - t


def floats(v: np.ndarray) -> np.ndarray:
    """Float rows as they are; uint16 bits of bfloat16 rows widened to float32 (exact).

    Args: v float or uint16 ``[n, C]``.  Returns: float ``[n, C]`` (v itself when already float)."""
    return to_float32(v, "bfloat16") if v.dtype == np.uint16 else v


def value_stats(v: np.ndarray, ref: np.ndarray, threshold: float, with_rows: bool):
    """One pass over ``v``: column power sums of ``v - ref``, column min / max, counts above
    ``threshold`` and (with ``with_rows``) each row's L2 norm and excess kurtosis.

    Args:
        v: float32 or float64 ``[n, C]`` values (any strides), or uint16 ``[n, C]`` bits of
            bfloat16 values, widened row by row in L1 (exactly, as ``values.to_float32``).
        ref: float64 ``[C]`` the shift (near the column means keeps the sums exact).
        threshold: density threshold (a value counts when ``> threshold`` with the threshold cast to
            v's dtype, as numpy compares; NaN never counts).
        with_rows: also compute the per-row summary (then ``v`` must be the hook's full rows).

    Returns:
        ``(sums, lo, hi, above, rows)``: float64 ``[4, C]`` sums of ``(v - ref)**p`` for p = 1..4;
        float64 ``[C]`` min and max (NaN values are skipped; ``+inf`` / ``-inf`` when ``n == 0``);
        int64 ``[C]`` counts;
        float64 ``[n, 2]`` (norm, kurtosis; kurtosis NaN for a constant row) or None."""
    n, c = v.shape
    kernel = value_pass_bf16 if v.dtype == np.uint16 else value_pass
    sums = np.zeros((4, c))
    lo, hi = np.full(c, np.inf), np.full(c, -np.inf)
    above = np.zeros(c)  # float64 counts: exact to 2^53 rows, and the compare stays branch-free
    rows = np.empty((n if with_rows else 0, 2))
    # compared as numpy does: ``v > threshold`` in v's dtype (bfloat16 rows: float32, as widened)
    threshold = float(np.float32(threshold) if v.dtype == np.uint16 else v.dtype.type(threshold))
    kernel(v, np.ascontiguousarray(ref, np.float64), threshold, sums, lo, hi, above, rows, with_rows)
    return sums, lo, hi, above.astype(np.int64), (rows if with_rows else None)


def row_norms_kurtosis(x: np.ndarray) -> np.ndarray:
    """L2 norm and excess kurtosis of every row, as ``values.row_norms_kurtosis``.

    Args: x float ``[n, d]``.  Returns: float64 ``[n, 2]`` (kurtosis NaN for a constant row)."""
    out = np.empty((x.shape[0], 2))
    rows_only(floats(x), out)
    return out


def histogram_counts(v: np.ndarray, lo: float, hi: float, edges: np.ndarray, counts: np.ndarray) -> None:
    """Add each column's counts in the shared bins ``edges`` (float64 ``[bins + 1]`` from ``lo`` to
    ``hi``) to ``counts`` (int64 ``[C, bins]``, in place).  Values below ``lo`` / above ``hi`` fall in
    the first / last bin, NaN is not counted; bin membership equals ``numpy.histogram(v[:, j], bins,
    (lo, hi))``.  Args: v float ``[n, C]``."""
    histogram(floats(v), float(lo), float(hi), np.ascontiguousarray(edges, np.float64), counts)
