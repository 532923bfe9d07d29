"""Check a QuerySpec against a dataset before any work, and build its Projection.

Every failure is a ``QueryError`` whose message starts with the argument's name."""
from __future__ import annotations

from typing import Any

import numpy as np
from pydantic import ValidationError

from actlake.query.values import Projection
from actlake.schemas.errors import QueryError, format_validation_error
from actlake.schemas.hooks import HookInfo
from actlake.schemas.query import QuerySpec


def check_count(name: str, value: Any) -> None:
    """``value`` must be None or a whole number >= 1 (``tasks``, ``threads``).  Raises: QueryError
    naming ``name``."""
    if value is not None and (isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1):
        raise QueryError(f"{name}: must be a whole number >= 1, got {value!r}")


def parse_spec(**kw: Any) -> QuerySpec:
    """Build a QuerySpec; pydantic errors become one QueryError naming the field(s)."""
    try:
        return QuerySpec(**kw)
    except ValidationError as e:
        raise QueryError(format_validation_error(e).replace("(root): ", "")) from None


def as_array(name: str, value: Any, ndim: tuple[int, ...]) -> np.ndarray:
    """A float array from numpy / torch / lists; QueryError naming ``name`` if it is not real floats
    or has the wrong number of dimensions.  Returns float32."""
    if hasattr(value, "detach"):  # torch tensor (bf16 has no numpy dtype)
        t = value.detach().cpu()
        if not t.is_floating_point():
            raise QueryError(f"{name}: must be a floating-point array, got torch {t.dtype}")
        value = t.float().numpy()
    arr = np.asarray(value)
    if arr.dtype == object or not np.issubdtype(arr.dtype, np.floating):
        raise QueryError(f"{name}: must be a floating-point array, got dtype {arr.dtype}")
    if arr.ndim not in ndim:
        raise QueryError(f"{name}: must have {' or '.join(map(str, ndim))} dimension(s), got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise QueryError(f"{name}: contains NaN or inf")
    return np.ascontiguousarray(arr, dtype=np.float32)


def check_hook(spec: QuerySpec, hooks: dict[str, HookInfo], num_rows: int) -> HookInfo:
    if spec.hook not in hooks:
        raise QueryError(f"hook: {spec.hook!r} is not in this dataset; it has {', '.join(hooks)}")
    if num_rows == 0:
        raise QueryError("dataset: the store has no committed rows to query")
    return hooks[spec.hook]


def projection_for(spec: QuerySpec, info: HookInfo) -> Projection:
    """The Projection a spec asks for on a hook of per-row shape ``info.shape`` (flattened to d)."""
    d = int(np.prod(info.shape))
    if spec.unit is not None:
        units = np.atleast_1d(np.asarray(spec.unit, dtype=np.int64))
        if units.size == 0:
            raise QueryError("unit: empty list")
        bad = units[(units < 0) | (units >= d)]
        if bad.size:
            raise QueryError(f"unit: {int(bad[0])} is out of range [0, {d}) for hook {spec.hook}")
        return Projection("units", d, units=units)
    if spec.direction is not None:
        m = as_array("direction", spec.direction, (1, 2))
        m = m.reshape(1, -1) if m.ndim == 1 else m
        if m.shape[1] != d:
            raise QueryError(f"direction: width {m.shape[1]} does not match hook {spec.hook} (d = {d})")
        return Projection("directions", d, matrix=np.ascontiguousarray(m.T))
    if spec.encoder is not None:
        e = spec.encoder
        w = as_array("encoder.W_enc", e.W_enc, (2,))
        if w.shape[0] != d and w.shape[1] == d:
            w = w.T
        if w.shape[0] != d:
            raise QueryError(f"encoder.W_enc: shape {w.shape} has no axis of the hook's width d = {d}")
        b_enc = None if e.b_enc is None else as_array("encoder.b_enc", e.b_enc, (1,))
        if b_enc is not None and b_enc.shape[0] != w.shape[1]:
            raise QueryError(f"encoder.b_enc: length {b_enc.shape[0]} != {w.shape[1]} latents")
        b_dec = None if e.b_dec is None else as_array("encoder.b_dec", e.b_dec, (1,))
        if b_dec is not None and b_dec.shape[0] != d:
            raise QueryError(f"encoder.b_dec: length {b_dec.shape[0]} != hook width {d}")
        if e.activation == "topk" and (e.k or 0) > w.shape[1]:
            raise QueryError(f"encoder.k: {e.k} > {w.shape[1]} latents")
        return Projection("sae", d, matrix=np.ascontiguousarray(w), b_enc=b_enc, b_dec=b_dec,
                          activation=e.activation, topk=e.k)
    if spec.kind in ("topk", "bottomk", "intervals"):
        raise QueryError(f"unit: {spec.kind} needs a unit, a direction or an encoder")
    return Projection("identity", d)


def check_columns(spec: QuerySpec, columns: list[str]) -> list[str]:
    """Provenance columns the query needs; QueryError if the dataset lacks one."""
    need = []
    if spec.dedup == "context" and spec.kind in ("topk", "bottomk"):
        need.append("context_id")
    if spec.by is not None and spec.kind == "stats":
        need.append(spec.by)
    missing = [c for c in need if c not in columns]
    if missing:
        arg = "by" if spec.by in missing else "dedup"
        raise QueryError(f"{arg}: provenance column {missing[0]!r} is not in this dataset ({', '.join(columns)})")
    return need
