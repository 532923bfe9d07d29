#!/usr/bin/env python
"""Digests of what the public read API yields (batches, resume states, take, sample, provenance,
errors) for many stream settings, to prove a refactor changes nothing: run it under two trees and
compare the JSON files.

    PYTHONPATH=/tmp/old .venv/bin/python bench/api_digest.py /tmp/old.json   # another checkout first
    .venv/bin/python bench/api_digest.py /tmp/new.json && cmp /tmp/old.json /tmp/new.json

(``/tmp/old``: ``git archive OLD | tar -x -C /tmp/old`` plus links ``actlake/{client,store,...} ->
../{client,store,...}``; see bench/loader_cpu.py.)  Stores are written once under ``--stores``."""
import hashlib
import json
import os
import sys
import warnings

import numpy as np

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))
from stores import make_store  # noqa: E402

import actlake  # noqa: E402

warnings.simplefilter("ignore")
root = sys.argv[2] if len(sys.argv) > 2 else "/tmp/actlake-api-digest-stores"
stores = {}
for name, kw in {"plain": {}, "f16z": {"dtype": "float16", "codec": "zstd"}}.items():
    p = f"{root}/{name}"
    if not os.path.exists(p):
        make_store(p, fragments=(300, 257, 64, 1, 500), chunk_rows=32, **kw)
    stores[name] = p


def digest(batches):
    h = hashlib.sha256()
    n = 0
    for b in batches:
        for k in sorted(b):
            h.update(k.encode())
            h.update(b[k].contiguous().view(-1).numpy().view(np.uint8).tobytes())
        n += 1
    return f"{n}:{h.hexdigest()[:16]}"


out = {}
cfgs = [dict(batch_size=64), dict(batch_size=64, seed=3, epoch=2, with_provenance=True),
        dict(batch_size=50, rank=1, world_size=3, drop_last=False, with_provenance=True),
        dict(batch_size=100, shuffle=False, drop_last=False, with_provenance=True),
        dict(batch_size=32, block_rows=16, buffer_rows=256, with_provenance=True),
        dict(batch_size=40, filter={"min_position": 2, "exclude_token_ids": [5, 7]}, with_provenance=True),
        dict(batch_size=40, rank=0, world_size=2, filter={"max_position": 6}, with_provenance=True, drop_last=False),
        dict(batch_size=64, prefetch=0, prefetch_batches=1, with_provenance=True)]
for sname, uri in stores.items():
    for verify in (True, False):
        ds = actlake.open_dataset(uri, verify_reads=verify)
        for i, cfg in enumerate(cfgs):
            for direct in (None, False):
                s = ds.batches(**cfg)
                if direct is False:
                    s._direct = False
                key = f"{sname}/v{int(verify)}/{i}/{'auto' if direct is None else 'staged'}"
                out[key] = digest(s)
                out[key + "/state"] = json.dumps(s.state_dict(), sort_keys=True, default=str)
                s2 = ds.batches(**cfg)
                s2._direct = s._direct
                st = {**s2.state_dict(), "step": len(s2) // 2}
                s2.load_state_dict(st)
                out[key + "/resumed"] = digest(s2)
                # abandon mid-way, then a fresh stream on the same dataset (warm buffers reused)
                it = iter(ds.batches(**cfg))
                next(it, None)
                del it
                out[key + "/after-abandon"] = digest(ds.batches(**cfg))
        ids = np.array([5, 0, 600, 33, 33, 1000, 7])
        out[f"{sname}/v{int(verify)}/take"] = digest([ds.take(ids)])
        out[f"{sname}/v{int(verify)}/sample"] = digest([ds.sample(50, seed=2)])
        out[f"{sname}/v{int(verify)}/samplef"] = digest([ds.sample(50, seed=2, filter={"min_position": 3})])
        prov = str(ds.provenance(ids).to_pydict()).encode()
        out[f"{sname}/v{int(verify)}/prov"] = hashlib.sha256(prov).hexdigest()[:16]
        out[f"{sname}/v{int(verify)}/prov0"] = str(ds.provenance([]).schema)
        for bad in ([-1], [1.5], "x"):
            try:
                ds.take(bad)
            except Exception as e:
                out[f"{sname}/v{int(verify)}/err{bad}"] = f"{type(e).__name__}: {e}"
        try:
            ds.batches(8, hooks=["nope"])
        except Exception as e:
            out[f"{sname}/v{int(verify)}/errhook"] = f"{type(e).__name__}: {e}"
        s = ds.batches(64)
        try:
            s.load_state_dict({**s.state_dict(), "seed": 9})
        except Exception as e:
            out[f"{sname}/v{int(verify)}/errstate"] = f"{type(e).__name__}: {e}"
        out[f"{sname}/v{int(verify)}/repr"] = repr(ds).replace(uri, "URI")
json.dump(out, open(sys.argv[1], "w"), indent=1, sort_keys=True)
print(len(out), "entries; actlake from", os.path.dirname(actlake.__file__))
