#!/usr/bin/env python
"""Training-loader benchmark (issue 3): actlake's batch stream vs the disk and vs the peers.

    .venv/bin/python bench/loader.py                 # 1.4 M x 768 fp16 (2.15 GB), warm + cold, peers
    .venv/bin/python bench/loader.py --quick         # 200 k rows, one repeat: a smoke run
    .venv/bin/python bench/loader.py --store PATH    # an existing local store (written there if absent)
    make bench                                       # creates .venv-bench for the peers first

In one run it prints rows/s and MB/s, warm (page cache) and cold (caches dropped), of
  raw        sequential read of the store's zarr chunk files with numpy, in storage order
             (``readinto`` a reused buffer, and ``np.fromfile`` per chunk);
  ram-perm   reference: a perfect permutation of rows already in RAM (warm only);
  actlake    ``ds.batches(B)`` shuffled and unshuffled, a full epoch each in a fresh process; also
             shuffled with ``torch.set_num_threads(1)`` in the consumer, and the 2nd epoch read in
             the same process (warm only);
  saelens    SAELens' ``ActivationsStore`` over a cache written as CacheActivationsRunner writes it;
  mosaic     MosaicML ``StreamingDataset`` (py1e) over the same rows as MDS, DataLoader 2 workers;
then the ratios, and the shuffle quality (distinct contexts and same-context pairs per batch against
the exact expectation for a perfect permutation; fragments per batch) of actlake, a naive
sequential reader, a SAELens-style half-buffer mixer and the real peers.

Besides rows/s: time to the first batch, CPU seconds per GB delivered (user/sys; less sensitive
than wall time to other work on this shared 2-core machine), the 1-minute load average during each
measurement, and peak RSS.  ``--profile`` adds a py-spy profile of one warm shuffled epoch.
Every measurement runs in a fresh subprocess (peak RSS per loader; peers in .venv-bench).  A peer that
cannot be installed or run is reported as unavailable with the reason, never with a number.  Peers
are timed over a bounded number of batches after their first one (SAELens 100, MosaicML 20;
``--peer-batches``); raw and actlake read whole epochs.  Data: ``--workdir`` (default ./actlake-data/bench, gitignored)."""
from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import (RESULT_MARK, Meter, can_drop_caches, emit, evict, load_plan, row_keys,  # noqa: E402
                    warm_files)

HOOK = "model.layers.6"
PEER_TIMEOUT = 1800
# --peers name -> (label, converter/reader script, extra read args).  saelens reads the cache in the
# store's dtype (same bytes as actlake); saelens-fp32 asks ActivationsStore for float32 (SAELens'
# default training dtype), converting while loading.
PEERS = {
    "saelens": ("SAELens cached ActivationsStore", "saelens", ["--dtype", "float16"]),
    "saelens-fp32": ("SAELens cached ActivationsStore, fp32 out", "saelens", ["--dtype", "float32"]),
    "mosaic": ("MosaicML streaming (py1e, 2 workers)", "mosaic", []),
}
# batches timed per peer after its first (--peer-batches overrides): SAELens runs at ~10^5 rows/s
# here, so 100 batches (~3 s); MosaicML at ~10^4 rows/s, so 20 (~6 s)
PEER_BATCHES = {"saelens": 100, "mosaic": 20}
SCRIPTS = {"saelens": BENCH / "peers" / "saelens_read.py", "mosaic": BENCH / "peers" / "mosaic_read.py"}
PEER_LABELS = {v[0] for v in PEERS.values()}
RAW = "raw sequential read (readinto)"
SHUF = "actlake shuffled"
SHUF1 = "actlake shuffled, torch 1 thread"
SHUF_E2 = "actlake shuffled, 2nd epoch in process"


# =============================================================================================
# store
# =============================================================================================
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


# =============================================================================================
# measurements (each in its own subprocess: `loader.py _measure KIND JSON`)
# =============================================================================================
def _m_raw(o: dict) -> dict:
    plan = load_plan(o["plan"])
    row_bytes = int(np.prod(plan["shape"])) * np.dtype(plan["storage_dtype"]).itemsize
    chunk_rows = plan["chunk_rows"]
    m = Meter(row_bytes)
    nbytes = 0
    if o["how"] == "readinto":
        buf = np.empty(chunk_rows * row_bytes, np.uint8)
        mv = memoryview(buf)
        for f in plan["fragments"]:
            left = f["rows"]
            for p in f["chunks"]:
                with open(p, "rb", buffering=0) as fh:
                    k = fh.readinto(mv)
                    while k < len(mv):  # readinto may return short reads
                        j = fh.readinto(mv[k:])
                        if not j:
                            break
                        k += j
                nbytes += k
                m.add(min(chunk_rows, left))
                left -= chunk_rows
    else:
        dt = np.dtype(plan["storage_dtype"])
        for f in plan["fragments"]:
            left = f["rows"]
            for p in f["chunks"]:
                a = np.fromfile(p, dtype=dt)
                nbytes += a.nbytes
                m.add(min(chunk_rows, left))
                left -= chunk_rows
    return m.result(loader=f"raw-{o['how']}", file_bytes=nbytes)


def _m_ram_perm(o: dict) -> dict:
    plan = load_plan(o["plan"])
    d = int(np.prod(plan["shape"]))
    dt = np.dtype(plan["storage_dtype"])
    data = np.empty((plan["num_rows"], d), dt)
    at = 0
    for f in plan["fragments"]:
        left = f["rows"]
        for p in f["chunks"]:
            a = np.fromfile(p, dtype=dt).reshape(-1, d)[:left]
            data[at:at + len(a)] = a
            at += len(a)
            left -= len(a)
    b = o["batch_size"]
    perm = np.random.default_rng(o.get("seed", 0)).permutation(len(data))
    m = Meter(d * dt.itemsize)
    for k in range(len(data) // b):
        out = data[perm[k * b:(k + 1) * b]]
        m.add(len(out))
    return m.result(loader="ram-perm")


def _m_actlake(o: dict) -> dict:
    import torch  # imported before the clock starts, like a trainer has it

    from actlake import open_dataset

    if o.get("torch_threads"):
        torch.set_num_threads(o["torch_threads"])
    kw = {"buffer_rows": o["buffer_rows"]} if o.get("buffer_rows") else {}
    h = o["hook"]
    skip = int(o.get("skip_epochs", 0))
    if skip:  # epochs read untimed first in this process (allocator and thread pools warmed up)
        ds = open_dataset(o["store"])
        for e in range(skip):
            for _ in ds.batches(o["batch_size"], hooks=[h], shuffle=o["shuffle"], seed=o.get("seed", 0), epoch=e, **kw):
                pass
    m = Meter(o["row_bytes"])
    if not skip:
        ds = open_dataset(o["store"])
    stream = ds.batches(o["batch_size"], hooks=[h], shuffle=o["shuffle"], seed=o.get("seed", 0), epoch=skip, **kw)
    for batch in stream:
        m.add(int(batch[h].shape[0]))
    return m.result(loader="actlake-shuffled" if o["shuffle"] else "actlake-sequential", epoch=skip,
                    layout={"block_rows": stream.block_rows, "buffer_rows": stream.buffer_rows,
                            "path": "direct" if stream._direct else "staged"})


MEASURES = {"raw": _m_raw, "ram_perm": _m_ram_perm, "actlake": _m_actlake}


def measure_main(argv: list[str]) -> None:
    kind, opts = argv[0], json.loads(argv[1])
    emit(MEASURES[kind](opts))


# =============================================================================================
# orchestration
# =============================================================================================
class Unavailable(Exception):
    pass


def run_json(cmd: list[str], timeout: float, env: dict | None = None, log: Path | None = None,
             profile_to: Path | None = None) -> dict:
    if profile_to is not None:
        cands = [shutil.which("py-spy"), Path(sys.executable).parent / "py-spy", ROOT / ".venv-bench" / "bin" / "py-spy"]
        spy = next((str(c) for c in cands if c and Path(c).exists()), "py-spy")
        cmd = [spy, "record", "--format", "raw", "--rate", "250", "--threads", "--nonblocking",
               "-o", str(profile_to), "--", *cmd]
    try:
        p = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        raise Unavailable(f"timed out after {timeout:.0f} s") from None
    except OSError as e:
        raise Unavailable(f"{type(e).__name__}: {e}") from None
    if log is not None:
        with open(log, "a") as f:
            f.write(f"$ {' '.join(cmd)}\n--- stdout\n{p.stdout[-20000:]}\n--- stderr\n{p.stderr[-20000:]}\n")
    for line in reversed(p.stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return json.loads(line[len(RESULT_MARK):])
    tail = [ln for ln in (p.stderr or p.stdout).strip().splitlines() if ln.strip()][-3:]
    raise Unavailable(f"exit {p.returncode}: " + " | ".join(tail)[-600:])


def fingerprint(ds) -> str:
    m = ds.manifest
    key = f"{os.path.abspath(ds.store.root)}|{ds.num_rows}|{ds.snapshot.version}|{m.created_at}"
    return hashlib.sha1(key.encode()).hexdigest()[:12]


def peer_env() -> dict:
    env = dict(os.environ)
    env.update(HF_HUB_OFFLINE="1", HF_DATASETS_OFFLINE="1", TOKENIZERS_PARALLELISM="false",
               TRANSFORMERS_NO_ADVISORY_WARNINGS="1", PYTHONWARNINGS="ignore")
    return env


def peer_versions(py: str) -> dict:
    code = ("import importlib.metadata as md, json; out={}\n"
            "for p in ('sae-lens','mosaicml-streaming','torch','datasets','transformers','numpy'):\n"
            "    try: out[p]=md.version(p)\n"
            "    except Exception as e: out[p]=None\n"
            "print(json.dumps(out))")
    try:
        return json.loads(subprocess.run([py, "-c", code], capture_output=True, text=True, timeout=60).stdout)
    except Exception:  # noqa: BLE001
        return {}


def convert_peer(name: str, py: str, script: Path, plan_path: Path, out_dir: Path, extra: list[str], log: Path) -> Path:
    """Convert once per store; ``out_dir/done.json`` marks a finished conversion."""
    data = out_dir / "data"
    if (out_dir / "done.json").exists():
        return data
    shutil.rmtree(out_dir, ignore_errors=True)
    out_dir.mkdir(parents=True)
    print(f"converting the store for {name} -> {data} ...", file=sys.stderr, flush=True)
    res = run_json([py, str(script), "convert", "--plan", str(plan_path), "--out", str(data), *extra],
                   PEER_TIMEOUT, peer_env(), log)
    (out_dir / "done.json").write_text(json.dumps(res))
    print(f"  {name}: converted in {res.get('seconds', 0):.0f} s", file=sys.stderr, flush=True)
    return data


# ---- shuffle quality ------------------------------------------------------------------------
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

    def actlake_rows(shuffle: bool) -> list[np.ndarray]:
        kw = {"buffer_rows": args.buffer_rows} if args.buffer_rows else {}
        st = ds.batches(b, hooks=[args.hook], shuffle=shuffle, seed=args.seed, with_provenance=True, **kw)
        return [bt["row_id"].numpy().copy() for bt in st]

    score("actlake shuffled", actlake_rows(True), "full epoch")
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


# ---- main -----------------------------------------------------------------------------------
def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "_measure":
        measure_main(sys.argv[2:])
        return
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--store", type=Path, help="local store to read (written there first if absent)")
    p.add_argument("--workdir", type=Path, default=ROOT / "actlake-data" / "bench")
    p.add_argument("--rows", type=int, default=1_400_000)
    p.add_argument("--dim", type=int, default=768)
    p.add_argument("--dtype", default="float16", choices=["float16", "float32", "bfloat16"])
    p.add_argument("--context", type=int, default=250, help="tokens per context")
    p.add_argument("--fragment-rows", type=int, default=65536, help="rounded down to whole contexts")
    p.add_argument("--chunk-rows", type=int, default=8192)
    p.add_argument("--hook", help="hook to read (default: the store's first)")
    p.add_argument("--batch-size", type=int, default=4096)
    p.add_argument("--buffer-rows", type=int, help="actlake shuffle buffer (default: the library's)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--repeat", type=int, default=3, help="repeats of raw/actlake measurements (median shown)")
    p.add_argument("--peer-batches", type=int, help=f"batches timed per peer after its first (default {PEER_BATCHES})")
    p.add_argument("--modes", default="warm,cold")
    p.add_argument("--cold-method", default="auto", choices=["auto", "drop_caches", "fadvise"])
    p.add_argument("--peers", default="saelens,saelens-fp32,mosaic", help=f"comma list of {list(PEERS)}; '' for none")
    p.add_argument("--peer-python", default=str(ROOT / ".venv-bench" / "bin" / "python"))
    p.add_argument("--profile", action="store_true", help="py-spy profile of one warm shuffled actlake epoch")
    p.add_argument("--no-quality", action="store_true")
    p.add_argument("--json", type=Path, help="also write all results here")
    p.add_argument("--quick", action="store_true", help="at most 200k rows, 1 repeat, 5 peer batches")
    args = p.parse_args()
    if args.quick:
        args.rows, args.repeat, args.peer_batches = min(args.rows, 200_000), 1, args.peer_batches or 5

    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    from actlake import open_dataset

    code_at_start = code_state()

    workdir = args.workdir.resolve()
    workdir.mkdir(parents=True, exist_ok=True)
    store = (args.store or workdir / f"store-{args.rows}x{args.dim}-{args.dtype}-c{args.context}").resolve()
    if not store_is_complete(store):
        print(f"writing {args.rows:,} x {args.dim} {args.dtype} rows to {store} ...", file=sys.stderr, flush=True)
        t0 = time.perf_counter()
        write_store(store, args.rows, args.dim, args.context, args.fragment_rows, args.chunk_rows, args.dtype, args.seed)
        print(f"  written in {time.perf_counter() - t0:.0f} s", file=sys.stderr, flush=True)
    ds = open_dataset(str(store))
    args.hook = args.hook or next(iter(ds.hooks))
    fp = fingerprint(ds)
    side = workdir / "peers" / fp
    side.mkdir(parents=True, exist_ok=True)
    plan = make_plan(ds, args.hook)
    plan_path = side / "plan.json"
    plan_path.write_text(json.dumps(plan))
    row_bytes = int(np.prod(plan["shape"])) * np.dtype(plan["storage_dtype"]).itemsize
    n_rows = plan["num_rows"]
    total_bytes = n_rows * row_bytes
    stamp = _dt.datetime.now().strftime("%Y%m%d-%H%M%S")
    resdir = workdir / "results"
    resdir.mkdir(exist_ok=True)
    log = resdir / f"loader-{stamp}.log"
    print(f"store {store}: {n_rows:,} rows x {plan['shape']} {plan['dtype']} = {total_bytes / 1e9:.2f} GB, "
          f"{len(plan['fragments'])} fragments, chunk {plan['chunk_rows']} rows; batch {args.batch_size}",
          file=sys.stderr, flush=True)
    print("indexing rows (context ids, row keys) ...", file=sys.stderr, flush=True)
    idx = build_index(ds, plan, side / "index.npz")
    ctx_counts = np.unique(idx["context_id"], return_counts=True)[1]

    # ---- peers: availability and conversion (one conversion per script, shared by its variants)
    peers = [x.strip() for x in args.peers.split(",") if x.strip()]
    unknown = [x for x in peers if x not in PEERS]
    if unknown:
        raise SystemExit(f"unknown peer(s) {unknown}; known: {list(PEERS)}")
    peer_error: dict[str, str] = {}
    peer_data: dict[str, Path] = {}
    have_py = Path(args.peer_python).exists()
    vers = peer_versions(args.peer_python) if peers and have_py else {}
    for script in sorted({PEERS[x][1] for x in peers}):
        if not have_py:
            peer_error[script] = f"{args.peer_python} missing: run `make bench-venv` (bench/setup_peers.sh)"
            continue
        try:
            extra = ["--context", str(args.context)] if script == "saelens" else []
            peer_data[script] = convert_peer(script, args.peer_python, SCRIPTS[script], plan_path, side / script,
                                             extra, log)
        except Unavailable as e:
            peer_error[script] = f"conversion failed: {e}"
            print(f"  {script} unavailable: {e}", file=sys.stderr, flush=True)

    # ---- cold method
    modes = [m for m in args.modes.split(",") if m]
    cold_method, cold_note = None, ""
    if "cold" in modes:
        if args.cold_method in ("auto", "drop_caches"):
            ok, why = can_drop_caches()
            if ok:
                cold_method = "drop_caches"
            elif args.cold_method == "drop_caches":
                raise SystemExit(f"cannot drop caches: {why}")
            else:
                cold_method, cold_note = "fadvise", f"drop_caches refused ({why})"
        else:
            cold_method = "fadvise"

    def prepare(mode: str, paths: list[Path]) -> None:
        if mode == "warm":
            warm_files(paths)
        else:
            evict(paths, cold_method)

    me = [sys.executable, str(Path(__file__).resolve()), "_measure"]
    base = {"plan": str(plan_path), "store": str(store), "hook": args.hook, "batch_size": args.batch_size,
            "row_bytes": row_bytes, "seed": args.seed, "buffer_rows": args.buffer_rows}
    jobs = [
        ("raw sequential read (readinto)", "raw", {"how": "readinto"}, [store]),
        ("raw sequential read (np.fromfile)", "raw", {"how": "fromfile"}, [store]),
        ("in-RAM perfect permutation (ref)", "ram_perm", {}, [store]),
        (SHUF, "actlake", {"shuffle": True}, [store]),
        ("actlake unshuffled", "actlake", {"shuffle": False}, [store]),
        # the consumer process with torch.set_num_threads(1): no intra-op thread pool in the
        # loader's torch ops (a 2-core machine; see docs/performance.md)
        (SHUF1, "actlake", {"shuffle": True, "torch_threads": 1}, [store]),
        # a training run reads many epochs: the 2nd epoch in the same process (fresh stream, warmed
        # allocator) -- the first one pays one-off costs that a 2 GB store does not amortize
        (SHUF_E2, "actlake", {"shuffle": True, "skip_epochs": 1}, [store]),
    ]
    results: dict[str, dict[str, dict]] = {}
    peer_ids: dict[str, list] = {}
    for mode in modes:
        # repeats interleaved (raw, actlake, raw, actlake, ...) so that other work on the machine
        # hits every loader alike; ratios are also given per repeat pair
        runs: dict[str, list[dict]] = {}
        for r in range(args.repeat):
            for label, kind, extra, paths in jobs:
                if mode == "cold" and (kind == "ram_perm" or extra.get("skip_epochs")):
                    continue  # in RAM / read once already: not a cold measurement
                prepare(mode, paths)
                try:
                    rr = run_json(me + [kind, json.dumps({**base, **extra})], 3600, None, log)
                except Unavailable as e:
                    rr = {"error": str(e)}
                runs.setdefault(label, []).append(rr)
                print(f"[{mode}] {label} #{r + 1}: " + (
                    f"{rr['rows_per_s']:,.0f} rows/s, {rr['mb_per_s']:,.0f} MB/s, {rr['cpu_s_per_gb']:.2f} CPU s/GB, "
                    f"load {rr['loadavg_1m'][0]:.1f}" if "rows_per_s" in rr else rr["error"]), file=sys.stderr, flush=True)
        for label, rs in runs.items():
            results.setdefault(label, {})[mode] = summarize(rs)
        for name in peers:
            label, script, extra = PEERS[name]
            if script in peer_error:
                results.setdefault(label, {})[mode] = {"error": peer_error[script]}
                continue
            data = peer_data[script]
            ids_out = side / f"{name}-ids-{mode}.npy"
            cmd = [args.peer_python, str(SCRIPTS[script]), "read", "--plan", str(plan_path),
                   "--batch-size", str(args.batch_size), "--batches", str(args.peer_batches or PEER_BATCHES[script]),
                   "--keymap", str(side / "index.npz"), "--ids-out", str(ids_out), *extra]
            cmd += ["--cache", str(data), "--context", str(args.context)] if script == "saelens" else ["--mds", str(data)]
            prepare(mode, [data])
            try:
                rr = run_json(cmd, PEER_TIMEOUT, peer_env(), log)
                if rr.get("ids_file"):
                    peer_ids.setdefault(label, list(np.load(rr["ids_file"])))
                print(f"[{mode}] {label}: steady {rr['steady_rows_per_s']:,.0f} rows/s, first batch "
                      f"{rr['first_batch_s']:.1f} s, load {rr['loadavg_1m'][0]:.1f}", file=sys.stderr, flush=True)
            except Unavailable as e:
                rr = {"error": str(e)}
                print(f"[{mode}] {label} unavailable: {e}", file=sys.stderr, flush=True)
            results.setdefault(label, {})[mode] = {**rr, "runs": [rr]}

    profile = None
    if args.profile:
        prepare("warm", [store])
        prof_path = resdir / f"profile-{stamp}.txt"
        try:
            run_json(me + ["actlake", json.dumps({**base, "shuffle": True})], 3600, None, log, profile_to=prof_path)
            profile = summarize_profile(prof_path)
        except Unavailable as e:
            profile = {"error": str(e)}

    qual = [] if args.no_quality else quality_rows(args, ds, idx, peer_ids)
    out = {
        "when": stamp, "command": " ".join(sys.argv), "machine": machine_info(), "code": code_at_start,
        "store": {"path": str(store), "rows": n_rows, "shape": plan["shape"], "dtype": plan["dtype"],
                  "bytes": total_bytes, "fragments": len(plan["fragments"]), "chunk_rows": plan["chunk_rows"],
                  "contexts": int(len(ctx_counts)), "context_len_mean": float(ctx_counts.mean()),
                  "row_key_collisions": int(idx["collisions"])},
        "batch_size": args.batch_size, "buffer_rows": args.buffer_rows, "repeat": args.repeat,
        "peer_batches": args.peer_batches, "cold_method": cold_method, "cold_note": cold_note,
        "peer_versions": vers, "peer_errors": peer_error, "results": results, "quality": qual, "profile": profile,
    }
    if code_state()["client_store_sha1"] != code_at_start["client_store_sha1"]:
        out["code"]["changed_during_run"] = code_state()
    (resdir / f"loader-{stamp}.json").write_text(json.dumps(out, indent=1, default=float))
    if args.json:
        args.json.write_text(json.dumps(out, indent=1, default=float))
    print_report(out)
    print(f"\nresults: {resdir / f'loader-{stamp}.json'}  (subprocess log: {log})")


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "rows_per_s" in r and r["rows_per_s"]]
    if not ok:
        return {"error": runs[-1].get("error", "no result"), "runs": runs}
    med = lambda k: statistics.median([r[k] for r in ok if r.get(k) is not None])  # noqa: E731
    return {"rows_per_s": med("rows_per_s"), "mb_per_s": med("mb_per_s"), "first_batch_s": med("first_batch_s"),
            "seconds": med("seconds"), "rows": ok[0]["rows"], "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "min_rows_per_s": min(r["rows_per_s"] for r in ok), "max_rows_per_s": max(r["rows_per_s"] for r in ok),
            "cpu_s_per_gb": med("cpu_s_per_gb"), "user_s_per_gb": med("user_s_per_gb"),
            "sys_s_per_gb": med("sys_s_per_gb"), "loadavg_1m": med_load(ok), "runs": runs}


def med_load(runs: list[dict]) -> float:
    return statistics.median([x for r in runs for x in r.get("loadavg_1m", [])] or [float("nan")])


def summarize_profile(path: Path, top: int = 25) -> dict:
    """py-spy raw (collapsed) stacks -> share of samples by leaf frame and by frames anywhere."""
    leaf: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack or not cnt.isdigit():
            continue
        c = int(cnt)
        frames = [fr for fr in stack.split(";") if not fr.startswith("thread (")]
        if not frames or any("importlib._bootstrap" in fr for fr in frames):
            continue  # idle thread roots and import time are not the loader's
        total += c
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + c
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + c
    top_of = lambda d: [(k, v / total) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]  # noqa: E731
    return {"file": str(path), "samples": total, "note": "import time excluded", "self": top_of(leaf), "inclusive": top_of(incl)}


def code_state() -> dict:
    """Which actlake code was measured: HEAD plus a digest of client/ and store/ as on disk (the
    loader may be edited between commits)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    h = hashlib.sha1()
    for folder in ("client", "store"):
        for f in sorted((ROOT / folder).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": [ln[3:] for ln in git("status", "--porcelain", "--", "client", "store").splitlines()],
            "client_store_sha1": h.hexdigest()[:12]}


def machine_info() -> dict:
    mem = ""
    try:
        mem = next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split(":")[1].strip()
    except Exception:  # noqa: BLE001
        pass
    cpu = ""
    try:
        cpu = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")).split(":")[1].strip()
    except Exception:  # noqa: BLE001
        pass
    import torch

    return {"cpus": os.cpu_count(), "cpu": cpu, "mem": mem, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "kernel": platform.release()}


# ---- printing -------------------------------------------------------------------------------
def _f(x, fmt="{:,.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def print_report(o: dict) -> None:
    s = o["store"]
    print(f"\n== actlake loader benchmark: {s['rows']:,} rows x {s['shape']} {s['dtype']} "
          f"({s['bytes'] / 1e9:.2f} GB, {s['fragments']} fragments, {s['contexts']:,} contexts of "
          f"~{s['context_len_mean']:.0f} tokens, chunk {s['chunk_rows']}), batch {o['batch_size']}")
    c = o["code"]
    print(f"actlake code: HEAD {c['head']}" + (f" + uncommitted {', '.join(c['modified'])}" if c["modified"] else "")
          + f" (client/+store/ sha1 {c['client_store_sha1']})")
    if c.get("changed_during_run"):
        print(f"WARNING: client/ or store/ changed during the run (now HEAD {c['changed_during_run']['head']}, "
              f"sha1 {c['changed_during_run']['client_store_sha1']}): figures mix two versions")
    print(f"machine: {o['machine']['cpus']} cpus, {o['machine']['mem']}; cold = {o['cold_method']} "
          f"{o['cold_note']}; raw/actlake: median of {o['repeat']} full epochs (interleaved); peers: "
          f"{o['peer_batches'] or PEER_BATCHES} batches after the first (steady rate)")
    hdr = (f"{'loader':42} {'warm rows/s':>12} {'MB/s':>6} {'cold rows/s':>12} {'MB/s':>6} {'1st batch w/c s':>15} "
           f"{'CPU s/GB w/c':>13} {'load w/c':>9} {'RSS MB':>7}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for label, by in o["results"].items():
        cells, firsts, cpus, loads, rss = [], [], [], [], 0.0
        for mode in ("warm", "cold"):
            r = by.get(mode)
            if r is None or "error" in r:
                cells += ["n/a" if r else "", ""]
                firsts.append("")
                cpus.append("")
                loads.append("")
                continue
            rate = rate_of(o, label, mode)
            cells += [_f(rate), _f(rate * s["bytes"] / s["rows"] / 1e6)]
            firsts.append(_f(r.get("first_batch_s"), "{:.2f}"))
            cpus.append(_f(r.get("cpu_s_per_gb_with_workers") or r.get("cpu_s_per_gb"), "{:.2f}"))
            ld = r.get("loadavg_1m")
            loads.append(_f(statistics.median(ld) if isinstance(ld, list) else ld, "{:.1f}"))
            rss = max(rss, r.get("peak_rss_mb") or 0)
        print(f"{label:42} {cells[0]:>12} {cells[1]:>6} {cells[2]:>12} {cells[3]:>6} {'/'.join(firsts):>15} "
              f"{'/'.join(cpus):>13} {'/'.join(loads):>9} {rss:>7,.0f}")
    for label, by in o["results"].items():
        for mode, r in by.items():
            if "error" in r:
                print(f"  {label} [{mode}] unavailable: {r['error']}")
    split = []
    for label in (RAW, SHUF, SHUF1, SHUF_E2, "actlake unshuffled"):
        for mode in ("warm", "cold"):
            r = o["results"].get(label, {}).get(mode) or {}
            if r.get("user_s_per_gb") is not None:
                split.append(f"{label} [{mode}] {r['user_s_per_gb']:.2f}/{r['sys_s_per_gb']:.2f}")
    if split:
        print("CPU s/GB user/sys (sys = kernel page-cache copies and faults):\n  " + "\n  ".join(split))
    print("\nratios of rows/s (ratio of medians; [median of per-repeat pairs]):")
    for mine in (SHUF, SHUF1, SHUF_E2):
        for mode in ("warm", "cold"):
            a = rate_of(o, mine, mode)
            if a is None:
                continue
            parts = []
            refs = [(RAW, 0.8), ("raw sequential read (np.fromfile)", 0.8), ("actlake unshuffled", None),
                    ("in-RAM perfect permutation (ref)", None)] + [(lab, 50) for lab, _, _ in PEERS.values()]
            for ref, tgt in refs:
                r = rate_of(o, ref, mode)
                if not r:
                    continue
                ok = "" if tgt is None else (" ok" if a / r >= tgt else f" MISS, target {tgt}x")
                pr = paired_ratio(o, mine, ref, mode)
                parts.append(f"{ref}: {a / r:.2f}x" + (f" [{pr:.2f}x]" if pr else "") + ok)
            print(f"  {mine} [{mode}] over\n      " + "\n      ".join(parts))
    if o["quality"]:
        print("\nshuffle quality (per batch of %d; 'perfect' = exact expectation for a uniform permutation):" % o["batch_size"])
        h = (f"{'loader':52} {'batches':>7} {'distinct ctx':>12} {'perfect':>9} {'ratio':>6} {'same-ctx pairs':>14} "
             f"{'perfect':>9} {'frags/batch':>11}")
        print(h + "\n" + "-" * len(h))
        for q in o["quality"]:
            if "error" in q:
                print(f"{q['loader']:52} {q['error']}")
                continue
            print(f"{q['loader']:52} {q['batches']:>7} {q['distinct_contexts']:>12,.1f} {q['distinct_contexts_perfect']:>9,.1f} "
                  f"{q['distinct_ratio']:>6.3f} {q['same_context_pairs']:>14,.0f} {q['same_context_pairs_perfect']:>9,.1f} "
                  f"{q.get('fragments_per_batch', float('nan')):>11.1f}")
        for q in o["quality"]:
            if q.get("note"):
                print(f"  {q['loader']}: {q['note']}")
    if o.get("profile") and "self" in o["profile"]:
        print(f"\npy-spy, warm shuffled epoch ({o['profile']['samples']} samples, all threads, imports excluded), "
              "top self time:")
        for k, v in o["profile"]["self"][:15]:
            print(f"  {v * 100:5.1f}%  {k}")
    elif o.get("profile"):
        print(f"\nprofile failed: {o['profile'].get('error')}")
    if o["peer_versions"]:
        print("\npeers venv: " + ", ".join(f"{k} {v}" for k, v in o["peer_versions"].items()))


def paired_ratio(o: dict, a: str, b: str, mode: str):
    ra = o["results"].get(a, {}).get(mode, {}).get("runs") or []
    rb = o["results"].get(b, {}).get(mode, {}).get("runs") or []
    if len(ra) < 2 or len(ra) != len(rb):
        return None
    pairs = [x["rows_per_s"] / y["rows_per_s"] for x, y in zip(ra, rb) if x.get("rows_per_s") and y.get("rows_per_s")]
    return statistics.median(pairs) if pairs else None


def rate_of(o: dict, label: str, mode: str):
    r = o["results"].get(label, {}).get(mode)
    if not r or "error" in r:
        return None
    return r.get("steady_rows_per_s") if label in PEER_LABELS else r.get("rows_per_s")


if __name__ == "__main__":
    main()
