"""Hook specifications: which module (or standard alias), which value of it, and which call.

Grammar of one hook: ``PATH[:SUFFIX]...`` where PATH is a module path from ``model.named_modules()``
or a TransformerLens-style alias (``blocks.6.hook_resid_post``), optionally with wildcards, and each
SUFFIX is one of

- ``input`` / ``output``: the module's first positional input, or its (first) output (default);
- a named kind (``KINDS``): per-head ``q``/``k``/``v`` (``q_rot``/``k_rot`` with the rotary embedding
  applied), pre-softmax attention ``scores``, attention ``probs``, per-head outputs before the output
  projection ``z``, MLP ``pre``/``post`` activation;
- ``call=N`` (0-based) or ``call=all``: for a module that runs several times per forward pass
  (ALBERT's shared layer); ``all`` stores every call, per-row shape ``(calls, ...)``.
"""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field, field_validator

HookIO = Literal["output", "input"]

#: Named hook kinds and what they hold per row (H = heads, hd = head dim, K = key positions).
KINDS: dict[str, str] = {
    "q": "per-head queries (H, hd), before any rotary embedding",
    "k": "per-head keys (H_kv, hd), before any rotary embedding",
    "v": "per-head values (H_kv, hd)",
    "q_rot": "per-head queries (H, hd) with the rotary embedding applied (rotary models only)",
    "k_rot": "per-head keys (H_kv, hd) with the rotary embedding applied (rotary models only)",
    "scores": "pre-softmax attention scores (H, K): scaled q.k before mask and softmax, keys padded with 0",
    "probs": "attention probabilities (H, K) as the eager attention computes them, keys padded with 0",
    "z": "per-head attention outputs before the output projection (H, hd)",
    "pre": "MLP pre-activation: the input of the nonlinearity",
    "post": "MLP post-activation: the output of the nonlinearity",
}
#: Kinds whose per-row shape has a key axis (it grows with the context length).
KEY_AXIS_KINDS = frozenset({"scores", "probs"})


class HookSpec(BaseModel):
    """A user-written hook pattern such as ``model.layers.*.mlp.down_proj:input`` or
    ``model.layers.3.self_attn:q``.

    ``module`` may contain wildcards: a component that is exactly ``*`` matches one whole path
    component; inside a component ``*``/``?``/``[..]`` match like ``fnmatch`` but never cross a
    ``.`` (``model.layers.1*`` selects layers 1 and 10-19).  ``io`` picks the module's first
    positional input or its (first) output; ``kind`` a named value (``KINDS``); ``call`` one call of a
    module that runs several times per forward (0-based) or ``"all"``."""

    module: str = Field(min_length=1)
    io: HookIO = "output"
    kind: str | None = None
    call: int | Literal["all"] | None = None

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str | None) -> str | None:
        if v is not None and v not in KINDS:
            raise ValueError(f"unknown hook kind {v!r}; known kinds: {', '.join(KINDS)}")
        return v

    @field_validator("call")
    @classmethod
    def _call(cls, v):
        if isinstance(v, int) and v < 0:
            raise ValueError(f"call={v}: calls are numbered from 0")
        return v

    @property
    def suffix(self) -> str:
        return hook_suffix(self.io, self.kind, self.call)

    @property
    def name(self) -> str:
        return self.module + self.suffix

    @classmethod
    def parse(cls, text: str) -> HookSpec:
        text = text.strip()
        if not text:
            raise ValueError("empty hook name")
        module, *suffixes = text.split(":")
        io, kind, call = "output", None, None
        for s in suffixes:
            if s in ("input", "output"):
                io = s
            elif s in KINDS:
                kind = s
            elif s.startswith("call="):
                v = s[len("call="):]
                if v != "all" and not v.isdigit():
                    raise ValueError(f"hook {text!r}: ':call=' takes a call number (0, 1, ...) or 'all', not {v!r}")
                call = v if v == "all" else int(v)
            else:
                raise ValueError(f"hook {text!r}: unknown suffix ':{s}'; use ':input', ':output', "
                                 f"':call=N', ':call=all' or a kind ({', '.join(KINDS)})")
        if kind is not None and io == "input":
            raise ValueError(f"hook {text!r}: a kind (:{kind}) cannot be combined with ':input'")
        return cls(module=module, io=io, kind=kind, call=call)


def hook_suffix(io: str, kind: str | None, call: int | str | None) -> str:
    """The canonical suffix of a hook name (``:input``, ``:q``, ``:call=2``, in this order)."""
    s = ":input" if io == "input" else ""
    s += f":{kind}" if kind else ""
    s += f":call={call}" if call is not None else ""
    return s


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
    kind: str | None = None  # a KINDS key for named kinds
    call: int | Literal["all"] | None = None
    rotary: bool | None = None  # q/k kinds: whether the rotary embedding is applied to the stored values

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
    return hook_name.replace(":", "@").replace("=", "-")
