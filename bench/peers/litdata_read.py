"""litdata peer (runs in .venv-bench): ``optimize`` a store into litdata chunks, then time a
``StreamingDataset`` over a copy of them on S3 (``shuffle=True``, litdata's default shuffle) behind a
``StreamingDataLoader`` with 2 workers.

    python bench/peers/litdata_read.py convert --plan PLAN --out DIR
    python bench/peers/litdata_read.py read --plan PLAN --remote s3://BUCKET/PREFIX --cache DIR \\
        --endpoint URL --keymap KEYS --ids-out IDS.npy --batches N

One sample = one token row ``{"act": ndarray[d]}`` (litdata's numpy serializer), written in
extraction order (context, position) with ``chunk_bytes="64MB"`` (litdata's documented default
size), no compression.  The S3 endpoint and keys go in ``storage_options`` (litdata passes them to
``boto3.client("s3", **storage_options)``); credentials come from ``AWS_ACCESS_KEY_ID`` /
``AWS_SECRET_ACCESS_KEY``.  The cache directory must be empty, so every chunk is fetched from S3."""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import numpy as np  # noqa: E402

from common import (KEY_COLS, KeyMap, Meter, context_order, emit, load_plan, peer_cli,  # noqa: E402
                    read_fragment_provenance, read_fragment_rows)

_PLAN: dict = {}


def _rows_of(frag_index: int):
    """Every row of one fragment, in extraction order (a generator: litdata writes each yielded row)."""
    frag = _PLAN["fragments"][frag_index]
    d = int(np.prod(_PLAN["shape"]))
    rows = read_fragment_rows(_PLAN, frag).reshape(frag["rows"], d)
    for r in rows[context_order(read_fragment_provenance(frag))]:
        yield {"act": r}


def convert(args) -> None:
    import litdata

    _PLAN.update(load_plan(args.plan))
    t0 = time.perf_counter()
    litdata.optimize(fn=_rows_of, inputs=list(range(len(_PLAN["fragments"]))), output_dir=args.out,
                     chunk_bytes="64MB", num_workers=1, mode="overwrite", verbose=False, start_method="fork")
    emit({"rows": _PLAN["num_rows"], "seconds": time.perf_counter() - t0, "version": litdata.__version__})


def read(args) -> None:
    import litdata
    from litdata.streaming.resolver import Dir

    if args.endpoint.startswith("http://"):
        # litdata fetches chunks with obstore, whose client refuses plain-http endpoints unless
        # allow_http is set, and litdata does not set it for S3-compatible endpoints (a loopback
        # server has no TLS); the one change made to the peer, read by every download at call time
        import litdata.streaming.downloader as dl

        if hasattr(dl, "_OBSTORE_CLIENT_OPTIONS"):
            dl._OBSTORE_CLIENT_OPTIONS = {**dl._OBSTORE_CLIENT_OPTIONS, "allow_http": True}
    plan = load_plan(args.plan)
    d = int(np.prod(plan["shape"]))
    m = Meter(d * np.dtype(plan["storage_dtype"]).itemsize)
    opts = {"endpoint_url": args.endpoint, "aws_access_key_id": os.environ["AWS_ACCESS_KEY_ID"],
            "aws_secret_access_key": os.environ["AWS_SECRET_ACCESS_KEY"]}
    ds = litdata.StreamingDataset(input_dir=Dir(path=args.cache, url=args.remote), shuffle=True, seed=args.seed,
                                  storage_options=opts)
    dl = litdata.StreamingDataLoader(ds, batch_size=args.batch_size, num_workers=args.workers)
    kept = []
    for i, b in enumerate(dl):
        t = b["act"]
        m.add(int(t.shape[0]))
        kept.append(t[:, :KEY_COLS].clone())
        if i >= args.batches:
            break
    res = m.result(loader="litdata-s3", version=litdata.__version__, config={"workers": args.workers, "shuffle": True})
    del dl
    import gc
    import resource

    gc.collect()
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    res["workers_cpu_s"] = ru.ru_utime + ru.ru_stime
    if args.keymap:
        km = KeyMap(args.keymap)
        ids = np.stack([km.row_ids_of(t) for t in kept if len(t) == args.batch_size])
        np.save(args.ids_out, ids)
        res["ids_file"], res["unmatched_rows"] = args.ids_out, int((ids < 0).sum())
    emit(res)


def main() -> None:
    def read_args(r) -> None:
        r.add_argument("--remote", required=True, help="s3://bucket/prefix of the optimized copy")
        r.add_argument("--cache", required=True, help="an empty local cache directory")
        r.add_argument("--endpoint", required=True, help="S3 endpoint URL")
        r.add_argument("--workers", type=int, default=2)
        r.add_argument("--seed", type=int, default=42)

    peer_cli(__doc__, convert, read, lambda c: None, read_args)


if __name__ == "__main__":
    main()
