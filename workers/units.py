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


def materialize_shard(unit, job, tokenizer) -> TextUnit | None:
    """Tokenize and pack one shard-plan unit (``workers.plan.ShardUnit``) on the worker.

    Contexts are packed inside the shard only (``pack_contexts`` over ``shard_docs``); context ids
    are ``unit.context_base + j``.  Returns None for a shard without any text."""
    from actlake.workers.plan import CONTEXT_BITS, shard_docs
    from actlake.workers.text import pack_contexts

    contexts = list(pack_contexts(shard_docs(job.data, unit), tokenizer, job.context_len, job.prepend_bos, None))
    if not contexts:
        return None
    if len(contexts) >= 1 << CONTEXT_BITS:
        from actlake.schemas.errors import SourceError

        raise SourceError(f"{unit.path}: one unit holds {len(contexts)} contexts; split the file")
    return TextUnit(unit.index, unit.context_base, contexts)
