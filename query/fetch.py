"""Find rows by provenance keys: (doc_id, context_pos | doc_pos), (context_id, context_pos),
(image_id, patch_row, patch_col) — a scan of the key columns of every fragment's provenance."""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pyarrow as pa

from actlake.schemas.errors import QueryError

KEY_SETS = (("doc_id", "context_pos"), ("doc_id", "doc_pos"), ("context_id", "context_pos"),
            ("image_id", "patch_row", "patch_col"), ("doc_id",), ("context_id",), ("image_id",))


def key_table(keys: dict[str, object]) -> pa.Table:
    """Equal-length int64 key columns (scalars broadcast) + ``_order``; QueryError on a bad set."""
    names = tuple(k for k in keys if keys[k] is not None)
    if names not in KEY_SETS:
        sets = ", ".join("(" + ", ".join(s) + ")" for s in KEY_SETS)
        raise QueryError(f"fetch: give row_ids or one of the key sets {sets}; got ({', '.join(names)})")
    arrs = {k: np.atleast_1d(np.asarray(keys[k])) for k in names}
    n = max(len(a) for a in arrs.values())
    for k, a in arrs.items():
        if not np.issubdtype(a.dtype, np.integer):
            raise QueryError(f"{k}: must be integers, got {a.dtype}")
        if len(a) not in (1, n):
            raise QueryError(f"{k}: has {len(a)} values, other keys have {n}")
    cols = {k: pa.array(np.broadcast_to(a, (n,)).astype(np.int64)) for k, a in arrs.items()}
    cols["_order"] = pa.array(np.arange(n, dtype=np.int64))
    return pa.table(cols)


def find_rows(keys: pa.Table, fragment_provenance: Callable[[int, list[str]], pa.Table], offsets: np.ndarray,
              strict: bool = True) -> np.ndarray:
    """Global row ids matching ``keys``, in key order (several matches of one key: ascending row id).

    Args:
        keys: from :func:`key_table`.
        fragment_provenance: ``(fragment, columns) -> table`` of that fragment's provenance.
        offsets: int64 ``[fragments + 1]`` first row id of each fragment.
        strict: raise QueryError naming the first key with no row.
    Returns: int64 ``[m]``."""
    names = [c for c in keys.column_names if c != "_order"]
    found_rid, found_order = [], []
    for f in range(len(offsets) - 1):
        prov = fragment_provenance(f, names)
        prov = pa.table({c: prov.column(c).cast(pa.int64()) for c in names}).append_column(
            "_row", pa.array(np.arange(prov.num_rows, dtype=np.int64) + int(offsets[f])))
        hit = prov.join(keys, names, join_type="inner")
        if hit.num_rows:
            found_rid.append(hit.column("_row").to_numpy())
            found_order.append(hit.column("_order").to_numpy())
    rid = np.concatenate(found_rid) if found_rid else np.empty(0, np.int64)
    order = np.concatenate(found_order) if found_order else np.empty(0, np.int64)
    if strict:
        missing = np.setdiff1d(np.arange(keys.num_rows), order)
        if missing.size:
            i = int(missing[0])
            desc = ", ".join(f"{c}={keys.column(c)[i].as_py()}" for c in names)
            raise QueryError(f"{names[0]}: no row has {desc}")
    o = np.lexsort((rid, order))
    return rid[o]
