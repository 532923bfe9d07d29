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


class TokenizerInfo(BaseModel):
    name: str
    vocab_size: int
    bos_token_id: int | None = None
    eos_token_id: int | None = None
    pad_token_id: int | None = None


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
    num_rows: int | None = Field(None, description="set when the job completes; readers use the log")
    num_fragments: int | None = None
