"""Small real stores for the query tests, written through DatasetWriter, with the full array kept
in memory (in row-id order) as the numpy reference."""
from __future__ import annotations

import numpy as np
import pyarrow as pa

from actlake.store.dtypes import tensor_to_storage
from actlake.store.writer import DatasetWriter

TEXT_COLS = ["row_id", "doc_id", "context_id", "context_pos", "doc_pos", "token_id"]
VISION_COLS = ["row_id", "doc_id", "image_id", "context_id", "context_pos", "patch_row", "patch_col", "token_type",
               "label"]


def text_store(uri: str, fragments=(300, 257, 64, 1), d: int = 8, chunk_rows: int = 32, ctx_len: int = 10,
               dtype: str = "float32", ties: bool = True, mean: float = 0.0, scale: float = 1.0, seed: int = 0):
    """Returns (uri, X float32 [N, d] as a reader sees it, provenance table [N] in row order).

    Rows of each fragment are permuted across its contexts (as the write-time shuffle does); with
    ``ties`` values are rounded to one decimal, so many rows tie."""
    import torch

    rng = np.random.default_rng(seed)
    w = DatasetWriter(uri, {"h": ((d,), dtype), "w": ((4,), dtype)}, chunk_rows=chunk_rows,
                      provenance_columns=TEXT_COLS)
    xs, provs, ctx0 = [], [], 0
    for n in fragments:
        x = (rng.standard_normal((n, d)) * scale + mean).astype(np.float32)
        if ties:
            x = np.round(x, 1).astype(np.float32)
        nctx = -(-n // ctx_len)
        ctx = np.repeat(np.arange(ctx0, ctx0 + nctx), ctx_len)[:n]
        pos = np.tile(np.arange(ctx_len), nctx)[:n]
        perm = rng.permutation(n)
        ctx, pos = ctx[perm], pos[perm]
        prov = pa.table({"doc_id": ctx // 3, "context_id": ctx, "context_pos": pos.astype(np.int32),
                         "doc_pos": ((ctx % 3) * ctx_len + pos).astype(np.int32),
                         "token_id": ((ctx * 7 + pos) % 50).astype(np.int32)})
        t = torch.from_numpy(x)
        stored = tensor_to_storage(t, dtype)
        w.add({"h": stored, "w": tensor_to_storage(t[:, :4] * 2, dtype)}, prov)
        xs.append(t.to(getattr(torch, dtype)).float().numpy())
        provs.append(prov)
        ctx0 += nctx
    w.close()
    return uri, np.concatenate(xs), pa.concat_tables(provs)


def vision_store(uri: str, images: int = 6, grid: int = 3, d: int = 5, chunk_rows: int = 8, seed: int = 1):
    """A ViT-like store: per image one CLS row and grid×grid patches; returns (uri, X, provenance)."""
    rng = np.random.default_rng(seed)
    w = DatasetWriter(uri, {"h": ((d,), "float32")}, chunk_rows=chunk_rows, provenance_columns=VISION_COLS)
    xs, provs = [], []
    for start in range(0, images, 3):
        ids = np.arange(start, min(start + 3, images))
        per = 1 + grid * grid
        img = np.repeat(ids, per)
        pr = np.tile(np.r_[-1, np.repeat(np.arange(grid), grid)], len(ids))
        pc = np.tile(np.r_[-1, np.tile(np.arange(grid), grid)], len(ids))
        tt = np.where(pr < 0, "cls", "patch")
        prov = pa.table({"doc_id": img, "image_id": img, "context_id": img,
                         "context_pos": np.tile(np.arange(per), len(ids)).astype(np.int32), "patch_row": pr,
                         "patch_col": pc, "token_type": pa.array(tt).dictionary_encode(),
                         "label": pa.array(np.where(img % 2 == 0, "even", "odd"))})
        x = rng.standard_normal((len(img), d)).astype(np.float32)
        w.add({"h": x}, prov)
        xs.append(x)
        provs.append(prov)
    w.close()
    return uri, np.concatenate(xs), pa.concat_tables(provs)


def ref_topk(v: np.ndarray, k: int, largest: bool = True) -> np.ndarray:
    """Row ids of the k best values of a column (ties: smaller row id first)."""
    key = v if largest else -v
    return np.lexsort((np.arange(len(v)), -key))[:k]


def ref_topk_dedup(v: np.ndarray, ctx: np.ndarray, k: int) -> np.ndarray:
    """Best row per context, then the k best contexts (ties: smaller row id)."""
    order = np.lexsort((np.arange(len(v)), -v))
    _, first = np.unique(ctx[order], return_index=True)
    best = order[first]
    return best[np.lexsort((best, -v[best]))][:k]
