"""Fragment records: what a commit makes visible."""
from __future__ import annotations

from pydantic import BaseModel, Field


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


class Commit(BaseModel):
    version: int
    fragment: FragmentRecord
    committed_at: str
