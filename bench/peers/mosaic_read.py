"""MosaicML streaming peer (runs in .venv-bench): convert a store to MDS, then time a
``StreamingDataset`` (py1e shuffle) behind a torch ``DataLoader`` with 2 workers.

    python bench/peers/mosaic_read.py convert --plan PLAN --out DIR
    python bench/peers/mosaic_read.py read --mds DIR --plan PLAN --keymap KEYS --batches 20
    python bench/peers/mosaic_read.py read --mds EMPTY_CACHE --remote s3://BUCKET/PREFIX ...   (bench/s3.py)

One MDS sample = one token row ``{"act": ndarray:<dtype>:<d>}`` (the natural layout for SAE
training), written in extraction order (context, position) with MDSWriter defaults (no compression,
64 MB shards).  ``streaming/__init__`` imports ``streaming.vision`` and so torchvision, whose PyPI
wheel is a CUDA build that cannot load against the CPU torch; setup_peers.sh uninstalls it and this
script imports ``streaming.base`` (which has everything used here) without running the package
``__init__``."""
from __future__ import annotations

import importlib.util
import sys
import time
import types
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from common import (KEY_COLS, peer_cli, KeyMap, Meter, context_order, emit, load_plan,  # noqa: E402
                    read_fragment_provenance, read_fragment_rows)


def import_streaming():
    """``streaming.base`` without ``streaming/__init__`` (which needs a loadable torchvision)."""
    if "streaming" not in sys.modules:
        spec = importlib.util.find_spec("streaming")
        if spec is None:
            raise ImportError("mosaicml-streaming is not installed")
        pkg = types.ModuleType("streaming")
        pkg.__path__ = list(spec.submodule_search_locations)
        pkg.__spec__ = spec
        sys.modules["streaming"] = pkg
    import streaming.base as base
    from streaming._version import __version__

    return base, __version__


def convert(args) -> None:
    base, _ = import_streaming()
    plan = load_plan(args.plan)
    d = int(np.prod(plan["shape"]))
    enc = f"ndarray:{np.dtype(plan['storage_dtype']).name}:{d}"
    t0 = time.perf_counter()
    n = 0
    with base.MDSWriter(out=args.out, columns={"act": enc}, compression=None) as w:
        for frag in plan["fragments"]:
            rows = read_fragment_rows(plan, frag).reshape(frag["rows"], d)
            rows = rows[context_order(read_fragment_provenance(frag))]
            for r in rows:
                w.write({"act": r})
            n += len(rows)
    emit({"rows": n, "encoding": enc, "seconds": time.perf_counter() - t0})


def read(args) -> None:
    import torch
    from torch.utils.data import DataLoader

    base, version = import_streaming()
    from streaming.base.util import clean_stale_shared_memory

    clean_stale_shared_memory()
    plan = load_plan(args.plan)
    d = int(np.prod(plan["shape"]))
    m = Meter(d * np.dtype(plan["storage_dtype"]).itemsize)
    # --remote: shards are downloaded from there (S3: boto3, endpoint from S3_ENDPOINT_URL) into the
    # local cache --mds, which must then be empty (bench/s3.py)
    ds = base.StreamingDataset(local=args.mds, remote=args.remote, shuffle=True, shuffle_algo=args.shuffle_algo,
                               shuffle_seed=args.seed, batch_size=args.batch_size)
    dl = DataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    kept = []
    for i, b in enumerate(dl):
        t = b["act"]
        m.add(int(t.shape[0]))
        kept.append(t[:, :KEY_COLS].clone())  # enough to identify the row; keeps RSS honest
        if i >= args.batches:  # +1: the first batch (worker start, shuffle plan) is reported separately
            break
    res = m.result(loader="mosaic-s3" if args.remote else "mosaic", dtype=str(kept[0].dtype), version=version,
                   config={"shuffle_algo": args.shuffle_algo, "workers": args.workers,
                           "shuffle_block_size": ds.shuffle_block_size, "num_canonical_nodes": ds.num_canonical_nodes})
    del dl  # joins the workers, so their CPU time shows in RUSAGE_CHILDREN
    import gc
    import resource

    gc.collect()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["workers_cpu_s"] = ru.ru_utime + ru.ru_stime
    res["cpu_s_per_gb_with_workers"] = (res["cpu_s"] + res["workers_cpu_s"]) / (m.rows * m.row_bytes / 1e9)
    if args.keymap:
        km = KeyMap(args.keymap)
        ids = np.stack([km.row_ids_of(t) for t in kept if len(t) == args.batch_size])
        np.save(args.ids_out, ids)
        res["ids_file"], res["unmatched_rows"] = args.ids_out, int((ids < 0).sum())
    emit(res)
    torch.cuda.is_available()  # keep torch imported until workers are gone


def main() -> None:
    def read_args(r) -> None:
        r.add_argument("--mds", required=True, help="local MDS directory (with --remote: an empty cache directory)")
        r.add_argument("--remote", default=None, help="remote MDS directory, e.g. s3://bucket/prefix")
        r.add_argument("--workers", type=int, default=2)
        r.add_argument("--shuffle-algo", default="py1e")
        r.add_argument("--seed", type=int, default=9176)

    peer_cli(__doc__, convert, read, lambda c: None, read_args)


if __name__ == "__main__":
    main()
