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
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))
from common import RESULT_MARK, Meter, can_drop_caches, emit, evict, load_plan, warm_files  # noqa: E402
from loader_data import build_index, make_plan, store_is_complete, write_store  # noqa: E402
from loader_quality import quality_rows  # noqa: E402
from loader_report import (PEER_BATCHES, PEERS, SHUF, SHUF1, SHUF_E2, SHUF_NOVERIFY, code_state,  # noqa: E402
                           machine_info,
                           print_report, summarize, summarize_profile)

PEER_TIMEOUT = 1800
SCRIPTS = {"saelens": BENCH / "peers" / "saelens_read.py", "mosaic": BENCH / "peers" / "mosaic_read.py"}


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
    elif o["how"] == "read":
        for f in plan["fragments"]:
            left = f["rows"]
            for p in f["chunks"]:
                with open(p, "rb", buffering=0) as fh:
                    nbytes += len(fh.read())
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

    import actlake.client.batches  # noqa: F401  (`import actlake` loads the loader lazily: imports stay off the clock)
    from actlake import open_dataset

    if o.get("torch_threads"):
        torch.set_num_threads(o["torch_threads"])
    kw = {"buffer_rows": o["buffer_rows"]} if o.get("buffer_rows") else {}
    h = o["hook"]
    skip = int(o.get("skip_epochs", 0))
    if skip:  # epochs read untimed first in this process (allocator and thread pools warmed up)
        ds = open_dataset(o["store"], verify_reads=o.get("verify_reads", True))
        for e in range(skip):
            for _ in ds.batches(o["batch_size"], hooks=[h], shuffle=o["shuffle"], seed=o.get("seed", 0), epoch=e, **kw):
                pass
    m = Meter(o["row_bytes"])
    if not skip:
        ds = open_dataset(o["store"], verify_reads=o.get("verify_reads", True))
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
        ("raw sequential read (f.read)", "raw", {"how": "read"}, [store]),
        ("in-RAM perfect permutation (ref)", "ram_perm", {}, [store]),
        (SHUF, "actlake", {"shuffle": True}, [store]),
        # reads check every chunk's CRC-32C once per opened dataset by default (issue 7 A13)
        (SHUF_NOVERIFY, "actlake", {"shuffle": True, "verify_reads": False}, [store]),
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


if __name__ == "__main__":
    main()
