"""Work units: deterministic, self-contained slices of the source (contexts or images)."""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from actlake.workers.sources import ImageItem
from actlake.workers.text import Context


@dataclass
class TextUnit:
    index: int
    first_context: int  # global id of contexts[0]
    contexts: list[Context] = field(repr=False)

    @property
    def unit_id(self) -> str:
        return f"u{self.index:09d}"

    @property
    def source_range(self) -> tuple[int, int]:
        return self.first_context, self.first_context + len(self.contexts)

    @property
    def num_items(self) -> int:
        return len(self.contexts)

    @property
    def num_tokens(self) -> int:
        return int(sum(len(c.tokens) for c in self.contexts))


@dataclass
class ImageUnit:
    index: int
    images: list[ImageItem]

    @property
    def unit_id(self) -> str:
        return f"u{self.index:09d}"

    @property
    def source_range(self) -> tuple[int, int]:
        return self.images[0].image_id, self.images[-1].image_id + 1

    @property
    def num_items(self) -> int:
        return len(self.images)

    @property
    def num_tokens(self) -> int:
        return len(self.images)


def row_permutation(n: int, seed: int, unit_index: int, enabled: bool) -> np.ndarray:
    """Destination slot of each row for the write-time shuffle (identity when disabled).

    Seeded by (job seed, unit index), so a retried unit is written with the same order."""
    if not enabled:
        return np.arange(n, dtype=np.int64)
    return np.random.default_rng([seed, unit_index]).permutation(n).astype(np.int64)
