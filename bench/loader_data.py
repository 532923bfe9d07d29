"""bench/loader.py's data: a synthetic activation-like store written through DatasetWriter, the
plan the peers' converters read, and the per-row index (context, position, fragment, row hash)
used to score shuffles."""
from __future__ import annotations

import json
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))
from common import row_keys  # noqa: E402

HOOK = "model.layers.6"


def synth_rows(rng: np.random.Generator, n_ctx: int, ctx_len: int, dim: int) -> np.ndarray:
    """Activation-like float32 rows, contexts contiguous: heavy-tailed per-unit values (cube of a
    normal: kurtosis ~36, most values near 0), a per-context offset, log-normal row norms, and a few
    massive outlier units on each context's first token (attention-sink style)."""
    n = n_ctx * ctx_len
    z = rng.standard_normal((n, dim), dtype=np.float32)
    x = z * z
    x *= z
    x *= np.float32(0.3)
    x += np.repeat(rng.standard_normal((n_ctx, dim), dtype=np.float32) * np.float32(0.5), ctx_len, axis=0)
    x *= rng.lognormal(0.0, 0.25, size=(n, 1)).astype(np.float32)
    x[::ctx_len, :8] = np.float32(40.0) * np.sign(x[::ctx_len, :8] + np.float32(1e-3))
    return x


def to_storage(x: np.ndarray, dtype: str) -> np.ndarray:
    if dtype == "bfloat16":
        import torch

        from actlake.store.dtypes import tensor_to_storage

        return tensor_to_storage(torch.from_numpy(x), "bfloat16")
    return x.astype(dtype)


def write_store(path: Path, rows: int, dim: int, ctx_len: int, frag_rows: int, chunk_rows: int, dtype: str,
                seed: int) -> None:
    """Write a store through DatasetWriter: fragments of whole contexts, rows shuffled across the
    fragment's contexts (seeded permutation per fragment, manifest row_shuffle=True)."""
    import pyarrow as pa

    from actlake.store.writer import DatasetWriter

    n_ctx = rows // ctx_len
    per_frag = max(1, frag_rows // ctx_len)
    tmp = path.with_name(path.name + ".partial")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.parent.mkdir(parents=True, exist_ok=True)
    w = DatasetWriter(str(tmp), {HOOK: ((dim,), dtype)}, chunk_rows=chunk_rows, codec="none",
                      model_id="bench-synthetic", row_shuffle=True)
    t0 = time.perf_counter()
    for f, c0 in enumerate(range(0, n_ctx, per_frag)):
        k = min(per_frag, n_ctx - c0)
        rng = np.random.default_rng([seed, f])
        x = to_storage(synth_rows(rng, k, ctx_len, dim), dtype)
        n = k * ctx_len
        ctx = np.repeat(np.arange(c0, c0 + k, dtype=np.int64), ctx_len)
        prov = pa.table({"doc_id": ctx // 3, "context_id": ctx,
                         "context_pos": np.tile(np.arange(ctx_len, dtype=np.int32), k),
                         "token_id": rng.integers(0, 50257, n, dtype=np.int32)})
        perm = np.random.default_rng([seed, f, 1]).permutation(n)
        w.add({HOOK: x[perm]}, prov.take(pa.array(perm)))
        del x
        print(f"  fragment {f}: {n:,} rows ({time.perf_counter() - t0:.0f} s)", file=sys.stderr, flush=True)
    w.close()
    shutil.rmtree(path, ignore_errors=True)
    os.rename(tmp, path)


def store_is_complete(path: Path) -> bool:
    try:
        return json.loads((path / "actlake.json").read_text()).get("status") == "complete"
    except (OSError, ValueError):
        return False


def make_plan(ds, hook: str) -> dict:
    """Every chunk file and provenance file of the snapshot, in storage order (for raw and peers)."""
    from actlake.store import layout

    if not ds.store.is_local:
        raise SystemExit("bench/loader.py needs a local store (it reads the chunk files directly)")
    info = ds.manifest.hooks[hook]
    if info.codec != "none":
        raise SystemExit(f"hook {hook} is stored with codec {info.codec}; the raw reader needs codec 'none'")
    from actlake.store.dtypes import STORAGE

    frags, off = [], 0
    for i, rec in enumerate(ds.snapshot.fragments):
        nch = -(-rec.num_rows // ds.chunk_rows)
        frags.append({
            "index": i, "rows": rec.num_rows, "offset": off,
            "chunks": [os.path.abspath(ds.store.path(f"{rec.path}/{layout.chunk_key(info.array, c, 1 + len(info.shape))}"))
                       for c in range(nch)],
            "provenance": os.path.abspath(ds.store.path(f"{rec.path}/{layout.PROVENANCE}")),
        })
        off += rec.num_rows
    return {"store": os.path.abspath(ds.store.root), "hook": hook, "dtype": info.dtype,
            "storage_dtype": STORAGE[info.dtype].str, "shape": list(info.shape), "chunk_rows": ds.chunk_rows,
            "num_rows": off, "fragments": frags}


def build_index(ds, plan: dict, path: Path) -> dict:
    """Per global row: context id, position, fragment; plus sorted row keys for identifying the rows
    that peers return.  Cached in ``path`` (npz)."""
    if path.exists():
        z = np.load(path)
        return {k: z[k] for k in z.files}
    n = plan["num_rows"]
    ctx = np.empty(n, np.int64)
    pos = np.empty(n, np.int64)
    frag = np.empty(n, np.int32)
    keys = np.empty(n, np.uint64)
    dt = np.dtype(plan["storage_dtype"])
    d = int(np.prod(plan["shape"]))
    for f in plan["fragments"]:
        o, r = f["offset"], f["rows"]
        t = ds.provenance(np.arange(o, o + r))
        ctx[o:o + r] = t.column("context_id").to_numpy()
        pos[o:o + r] = t.column("context_pos").to_numpy()
        frag[o:o + r] = f["index"]
        at = o
        for p in f["chunks"]:
            a = np.fromfile(p, dtype=dt).reshape(-1, d)[: o + r - at]
            keys[at:at + len(a)] = row_keys(a)
            at += len(a)
    order = np.argsort(keys, kind="stable")
    skeys = keys[order]
    collisions = int(n - np.unique(skeys).size)
    out = {"context_id": ctx, "context_pos": pos, "fragment": frag, "keys": skeys, "row_ids": order.astype(np.int64),
           "collisions": np.array(collisions)}
    np.savez(path, **out)
    return out


