"""SAELens peer (runs in .venv-bench): convert a store to SAELens' activation cache, then time
``ActivationsStore(cached_activations_path=...)``.

    python bench/peers/saelens_read.py convert --plan PLAN --out DIR --context 250
    python bench/peers/saelens_read.py read --cache DIR --plan PLAN --keymap KEYS --batches 20

The cache is written as ``CacheActivationsRunner.run`` writes it: per buffer, a
``Dataset.from_dict`` with features ``{hook: Array2D((context, d_in), dtype), "token_ids":
Sequence(int32, context)}`` saved with ``save_to_disk(num_shards=1)`` into ``.tmp_shards/``, then
SAELens' own ``CacheActivationsRunner._consolidate_shards``.  Rows are contexts in extraction order
(the runner's ``shuffle`` only shuffles the in-memory copy it pushes to the Hub; the cache on disk is
in extraction order).  Here one buffer = one fragment of the store, regrouped by (context, pos).

Reading uses SAELens' defaults for the in-RAM mixing buffer (``n_batches_in_buffer=20``,
``store_batch_size_prompts=32``, ``activations_mixing_fraction=0.5``, as in
LanguageModelSAERunnerConfig) and ``train_batch_size_tokens`` = the benchmark's batch size."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from common import (KEY_COLS, KeyMap, Meter, context_order, emit, load_plan, peer_cli,  # noqa: E402
                    read_fragment_provenance, read_fragment_rows)

HOOK = "blocks.0.hook_resid_post"  # SAELens hook name used for the cache column (any name works)


def convert(args) -> None:
    import datasets
    from datasets import Array2D, Dataset, Features, Sequence, Value
    from sae_lens.cache_activations_runner import CacheActivationsRunner

    datasets.disable_progress_bars()
    plan = load_plan(args.plan)
    out = Path(args.out)
    ctx_len, d = args.context, int(np.prod(plan["shape"]))
    dtype = plan["dtype"]  # float16 / float32 ("bfloat16" not supported by Arrow: fail loudly)
    features = Features({HOOK: Array2D(shape=(ctx_len, d), dtype=dtype),
                         "token_ids": Sequence(Value(dtype="int32"), length=ctx_len)})
    out.mkdir(parents=True, exist_ok=True)
    if any(out.iterdir()):
        raise SystemExit(f"{out} is not empty")
    tmp = out / ".tmp_shards"
    tmp.mkdir()
    t0 = time.perf_counter()
    n_ctx = dropped = 0
    for i, frag in enumerate(plan["fragments"]):
        rows = read_fragment_rows(plan, frag).reshape(frag["rows"], d)
        prov = read_fragment_provenance(frag)
        order = context_order(prov)
        rows, ctx, tok = rows[order], prov["context_id"][order], prov["token_id"][order]
        # whole contexts of exactly ctx_len tokens (SAELens needs a fixed context size)
        starts = np.flatnonzero(np.r_[True, ctx[1:] != ctx[:-1]])
        sizes = np.diff(np.r_[starts, len(ctx)])
        keep = np.concatenate([np.arange(s, s + n) for s, n in zip(starts, sizes) if n == ctx_len] or [np.zeros(0, int)])
        dropped += len(ctx) - len(keep)
        if not len(keep):
            continue
        acts = rows[keep].reshape(-1, ctx_len, d)
        toks = tok[keep].reshape(-1, ctx_len).astype(np.int32)
        n_ctx += len(acts)
        shard = Dataset.from_dict({HOOK: acts, "token_ids": toks}, features=features)
        shard.save_to_disk(str(tmp / f"shard_{i:05d}"), num_shards=1)
        del shard, acts, toks, rows
    CacheActivationsRunner._consolidate_shards(tmp, out, copy_files=False)
    emit({"contexts": n_ctx, "rows": n_ctx * ctx_len, "dropped_rows": dropped, "seconds": time.perf_counter() - t0})


def read(args) -> None:
    import torch
    from sae_lens.training.activations_store import ActivationsStore

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    plan = load_plan(args.plan)
    d = int(np.prod(plan["shape"]))
    row_bytes = d * np.dtype(plan["storage_dtype"]).itemsize
    m = Meter(row_bytes)
    store = ActivationsStore(
        model=None, dataset=None, streaming=False, hook_name=HOOK, hook_head_index=None,
        context_size=args.context, d_in=d, n_batches_in_buffer=args.n_batches_in_buffer,
        total_training_tokens=plan["num_rows"], store_batch_size_prompts=args.store_batch_size_prompts,
        train_batch_size_tokens=args.batch_size, prepend_bos=False, normalize_activations="none",
        device=torch.device("cpu"), dtype=args.dtype, cached_activations_path=args.cache,
        activations_mixing_fraction=args.mix_fraction,
    )
    kept = []
    for _ in range(args.batches + 1):  # +1: the first batch (buffer fill) is reported separately
        b = store.next_batch()
        m.add(int(b.shape[0]))
        kept.append(b[:, :KEY_COLS].clone())  # enough to identify the row; keeps RSS honest
    res = m.result(loader="saelens", dtype=str(kept[0].dtype),
                   config={"n_batches_in_buffer": args.n_batches_in_buffer,
                           "store_batch_size_prompts": args.store_batch_size_prompts,
                           "mix_fraction": args.mix_fraction, "context_size": args.context,
                           "mixing_buffer_tokens": args.n_batches_in_buffer * args.context})
    if args.keymap:
        km = KeyMap(args.keymap)
        ids = np.stack([km.row_ids_of(b) for b in kept])
        np.save(args.ids_out, ids)
        res["ids_file"], res["unmatched_rows"] = args.ids_out, int((ids < 0).sum())
    emit(res)


def main() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("HF_DATASETS_OFFLINE", "1")

    def read_args(r) -> None:
        r.add_argument("--cache", required=True)
        r.add_argument("--context", type=int, default=250)
        r.add_argument("--dtype", default="float16")
        r.add_argument("--n-batches-in-buffer", type=int, default=20)
        r.add_argument("--store-batch-size-prompts", type=int, default=32)
        r.add_argument("--mix-fraction", type=float, default=0.5)

    peer_cli(__doc__, convert, read, lambda c: c.add_argument("--context", type=int, default=250), read_args)


if __name__ == "__main__":
    main()
