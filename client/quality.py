"""Shuffle-quality metrics (pure functions).  See docs/shuffle.md.

A perfect shuffle draws each batch uniformly without replacement from all N rows.  For a batch of B
rows, with context c holding n_c of the N rows, the exact expectations are

    E[distinct contexts]     = sum_c 1 - C(N - n_c, B) / C(N, B)
    E[same-context row pairs] = sum_c C(n_c, 2) * B (B - 1) / (N (N - 1))

and a loader's batches are scored against them (ratio 1.0 = as good as a full permutation)."""
from __future__ import annotations

import math
from collections import Counter

import numpy as np


def _log_comb(n: int, k: int) -> float:
    return math.lgamma(n + 1) - math.lgamma(k + 1) - math.lgamma(n - k + 1)


def expected_distinct(context_sizes, batch_size: int) -> float:
    """Exact E[# distinct contexts] in a uniform random batch (no replacement)."""
    sizes = np.asarray(context_sizes, dtype=np.int64)
    n_total = int(sizes.sum())
    b = int(batch_size)
    if b > n_total:
        raise ValueError("batch larger than the population")
    total = 0.0
    log_all = _log_comb(n_total, b)
    for n_c, count in Counter(sizes.tolist()).items():
        rest = n_total - n_c
        p_absent = 0.0 if rest < b else math.exp(_log_comb(rest, b) - log_all)
        total += count * (1.0 - p_absent)
    return total


def expected_same_context_pairs(context_sizes, batch_size: int) -> float:
    sizes = np.asarray(context_sizes, dtype=np.float64)
    n_total = sizes.sum()
    return float((sizes * (sizes - 1) / 2).sum() * batch_size * (batch_size - 1) / (n_total * (n_total - 1)))


def distinct(ids: np.ndarray) -> int:
    return int(np.unique(ids).size)


def same_context_pairs(ids: np.ndarray) -> int:
    _, counts = np.unique(ids, return_counts=True)
    return int((counts * (counts - 1) // 2).sum())


def report(batches_context_ids: list[np.ndarray], context_sizes, batch_size: int,
           batches_fragment_ids: list[np.ndarray] | None = None) -> dict[str, float]:
    """Score a loader's batches (each given as the context ids of its rows, in stream order)
    against a perfect shuffle.

    Returns the mean over full batches (``distinct_ratio``, ``pairs_ratio``) and, because a mean
    hides a bad stretch, the worst batch (``distinct_ratio_min``), the 1st percentile
    (``distinct_ratio_p01``) and the mean over the last 10 % of the batches
    (``distinct_ratio_last10``: the end of an epoch, where a short last window mixes fewest
    blocks).  Ratios are per batch: distinct contexts / E[distinct contexts] of a uniform batch.

    Raises:
        ValueError: no batch of ``batch_size`` rows."""
    full = [np.asarray(b) for b in batches_context_ids if len(b) == batch_size]
    if not full:
        raise ValueError("no full batches to score")
    e_d = expected_distinct(context_sizes, batch_size)
    e_p = expected_same_context_pairs(context_sizes, batch_size)
    per = np.array([distinct(b) for b in full], dtype=np.float64) / e_d
    d = float(per.mean()) * e_d
    p = float(np.mean([same_context_pairs(b) for b in full]))
    tail = per[-max(1, len(per) // 10):]
    out = {"batches": len(full), "distinct_contexts": d, "distinct_contexts_perfect": e_d,
           "distinct_ratio": d / e_d, "distinct_ratio_min": float(per.min()),
           "distinct_ratio_p01": float(np.quantile(per, 0.01)), "distinct_ratio_last10": float(tail.mean()),
           "same_context_pairs": p, "same_context_pairs_perfect": e_p,
           "pairs_ratio": p / e_p if e_p else float("nan")}
    if batches_fragment_ids is not None:
        out["fragments_per_batch"] = float(np.mean([distinct(np.asarray(b)) for b in batches_fragment_ids]))
    return out


def per_batch_distinct_ratio(batches_context_ids: list[np.ndarray], context_sizes, batch_size: int) -> np.ndarray:
    """Distinct contexts of each full batch / the perfect-shuffle expectation (float64[batches])."""
    e_d = expected_distinct(context_sizes, batch_size)
    return np.array([distinct(np.asarray(b)) / e_d for b in batches_context_ids if len(b) == batch_size])
