"""Small real stores written through DatasetWriter (no model needed)."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from actlake.store.writer import DatasetWriter


def make_store(uri: str, fragments=(300, 257, 64, 1), dim: int = 6, chunk_rows: int = 32, ctx_len: int = 10,
               dtype: str = "float32", codec: str = "none") -> str:
    """Row r (global) holds value r in column 0 so tests can identify rows from the data itself."""
    w = DatasetWriter(uri, {"h": ((dim,), dtype), "g:input": ((3,), dtype)}, chunk_rows=chunk_rows, codec=codec)
    start = 0
    for n in fragments:
        rid = np.arange(start, start + n)
        a = np.tile(rid[:, None].astype(np.float32), (1, dim))
        a[:, 1:] = np.random.default_rng(start).standard_normal((n, dim - 1))
        b = (rid[:, None] * np.ones((1, 3))).astype(np.float32) * -1
        if dtype == "float16":
            a, b = a.astype(np.float16), b.astype(np.float16)
        ctx = rid // ctx_len
        prov = pa.table({"doc_id": ctx // 3, "context_id": ctx, "context_pos": (rid % ctx_len).astype(np.int32),
                         "token_id": (rid % 97).astype(np.int32)})
        w.add({"h": a, "g:input": b}, prov)
        start += n
    return w.close()
