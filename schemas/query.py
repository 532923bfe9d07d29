"""QuerySpec: one query over a dataset's hook (top-k, bottom-k, interval samples, statistics).

The single source of truth for query arguments: the Python facade (``ds.query``) and the CLI
(``actlake query``) both build one, and every check that needs no data happens here or in
``actlake.query.validate`` before any chunk is read."""
from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

QueryKind = Literal["topk", "bottomk", "intervals", "stats"]
GROUP_COLUMNS = ("context_pos", "token_type", "label", "token_id", "doc_id", "patch_row", "patch_col")
BY_ALIASES = {"position": "context_pos", "pos": "context_pos", "token": "token_id", "type": "token_type"}


class EncoderSpec(BaseModel):
    """A sparse autoencoder's encoder, applied on the fly: ``act((x - b_dec) @ W_enc + b_enc)``."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    W_enc: Any = Field(description="float [d, L] (SAELens layout; a [L, d] matrix is transposed)")
    b_enc: Any | None = Field(None, description="float [L]")
    b_dec: Any | None = Field(None, description="float [d], subtracted from x before encoding")
    activation: Literal["relu", "topk"] = Field("relu", description="ReLU, or TopK (keep k latents per row)")
    k: int | None = Field(None, gt=0, description="latents kept per row for activation 'topk'")

    @model_validator(mode="after")
    def _k(self) -> EncoderSpec:
        if self.activation == "topk" and self.k is None:
            raise ValueError("activation 'topk' needs k")
        return self


class QuerySpec(BaseModel):
    """What to compute over one hook.  Exactly one of ``unit``/``direction``/``encoder`` selects the
    values (none: every unit, for stats)."""

    model_config = ConfigDict(arbitrary_types_allowed=True, extra="forbid")

    kind: QueryKind
    hook: str = Field(min_length=1, description="hook name as in the manifest")
    unit: int | list[int] | None = Field(None, description="unit index, or a list of them")
    direction: Any | None = Field(None, description="float [d] vector or [C, d] matrix of directions (rows)")
    encoder: EncoderSpec | None = Field(None, description="SAE encoder: its latents are the values")
    k: int = Field(20, gt=0, description="rows per unit/direction (top-k, bottom-k)")
    context: int = Field(8, ge=0, description="tokens shown on each side of the activating token")
    dedup: Literal["context"] | None = Field(None, description="at most one row per model context")
    threshold: float = Field(0.0, allow_inf_nan=False, description="density counts values > threshold (finite)")
    by: str | None = Field(None, description="stats per group: position, token_type, label, token_id")
    histogram_bins: int | None = Field(None, gt=0, le=10_000,
                                       description="stats: also histograms with shared bins (at most 10,000)")
    rows: bool = Field(True, description="stats: per-row norm and kurtosis summaries")
    bins: int = Field(11, gt=0, description="intervals between 0 and the max")
    per_bin: int = Field(10, gt=0, description="rows sampled per interval")
    seed: int = Field(0, description="sampling seed (intervals)")
    tasks: int | None = Field(None, gt=0, description="plan items (default: ~64 MB of hook data each)")

    @field_validator("by")
    @classmethod
    def _by(cls, v: str | None) -> str | None:
        if v is None:
            return v
        v = BY_ALIASES.get(v, v)
        if v not in GROUP_COLUMNS:
            raise ValueError(f"must be one of {', '.join(('position',) + GROUP_COLUMNS)}; got {v!r}")
        return v

    @model_validator(mode="after")
    def _one_selector(self) -> QuerySpec:
        given = [n for n in ("unit", "direction", "encoder") if getattr(self, n) is not None]
        if len(given) > 1:
            raise ValueError(f"{given[1]}: give only one of unit, direction, encoder (got {', '.join(given)})")
        return self
