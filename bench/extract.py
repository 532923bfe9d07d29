"""Capture + write overhead vs a bare forward pass of the same model on the same batches.

    .venv/bin/python bench/extract.py [--model smollm2-135m] [--tokens 8192] [--hook model.layers.29]

Runs in one process, without Ray, so both sides see the same threads and caches: (a) the bare
forward of the whole model, (b) actlake's unit processing with one hook on the *last* layer (no
early-exit advantage) including the cast, the write-time shuffle and the fragment write with
checksums, (c) the same with a hook at a middle layer, where the model is cut after the hook.
(a) is run twice: the full model with its LM head, and the base model alone (the same layers a
last-layer hook needs, the fair baseline).  Prints tokens/s and ratios (target: (b) >= 0.90x).
Hook-kind rows (issue 12): (d) per-head q, k and v of every layer (``blocks.*.attn.hook_q`` ...,
3 x layers hooks, target >= 0.70x), (e) attention probabilities of one middle layer
(``:probs``; the model runs the eager attention for it, also timed bare as the fair baseline)."""
from __future__ import annotations

import argparse
import os
import tempfile
import time

os.environ.setdefault("HF_HUB_OFFLINE", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402

from actlake.schemas.job import parse_job  # noqa: E402
from actlake.service.coordinator import generate_units  # noqa: E402
from actlake.workers.model_worker import ModelWorker  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--tokens", type=int, default=8192)
    ap.add_argument("--context-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--last-hook", default="model.layers.29")
    ap.add_argument("--mid-hook", default="model.layers.14")
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--probs-hook", default="blocks.14.attn.hook_pattern")
    ap.add_argument("--no-kinds", action="store_true", help="skip the q/k/v and attention-probability rows")
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="actlake-bench-")

    def worker(hook: str | list[str], sub: str) -> tuple[ModelWorker, list]:
        job = parse_job({"model": args.model, "hooks": [hook] if isinstance(hook, str) else hook, "data": "stdlib", "out": f"{out}/{sub}",
                         "context_len": args.context_len, "max_tokens": args.tokens, "batch_size": args.batch_size,
                         "fragment_tokens": 2048, "progress": False})
        w = ModelWorker(job, "bench")
        w.describe()
        return w, list(generate_units(job, w.lm.tokenizer))

    last, units = worker(args.last_hook, "last")
    mid, _ = worker(args.mid_hook, "mid")
    model = last.lm.model
    n_tok = sum(u.num_tokens for u in units)

    def bare(net=model) -> None:
        with torch.inference_mode():
            for u in units:
                for b in range(0, len(u.contexts), args.batch_size):
                    ctx = u.contexts[b:b + args.batch_size]
                    ids = torch.from_numpy(np.stack([c.tokens for c in ctx]).astype(np.int64))
                    net(input_ids=ids, attention_mask=torch.ones_like(ids))

    # the fair baseline for a last-layer hook: the same layers without the LM head
    base_model = getattr(model, getattr(model, "base_model_prefix", ""), None) or model

    def extract(w: ModelWorker) -> None:
        for u in units:
            w.process(u)

    runs = [("bare forward (full model)", bare), ("bare forward (base model, no LM head)", lambda: bare(base_model)),
            (f"actlake capture+write {args.last_hook}", lambda: extract(last)),
            (f"actlake capture+write {args.mid_hook} (cut)", lambda: extract(mid))]
    if not args.no_kinds:
        qkv, _ = worker(["blocks.*.attn.hook_q", "blocks.*.attn.hook_k", "blocks.*.attn.hook_v"], "qkv")
        probs, _ = worker(args.probs_hook, "probs")  # switches its own model copy to eager attention
        eager = probs.lm.model
        eager_base = getattr(eager, getattr(eager, "base_model_prefix", ""), None) or eager
        runs += [(f"actlake capture+write q,k,v of all {len(qkv.hooks) // 3} layers", lambda: extract(qkv)),
                 ("bare forward (base model, eager attention)", lambda: bare(eager_base)),
                 (f"actlake capture+write {args.probs_hook} (cut, eager)", lambda: extract(probs))]
    results = {}
    for name, fn in runs:
        fn() if name.startswith("bare") else None  # warm-up of the bare path (weights, allocator)
        best = min(_timed(fn) for _ in range(args.repeats))
        results[name] = n_tok / best
    base = results["bare forward (base model, no LM head)"]
    print(f"model {args.model}, {n_tok} tokens, batch {args.batch_size} x {args.context_len}, "
          f"torch threads {torch.get_num_threads()}")
    eager = results.get("bare forward (base model, eager attention)")
    for name, r in results.items():
        extra = f"   {r / eager:5.2f}x bare eager" if eager and "eager" in name else ""
        print(f"  {name:55s} {r:10,.0f} tok/s   {r / base:5.2f}x bare base model{extra}")


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
