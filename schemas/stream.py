"""``StreamSpec``: the settings of one batch stream, frozen, with a declared identity.

One model carries what ``ds.batches(...)`` takes, what a resume must match, and what a Flight
ticket names (schemas/wire.py), so the local loader, the Flight server and the remote client
agree on one definition instead of loose keywords."""
from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


class StreamSpec(BaseModel):
    """What defines one shuffled batch stream over a dataset snapshot.

    Fields in ``IDENTITY`` fix the order of rows (two streams with equal identities over the same
    snapshot yield the same batches); the others only change what a batch carries or how fast it
    is read.  ``device`` is deliberately absent: it is where the consumer puts tensors, never part
    of the stream (a remote client moves batches itself)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    batch_size: int = Field(gt=0, description="rows per batch")
    hooks: tuple[str, ...] | None = Field(None, description="hook names; None: every hook of the dataset")
    shuffle: bool = Field(True, description="shuffle rows across the whole dataset (else storage order)")
    seed: int = Field(0, description="with epoch, fixes the permutation")
    epoch: int = Field(0, description="with seed, fixes the permutation")
    rank: int = Field(0, ge=0, description="this stream's share, 0 <= rank < world_size")
    world_size: int = Field(1, gt=0, description="number of disjoint shares of every epoch")
    drop_last: bool = Field(True, description="drop the last partial batch (equal batch counts across ranks)")
    with_provenance: bool = Field(False, description="add 'row_id' (int64 tensor[B]) to every batch")
    filter: dict[str, Any] | None = Field(None, description="a RowFilter as a dict (client/filters.py)")
    buffer_rows: int | None = Field(None, gt=0, description="shuffle window in rows; None: automatic")
    block_rows: int | None = Field(None, gt=0, description="read granularity in rows; None: automatic")

    IDENTITY: ClassVar[tuple[str, ...]] = ("batch_size", "hooks", "shuffle", "seed", "epoch", "rank", "world_size",
                                           "drop_last", "filter", "buffer_rows", "block_rows")
    """Fields that define the order of rows; everything else may differ between save and resume."""

    @field_validator("hooks", mode="before")
    @classmethod
    def _hooks(cls, v: Any) -> Any:
        return (v,) if isinstance(v, str) else v

    @field_validator("filter", mode="before")
    @classmethod
    def _filter(cls, v: Any) -> Any:
        if v is not None and not isinstance(v, dict) and hasattr(v, "model_dump"):
            return v.model_dump(mode="json")  # a RowFilter (client/filters.py)
        return v

    @model_validator(mode="after")
    def _rank(self) -> StreamSpec:
        if self.rank >= self.world_size:
            raise ValueError(f"need 0 <= rank < world_size, got rank={self.rank}, world_size={self.world_size}")
        return self

    @classmethod
    def from_kwargs(cls, batch_size: int, hooks: list[str] | str | None = None, shuffle: bool = True, seed: int = 0,
                    epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True,
                    with_provenance: bool = False, filter: Any = None, buffer_rows: int | None = None,
                    block_rows: int | None = None) -> StreamSpec:
        """The spec of ``ds.batches(...)`` called with the same keywords (``device`` and the loader's
        speed knobs ``io_threads``/``prefetch``/``prefetch_batches`` are not part of a spec).

        Raises:
            pydantic.ValidationError (a ValueError): batch_size <= 0, rank outside [0, world_size), ...
        """
        # validated from a dict: ``hooks`` may be a str or a list here (the validators make it a tuple)
        return cls.model_validate(dict(batch_size=batch_size, hooks=hooks, shuffle=shuffle, seed=seed, epoch=epoch,
                                       rank=rank, world_size=world_size, drop_last=drop_last,
                                       with_provenance=with_provenance, filter=filter, buffer_rows=buffer_rows,
                                       block_rows=block_rows))

    def kwargs(self) -> dict[str, Any]:
        """Keywords for ``ActivationDataset.batches(**spec.kwargs())`` (None-valued tuning omitted)."""
        kw = self.model_dump()
        kw["hooks"] = list(self.hooks) if self.hooks is not None else None
        for k in ("buffer_rows", "block_rows"):
            if kw[k] is None:
                del kw[k]
        return kw

    def identity(self) -> dict[str, Any]:
        """The fields of ``IDENTITY`` as a JSON-able dict (hooks as a list)."""
        d = self.model_dump(mode="json")
        return {k: d[k] for k in self.IDENTITY}
