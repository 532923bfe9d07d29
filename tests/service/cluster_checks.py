"""Shared checks for cluster tests: every source token exactly once, through provenance."""
from __future__ import annotations

from pathlib import Path

import numpy as np

import actlake
from actlake.store.fs import open_store
from actlake.store.verify import verify_store
from actlake.workers.plan import DOC_BITS


def expected_shard_pairs(model_dir: Path, corpus: Path) -> list[tuple[int, int]]:
    """(doc_id, doc_pos) of every token of a text-file corpus under plan: shards (one file per unit)."""
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(model_dir)
    docs = sorted(p for p in corpus.iterdir() if p.is_file())
    return [(i << DOC_BITS, p) for i, d in enumerate(docs)
            for p in range(len(tok(d.read_text(), add_special_tokens=False)["input_ids"]) + 1)]


def assert_exactly_once(out: Path, expected: list[tuple[int, int]]) -> actlake.ActivationDataset:
    """The store is complete, verifies, and holds each expected (doc, position) exactly once."""
    ds = actlake.open_dataset(str(out))
    assert ds.manifest.status == "complete"
    prov = ds.provenance(np.arange(ds.num_rows)).to_pydict()
    pairs = sorted(zip(prov["doc_id"], prov["doc_pos"]))
    assert len(pairs) == len(set(pairs)), "duplicated tokens"
    assert pairs == sorted(expected), "missing or extra tokens"
    rep = verify_store(open_store(str(out)))
    assert rep.ok and rep.complete, rep.errors
    return ds
