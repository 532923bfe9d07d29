"""Hook specifications: which module, and whether its input or output is captured."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

HookIO = Literal["output", "input"]


class HookSpec(BaseModel):
    """A user-written hook pattern such as ``model.layers.*.mlp.down_proj:input``.

    ``module`` may contain ``*`` wildcards (one path component each); the workers expand it against
    the real module tree.  ``io`` picks the module's first positional input or its (first) output."""

    module: str = Field(min_length=1)
    io: HookIO = "output"

    @property
    def name(self) -> str:
        return self.module if self.io == "output" else f"{self.module}:input"

    @classmethod
    def parse(cls, text: str) -> "HookSpec":
        text = text.strip()
        if not text:
            raise ValueError("empty hook name")
        if ":" in text:
            module, io = text.rsplit(":", 1)
            if io not in ("input", "output"):
                raise ValueError(f"hook {text!r}: suffix must be ':input' or ':output', not ':{io}'")
            return cls(module=module, io=io)  # type: ignore[arg-type]
        return cls(module=text)


def parse_hooks(value: str | list) -> list[HookSpec]:
    """Accept ``"a,b"``, ``["a", "b:input"]``, dicts (a stored manifest) or parsed specs."""
    if isinstance(value, str):
        value = [v for v in value.split(",") if v.strip()]
    out = [v if isinstance(v, HookSpec) else HookSpec.model_validate(v) if isinstance(v, dict) else HookSpec.parse(v)
           for v in value]
    if not out:
        raise ValueError("at least one hook is required")
    return out


class HookInfo(BaseModel):
    """A resolved hook as recorded in the manifest."""

    name: str  # e.g. "model.layers.6.mlp.down_proj:input"
    module: str
    io: HookIO
    array: str  # zarr array name inside each fragment
    shape: list[int]  # per-row shape, e.g. [576]
    dtype: Literal["float32", "float16", "bfloat16"]
    storage_dtype: Literal["float32", "float16", "uint16"]
    codec: Literal["none", "zstd"] = "none"
    layout: Literal["tokens", "spatial"] = "tokens"

    @field_validator("shape")
    @classmethod
    def _positive(cls, v: list[int]) -> list[int]:
        if not v or any(d <= 0 for d in v):
            raise ValueError(f"bad per-row shape {v}")
        return v

    @property
    def row_bytes(self) -> int:
        n = 1
        for d in self.shape:
            n *= d
        return n * (4 if self.storage_dtype == "float32" else 2)


def array_name(hook_name: str) -> str:
    """Store-safe array name: ':' is not portable across filesystems / object stores."""
    return hook_name.replace(":", "@")
