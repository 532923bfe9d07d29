"""The dataset manifest (``actlake.json``): what a reader needs before touching any fragment."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field

from actlake.schemas.hooks import HookInfo
from actlake.schemas.job import JobSpec

FORMAT_VERSION = 1
READABLE_VERSION = 2  # 2: commit log may hold derived-hook entries (store/derived.py)


class ModelInfo(BaseModel):
    id: str
    revision: str | None = None
    architecture: str
    config_sha256: str  # hash of the model config (architecture identity)
    weights_sha256: str | None = None  # hash of the state dict actually used (content identity)
    kind: Literal["text", "vision"]


class PackingInfo(BaseModel):
    """How documents became contexts (resolved per tokenizer; see docs/format.md "Packing").

    Document text is tokenized as text (special-token strings are split, never control ids); the
    packer alone inserts ``bos_token_id`` at the start of every context (when ``prepend_bos``) and
    ``separator_token_id`` after every document.  ``drop_tokens`` names the inserted tokens that
    have no rows (``bos``, ``eos``; ``pad`` never has rows)."""

    prepend_bos: bool
    bos_token_id: int | None = None
    bos_token: Literal["bos", "cls", "eos", "sep"] | None = None  # which special token plays BOS
    separator_token_id: int | None = None
    separator_token: Literal["eos", "sep"] | None = None
    drop_tokens: list[str] = Field(default_factory=list)
    prepend_bos_requested: bool | None = None  # the job's value; None = auto
    special_tokens_in_text: Literal["split"] = "split"


class TokenizerInfo(BaseModel):
    name: str = Field(description="loads offline with AutoTokenizer.from_pretrained (local dir or cached HF id)")
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None
    cls_token_id: int | None = None
    sep_token_id: int | None = None
    source_id: str | None = None  # the model id the tokenizer came with (e.g. an HF hub id)
    packing: PackingInfo | None = None


class Manifest(BaseModel):
    format: Literal["actlake"] = "actlake"
    format_version: int = FORMAT_VERSION
    created_at: str
    model: ModelInfo
    tokenizer: TokenizerInfo | None = None
    hooks: dict[str, HookInfo]
    job: JobSpec | None = None  # None for datasets written from arrays (DatasetWriter)
    chunk_rows: int
    row_shuffle: bool
    provenance_columns: list[str]
    status: Literal["writing", "complete"] = "writing"
    num_rows: int | None = Field(default=None, description="set when the job completes; readers use the log")
    num_fragments: int | None = None
