"""Row filters evaluated on provenance before batching (pure: table in, mask out)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel, ConfigDict, model_validator


class RowFilter(BaseModel):
    """Keep rows matching every given condition.

    ``min_position``/``max_position`` bound ``context_pos`` (inclusive); ``drop_positions`` removes
    listed positions (e.g. [0, 1] for attention-sink tokens); ``token_types`` keeps e.g. ["patch"];
    ``labels`` keeps rows whose ``label`` is listed; ``exclude_token_ids`` drops given tokens."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    min_position: int | None = None
    max_position: int | None = None
    drop_positions: tuple[int, ...] = ()
    token_types: tuple[str, ...] | None = None
    labels: tuple[str, ...] | None = None
    exclude_token_ids: tuple[int, ...] = ()

    @model_validator(mode="after")
    def _range(self) -> RowFilter:
        if self.min_position is not None and self.max_position is not None and self.min_position > self.max_position:
            raise ValueError("min_position > max_position")
        return self

    def columns(self) -> list[str]:
        cols = []
        if self.min_position is not None or self.max_position is not None or self.drop_positions:
            cols.append("context_pos")
        if self.token_types is not None:
            cols.append("token_type")
        if self.labels is not None:
            cols.append("label")
        if self.exclude_token_ids:
            cols.append("token_id")
        return cols

    def mask(self, table: pa.Table) -> np.ndarray:
        missing = [c for c in self.columns() if c not in table.column_names]
        if missing:
            raise KeyError(f"filter needs provenance column(s) {missing}, which this dataset does not have")
        keep = np.ones(table.num_rows, dtype=bool)
        if "context_pos" in self.columns():
            pos = table.column("context_pos").to_numpy()
            if self.min_position is not None:
                keep &= pos >= self.min_position
            if self.max_position is not None:
                keep &= pos <= self.max_position
            if self.drop_positions:
                keep &= ~np.isin(pos, self.drop_positions)
        for col, allowed in (("token_type", self.token_types), ("label", self.labels)):
            if allowed is not None:
                values = table.column(col)
                if pa.types.is_dictionary(values.type):
                    values = values.cast(pa.string())
                allowed_arr = pa.array(list(allowed), pa.string())
                # pyarrow.compute defines its kernels at import time: no static attribute for pyright to see
                hit = pc.is_in(values, value_set=allowed_arr)  # pyright: ignore[reportAttributeAccessIssue]
                keep &= hit.to_numpy(zero_copy_only=False)
        if self.exclude_token_ids:
            keep &= ~np.isin(table.column("token_id").to_numpy(), self.exclude_token_ids)
        return keep
