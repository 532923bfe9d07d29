"""Per-context token sampling: keep N random positions of each context (the dictionary-learning
setup of RESEARCH.md keeps ~250 random tokens per context, to decorrelate rows)."""
from __future__ import annotations

import numpy as np


def sample_keep(keep: np.ndarray, n: int | None, seed: int, context_id: int) -> np.ndarray:
    """Restrict a per-position keep mask (bool, shape (T,)) to ``n`` positions drawn uniformly without
    replacement among the kept ones, seeded by (job seed, global context id) so every run and every
    retry keeps the same positions.  ``n=None`` or ``n >= kept`` returns the mask unchanged."""
    idx = np.nonzero(keep)[0]
    if n is None or len(idx) <= n:
        return keep
    rng = np.random.default_rng([seed, context_id, 0x5A4D])
    out = np.zeros_like(keep)
    out[np.sort(rng.choice(idx, size=n, replace=False))] = True
    return out
