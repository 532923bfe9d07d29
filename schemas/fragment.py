"""Fragment records: what a commit makes visible."""
from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from actlake.schemas.hooks import HookInfo


class FragmentRecord(BaseModel):
    """One immutable fragment = one work unit's rows, all hooks row-aligned.

    ``path`` is unique per *attempt*, so a retried unit never overwrites the files of another attempt;
    only the committed attempt is ever visible to readers."""

    unit_id: str
    unit_index: int
    path: str  # relative to the dataset root
    num_rows: int
    num_items: int  # contexts (text) or images (vision) in this unit
    num_tokens: int = 0  # model input tokens (text) or images (vision) of this unit
    source_range: tuple[int, int]  # [start, end) in context/image index space
    checksums_sha256: str  # sha256 of the fragment's checksum file
    attempt: str
    worker: str = ""
    bytes: dict[str, int] = Field(default_factory=dict, description="bytes on storage per hook (its zarr array)")
    total_bytes: int = Field(0, description="bytes on storage of every file of the fragment (0: not recorded)")
    nonfinite: dict[str, int] = Field(
        default_factory=dict, description="inf/NaN values per hook (stored under 'warn', clamped under 'clamp')")


class DerivedRecord(BaseModel):
    """A derived hook (format version 2): one extra zarr array in every fragment it covers,
    row-aligned with the fragment's other hooks (e.g. projections onto directions, see
    store/derived.py).  Visible to readers only while it covers every fragment of their snapshot."""

    info: HookInfo  # name, array (unique per attempt), per-row shape, dtype
    source_hook: str  # the hook it was computed from
    recipe: dict[str, Any] = {}  # how: {"op": "project", "directions_sha256": ...}
    checksums: dict[str, str]  # unit id -> sha256 of the fragment's derived checksum file
    attempt: str


class Commit(BaseModel):
    """One log entry: a fragment (format 1) or a derived hook over committed fragments (format 2)."""

    version: int
    fragment: FragmentRecord | None = None
    derived: DerivedRecord | None = None
    committed_at: str
