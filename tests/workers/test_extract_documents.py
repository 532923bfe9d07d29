"""End to end through the CLI on real Ray: packing flags reach the manifest, every row leads back to
its input file and line (``ds.documents``), the tokenizer named in the manifest loads offline, and
recorded sizes equal what ``verify`` reads and what the disk holds."""
from __future__ import annotations

import json
import os

import numpy as np
import pytest
from typer.testing import CliRunner

import actlake
from actlake.cli import app
from actlake.schemas.errors import RowIdError
from actlake.store import layout
from actlake.store.fs import open_store
from actlake.store.verify import committed_sizes, verify_store

TEXTS = ["the first document talks about sorting lists", "a second one about heaps and queues <|endoftext|> <eos>",
         "third: strings, bytes and the keyword module", "fourth document on shell quoting"]


def test_documents_tokenizer_and_sizes(ray_local, tmp_path, tiny_gpt2):
    src = tmp_path / "docs.jsonl"
    lines = []
    for i, t in enumerate(TEXTS * 6):
        lines.append(json.dumps({"text": t + f" copy {i}", "topic": f"t{i % 3}"}))
        if i == 2:
            lines.append(json.dumps({"text": None}))  # skipped, and line numbers stay those of the file
    src.write_text("\n".join(lines) + "\n")
    job = tmp_path / "job.yaml"
    job.write_text(f"data: {{type: jsonl, path: {src}, label_field: topic}}\n")
    out = tmp_path / "ds"
    res = CliRunner().invoke(app, [
        "extract", "--config", str(job), "--model", str(tiny_gpt2), "--hooks", "transformer.h.1", "--out", str(out),
        "--context-len", "16", "--fragment-tokens", "64", "--chunk-rows", "40", "--dtype", "fp32",
        "--no-prepend-bos", "--drop-tokens", "none", "--nonfinite", "warn", "--no-progress"])
    assert res.exit_code == 0, res.output
    ds = actlake.open_dataset(str(out))
    m = ds.manifest
    assert m.job.prepend_bos is False and m.job.drop_tokens == [] and m.job.nonfinite == "warn"
    packing = m.tokenizer.packing
    assert packing is not None and not packing.prepend_bos and packing.drop_tokens == []

    # every row leads back to its file and line
    prov = ds.provenance(np.arange(ds.num_rows))
    doc_ids = prov.column("doc_id").to_numpy()
    table = ds.documents(doc_ids)
    assert table.column_names == ["doc_id", "source", "index", "label"]
    assert table.column("doc_id").to_numpy().tolist() == doc_ids.tolist()
    file_lines = src.read_text().splitlines()
    for d in np.unique(doc_ids):
        row = ds.documents([d]).to_pylist()[0]
        assert row["source"] == str(src)
        rec = json.loads(file_lines[row["index"]])
        assert rec["topic"] == row["label"] and rec["text"] is not None
        toks = prov.filter(prov.column("doc_id").to_numpy() == d)
        # the stored tokens of this doc are the tokens of that line's text
        tok_ids = toks.column("token_id").to_numpy()[np.argsort(toks.column("doc_pos").to_numpy())]
        from transformers import AutoTokenizer

        tok = AutoTokenizer.from_pretrained(m.tokenizer.name)  # loads offline from the manifest's name
        want = tok(rec["text"], add_special_tokens=False, split_special_tokens=True)["input_ids"] + [tok.eos_token_id]
        assert tok_ids.tolist() == want[: len(tok_ids)]
    with pytest.raises(RowIdError):
        ds.documents([10_000])

    # sizes: recorded in the commits == verify == bytes on disk
    frag_bytes = sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(out / layout.FRAGMENTS) for f in fs
                     if any(d.startswith(str(out / r.path)) for r in ds.snapshot.fragments))
    total, per_hook = committed_sizes(ds.snapshot, m.hooks)
    rep = verify_store(open_store(str(out)))
    assert rep.ok and rep.bytes == total == frag_bytes and rep.hook_bytes == per_hook
    assert per_hook["transformer.h.1"] < ds.num_rows * 64 * 4 * 1.2  # no padded chunks
    assert all(f.nonfinite == {} for f in ds.snapshot.fragments)
