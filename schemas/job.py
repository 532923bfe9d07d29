"""The extraction job: everything needed to reproduce a dataset, loadable from YAML/JSON or flags."""
from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from actlake.schemas.errors import JobSpecError, format_validation_error
from actlake.schemas.hooks import HookSpec, parse_hooks
from actlake.schemas.sources import SourceSpec

DTYPE_ALIASES = {
    "fp32": "float32", "float32": "float32", "float": "float32",
    "fp16": "float16", "float16": "float16", "half": "float16",
    "bf16": "bfloat16", "bfloat16": "bfloat16",
}
DropToken = Literal["bos", "eos", "pad"]
NonFinitePolicy = Literal["error", "warn", "clamp"]

# Fields that do not change the dataset's content; a resumed job may change them freely.
# ``nonfinite``: fragments committed under ``error`` hold no inf/NaN, so the fix the NonFiniteError
# suggests (re-run with warn/clamp) resumes; counts are per fragment record.
RUNTIME_FIELDS = frozenset({"batch_size", "num_workers", "device", "progress", "nonfinite"})


def _dtype(v: Any) -> str:
    key = str(v).lower()
    if key not in DTYPE_ALIASES:
        raise ValueError(f"unknown dtype {v!r}; use one of bf16, fp16, fp32")
    return DTYPE_ALIASES[key]


class JobSpec(BaseModel):
    """One extraction job.  Units of work are deterministic ranges of the packed source."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(min_length=1, description="HF id, local dir, or 'smollm2-135m' (offline package)")
    revision: str | None = None
    hooks: list[HookSpec]
    data: SourceSpec
    out: str = Field(min_length=1)
    context_len: int = Field(128, ge=2, le=1 << 16)
    max_tokens: int | None = Field(None, gt=0, description="model input tokens to process (text)")
    max_images: int | None = Field(None, gt=0)
    batch_size: int = Field(8, ge=1, description="contexts (or images) per forward pass")
    compute_dtype: str = "float32"
    dtype: str = Field("bfloat16", description="storage dtype of activations")
    compression: Literal["none", "zstd"] = "none"
    prepend_bos: bool | None = Field(
        None, description="insert BOS ([CLS] for BERT-style) at each context start; None = auto per tokenizer")
    drop_tokens: list[DropToken] = Field(
        default_factory=lambda: ["bos", "pad"], description="inserted tokens that get no rows (never document tokens)")
    nonfinite: NonFinitePolicy = Field(
        "error", description="inf/NaN activations: error (NonFiniteError), warn (store and count), "
                             "clamp (to the dtype's range, NaN→0)")
    fragment_tokens: int = Field(
        65536, ge=16, description="model input tokens per fragment, approximately (rows: the tokens kept)")
    chunk_rows: int = Field(8192, ge=16)
    shuffle_rows: bool = Field(True, description="write-time shuffle of rows inside each fragment")
    seed: int = 0
    plan: Literal["stream", "shards"] = Field(
        "stream", description="stream: contexts packed across the whole source, planned centrally (max_tokens "
                              "honoured); shards: one unit per file / jsonl byte range / parquet row groups, "
                              "tokenized by the workers (scales to 1e10 tokens)")
    num_workers: int | None = Field(None, ge=1)
    device: str = "auto"
    progress: bool = True
    tokens_per_context: int | None = Field(
        None, ge=1, description="keep this many random positions per context (seeded)")
    weights: list[str] = Field(default_factory=list, description="parameters to export next to the activations")

    @field_validator("weights", mode="before")
    @classmethod
    def _weights(cls, v: Any) -> Any:
        return [w.strip() for w in v.split(",") if w.strip()] if isinstance(v, str) else v

    @field_validator("hooks", mode="before")
    @classmethod
    def _hooks(cls, v: Any) -> list[HookSpec]:
        return parse_hooks(v)

    @field_validator("data", mode="before")
    @classmethod
    def _data(cls, v: Any) -> Any:
        return SourceSpec.from_string(v) if isinstance(v, str) else v

    @field_validator("drop_tokens", mode="before")
    @classmethod
    def _drop_tokens(cls, v: Any) -> Any:
        if isinstance(v, str):  # CLI: "bos,eos" (or "" / "none" for nothing)
            return [x.strip() for x in v.split(",") if x.strip() and x.strip().lower() != "none"]
        return v

    @field_validator("dtype", "compute_dtype", mode="before")
    @classmethod
    def _dtypes(cls, v: Any) -> str:
        return _dtype(v)

    def identity(self) -> dict[str, Any]:
        """The fields that define the dataset's content (compared when resuming into an URI)."""
        return self.model_dump(mode="json", exclude=set(RUNTIME_FIELDS))

    def with_absolute_paths(self) -> JobSpec:
        """This job with a local relative ``out``, ``data.path`` and model directory made absolute
        against this process's working directory (``~`` expanded; URLs such as ``s3://`` unchanged).  Drivers call
        it before shipping the job to Ray actors, whose working directory is the cluster's, not the
        shell's, and so that the stored sources (``ActivationDataset.documents``) lead back to the
        files from anywhere.  ``out`` is not part of the job's identity; absolute ``data.path`` and
        ``model`` are, so ``corpus/`` and ``/abs/corpus/`` (or ``../m`` and ``/abs/m``) resume the same
        job."""
        update: dict[str, Any] = {}
        model = os.path.expanduser(self.model)
        if os.path.isfile(os.path.join(model, "config.json")) and os.path.abspath(model) != self.model:
            update["model"] = os.path.abspath(model)  # a local model directory, as typed
        out = _absolute(self.out)
        if out != self.out:
            update["out"] = out
        path = self.data.path and _absolute(self.data.path)
        if path != self.data.path:
            update["data"] = self.data.model_copy(update={"path": path})
        return self.model_copy(update=update) if update else self

    @property
    def is_vision(self) -> bool:
        return self.data.type == "images" or self.data.image_field is not None


def _absolute(path: str) -> str:
    """A local relative path made absolute (``~`` expanded); URLs and absolute paths unchanged."""
    if "://" in path or os.path.isabs(path):
        return path
    full = os.path.expanduser(path)
    return full if os.path.isabs(full) else os.path.abspath(full)


def load_job(path: str | Path | None = None, **overrides: Any) -> JobSpec:
    """Load a job from YAML/JSON (if given) and apply non-None overrides (CLI flags).

    With neither a file nor any override, this is the built-in demo job.  Raises JobSpecError with
    one line naming the bad field."""
    raw: dict[str, Any] = {}
    if path is not None:
        p = Path(path)
        if not p.is_file():
            raise JobSpecError(f"job file {'is a folder, not a file' if p.is_dir() else 'not found'}: {p}")
        try:
            text = p.read_text()
        except (OSError, UnicodeDecodeError) as e:
            raise JobSpecError(f"cannot read job file {p}: {e}") from None
        try:
            raw = json.loads(text) if p.suffix == ".json" else yaml.safe_load(text)
        except (yaml.YAMLError, json.JSONDecodeError) as e:
            raise JobSpecError(f"job file {p} is not valid YAML/JSON: {e}") from None
        if not isinstance(raw, dict):
            raise JobSpecError(f"job file {p} must hold a mapping of fields")
    overrides = {k: v for k, v in overrides.items() if v is not None}
    base = dict(DEMO_JOB) if path is None and not overrides else {}
    base.update(raw)
    base.update(overrides)
    return parse_job(base)


def parse_job(fields: dict[str, Any]) -> JobSpec:
    """Validate a dict of job fields; JobSpecError with one line naming the bad field(s)."""
    try:
        return JobSpec.model_validate(fields)
    except ValidationError as e:
        raise JobSpecError("invalid job: " + format_validation_error(e)) from None


# The built-in demo: the real SmolLM2-135M on the Python standard library's sources.
DEMO_JOB: dict[str, Any] = {
    "model": "smollm2-135m",
    "hooks": ["model.layers.6.mlp.down_proj:input", "model.layers.9"],
    "data": {"type": "python-stdlib"},
    "out": "./actlake-data/demo",
    "context_len": 128,
    "max_tokens": 24576,
    "batch_size": 16,
    "dtype": "bfloat16",
    "fragment_tokens": 4096,
    "chunk_rows": 1024,
}
