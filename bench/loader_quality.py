"""Shuffle-quality rows of bench/loader.py: actlake, a naive sequential reader, a SAELens-style
half-buffer mixer (re-implemented on row ids) and the real peers' returned rows."""
from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH))


def saelens_mixing_sim(stream_rows: np.ndarray, ctx_len: int, prompts: int, buffer_tokens: int, batch: int,
                       mix: float = 0.5, seed: int = 0) -> list[np.ndarray]:
    """SAELens' ``mixing_buffer`` (training/mixing_buffer.py) on row ids: raw batches of ``prompts``
    cached contexts are appended; once the buffer holds >= buffer_tokens it is permuted, a
    ``mix`` fraction is kept and the rest served in batches."""
    rng = np.random.default_rng(seed)
    step = prompts * ctx_len
    storage = None
    out = []
    for s in range(0, len(stream_rows) - step + 1, step):
        new = stream_rows[s:s + step]
        storage = new if storage is None else np.concatenate([storage, new])
        if len(storage) >= buffer_tokens:
            storage = storage[rng.permutation(len(storage))]
            keep = int(buffer_tokens * mix)
            nb = max(1, (len(storage) - keep) // batch)
            out.extend(storage[i * batch:(i + 1) * batch] for i in range(nb))
            storage = storage[nb * batch:]
    return out


def quality_rows(args, ds, idx: dict, peer_ids: dict) -> list[dict]:
    from actlake.client import quality

    ctx, frag = idx["context_id"], idx["fragment"]
    sizes = np.unique(ctx, return_counts=True)[1]
    b = args.batch_size
    rows = []

    def score(name: str, batches_rows: list[np.ndarray], note: str = "") -> None:
        batches_rows = [np.asarray(r) for r in batches_rows if len(r) == b]
        if not batches_rows:
            rows.append({"loader": name, "error": "no full batches", "note": note})
            return
        rep = quality.report([ctx[r] for r in batches_rows], sizes, b, [frag[r] for r in batches_rows])
        rows.append({"loader": name, **rep, "note": note})

    def actlake_rows(shuffle: bool, rank: int = 0, world_size: int = 1) -> list[np.ndarray]:
        kw = {"buffer_rows": args.buffer_rows} if args.buffer_rows else {}
        st = ds.batches(b, hooks=[args.hook], shuffle=shuffle, seed=args.seed, with_provenance=True, rank=rank,
                        world_size=world_size, **kw)
        return [bt["row_id"].numpy().copy() for bt in st]

    score("actlake shuffled", actlake_rows(True), "full epoch")
    for w in (2, 3):  # the last rank of a split ends on the shortest stretch of the block order
        score(f"actlake shuffled, rank {w - 1} of {w}", actlake_rows(True, w - 1, w), "full epoch of that rank")
    score("actlake unshuffled (storage order)", actlake_rows(False), "full epoch; write-time shuffle only")
    ext = np.lexsort((idx["context_pos"], ctx))  # extraction order: context by context
    n = len(ext) // b * b
    score("naive sequential (extraction order)", list(ext[:n].reshape(-1, b)), "full epoch; no shuffle at all")
    perm = np.random.default_rng(args.seed).permutation(len(ctx))
    score("perfect permutation (check)", list(perm[:n].reshape(-1, b)), "full epoch; sample vs exact expectation")
    c = args.context
    score("SAELens-style half-buffer (numpy)", saelens_mixing_sim(ext, c, 32, 20 * c, b),
          f"SAELens 6.54 defaults: buffer = n_batches_in_buffer*context = {20 * c:,} tokens, 32 contexts/read, mix 0.5")
    score("SAELens-style half-buffer, 20x32 contexts (numpy)", saelens_mixing_sim(ext, c, 32, 20 * 32 * c, b),
          f"buffer = n_batches_in_buffer*store_batch_size_prompts*context = {20 * 32 * c:,} tokens (documented size)")
    for name, ids in peer_ids.items():
        good = [r for r in ids if (r >= 0).all()]
        note = f"{len(good)} timed batches" + ("" if len(good) == len(ids) else f"; {len(ids) - len(good)} with unmatched rows dropped")
        score(name, good, note)
    return rows


