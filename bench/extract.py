"""Capture + write overhead vs a bare forward pass of the same model on the same batches.

    .venv/bin/python bench/extract.py [--model smollm2-135m] [--tokens 8192] [--device auto]

Runs in one process, without Ray, so both sides see the same threads and caches: (a) the bare
forward of the whole model, (b) actlake's unit processing with one hook on the *last* layer (no
early-exit advantage) including the cast, the write-time shuffle and the fragment write with
checksums, (c) the same with a hook at a middle layer, where the model is cut after the hook,
(d) 4 residual hooks spread over the layers (the last one on the last layer), (e) the residual
output of every layer (``model.layers.*``).
(a) is run twice: the full model with its LM head, and the base model alone (the same layers a
last-layer hook needs, the fair baseline).  Prints tokens/s and ratios (targets, issue 9: (b) >= 0.90x,
(e) >= 0.70x).
Hook-kind rows (issue 12): (f) per-head q, k and v of every layer (``blocks.*.attn.hook_q`` ...,
3 x layers hooks, target >= 0.70x), (g) attention probabilities of one middle layer
(``:probs``; the model runs the eager attention for it, also timed bare as the fair baseline).

Runs unchanged on a GPU machine: ``--device auto`` picks CUDA when torch sees a GPU, the compute
dtype is then bf16 (``--compute-dtype`` to change it; fp32 on CPU), timings wait for the GPU
(``torch.cuda.synchronize``) and the device is named in the output.  The loopback-cluster scaling
rows (1, 2, 4 worker nodes on one job) are ``bench/cluster.py``."""
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
from actlake.workers.hooks import resolve_hooks  # noqa: E402
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
    ap.add_argument("--four-hooks", default="model.layers.7,model.layers.14,model.layers.21,model.layers.29",
                    help="the 4-hook row (comma-separated)")
    ap.add_argument("--all-hooks", default="model.layers.*", help="the every-layer row")
    ap.add_argument("--device", default="auto", help="auto (CUDA when available, else CPU), cpu, cuda, cuda:1 ...")
    ap.add_argument("--compute-dtype", default=None, help="default: bf16 on a GPU, fp32 on CPU")
    ap.add_argument("--no-kinds", action="store_true", help="skip the q/k/v and attention-probability rows")
    args = ap.parse_args()
    out = tempfile.mkdtemp(prefix="actlake-bench-")
    dev = args.device if args.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    cuda = dev.startswith("cuda")
    compute = args.compute_dtype or ("bf16" if cuda else "fp32")

    def worker(hook: str | list[str], sub: str, share: ModelWorker | None = None) -> tuple[ModelWorker, list]:
        job = parse_job({"model": args.model, "hooks": [hook] if isinstance(hook, str) else hook, "data": "stdlib",
                         "out": f"{out}/{sub}", "context_len": args.context_len, "max_tokens": args.tokens,
                         "batch_size": args.batch_size, "fragment_tokens": 2048, "progress": False,
                         "device": dev, "compute_dtype": compute})
        w = ModelWorker(job, "bench")
        if share is not None:  # same weights, other hooks: no second copy of the model
            w.lm = share.lm
            w.hooks = resolve_hooks(w.lm.model, job.hooks, key_len=job.context_len)
        w.describe()
        return w, list(generate_units(job, w.lm.tokenizer))

    last, units = worker(args.last_hook, "last")
    mid, _ = worker(args.mid_hook, "mid", last)
    four, _ = worker(args.four_hooks.split(","), "four", last)
    every, _ = worker(args.all_hooks, "every", last)
    model = last.lm.model
    n_tok = sum(u.num_tokens for u in units)

    def bare(net=model) -> None:
        with torch.inference_mode():
            for u in units:
                for b in range(0, len(u.contexts), args.batch_size):
                    ctx = u.contexts[b:b + args.batch_size]
                    ids = torch.from_numpy(np.stack([c.tokens for c in ctx]).astype(np.int64)).to(dev)
                    net(input_ids=ids, attention_mask=torch.ones_like(ids))

    # the fair baseline for a last-layer hook: the same layers without the LM head
    base_model = getattr(model, getattr(model, "base_model_prefix", ""), None) or model

    def extract(w: ModelWorker) -> None:
        for u in units:
            w.process(u)

    runs = [("bare forward (full model)", bare), ("bare forward (base model, no LM head)", lambda: bare(base_model)),
            (f"actlake capture+write {args.last_hook}", lambda: extract(last)),
            (f"actlake capture+write {args.mid_hook} (cut)", lambda: extract(mid)),
            (f"actlake capture+write {len(four.hooks)} hooks", lambda: extract(four)),
            (f"actlake capture+write every layer ({len(every.hooks)} hooks)", lambda: extract(every))]
    if not args.no_kinds:
        qkv, _ = worker(["blocks.*.attn.hook_q", "blocks.*.attn.hook_k", "blocks.*.attn.hook_v"], "qkv", last)
        probs, _ = worker(args.probs_hook, "probs")  # switches its own model copy to eager attention
        eager = probs.lm.model
        eager_base = getattr(eager, getattr(eager, "base_model_prefix", ""), None) or eager
        runs += [(f"actlake capture+write q,k,v of all {len(qkv.hooks) // 3} layers", lambda: extract(qkv)),
                 ("bare forward (base model, eager attention)", lambda: bare(eager_base)),
                 (f"actlake capture+write {args.probs_hook} (cut, eager)", lambda: extract(probs))]
    results = {}
    for name, fn in runs:
        fn() if name.startswith("bare") else None  # warm-up of the bare path (weights, allocator)
        best = min(_timed(fn, cuda) for _ in range(args.repeats))
        results[name] = n_tok / best
    base = results["bare forward (base model, no LM head)"]
    where = (torch.cuda.get_device_name(torch.device(dev)) if cuda
             else f"CPU, {os.cpu_count()} cores, torch threads {torch.get_num_threads()}")
    print(f"model {args.model}, {n_tok} tokens, batch {args.batch_size} x {args.context_len}, "
          f"compute {compute}, device {dev} ({where})")
    eager = results.get("bare forward (base model, eager attention)")
    for name, r in results.items():
        extra = f"   {r / eager:5.2f}x bare eager" if eager and "eager" in name else ""
        print(f"  {name:55s} {r:10,.0f} tok/s   {r / base:5.2f}x bare base model{extra}")


def _timed(fn, cuda: bool = False) -> float:
    """Seconds of one call; on a GPU, queued kernels are waited for on both ends."""
    if cuda:
        torch.cuda.synchronize()
    t = time.perf_counter()
    fn()
    if cuda:
        torch.cuda.synchronize()
    return time.perf_counter() - t


if __name__ == "__main__":
    main()
