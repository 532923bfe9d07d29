"""Shard plans: byte ranges / row groups cover every document exactly once, ids are unique and stable,
and the plan reads no document."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actlake.schemas.errors import SourceError
from actlake.schemas.sources import SourceSpec
from actlake.workers.plan import DOC_BITS, plan_shards, shard_docs


def _docs(spec, units):
    return [d for u in units for d in shard_docs(spec, u)]


@pytest.mark.parametrize("target_tokens", [1, 7, 50, 10_000])
def test_jsonl_byte_ranges_cover_every_line_once(tmp_path, target_tokens):
    lines = [{"text": "x" * (i % 37) + f" doc {i}", "y": i % 3} for i in range(400)]
    lines.insert(17, {"text": ""})  # empty documents are skipped, not numbered
    body = "\n".join(json.dumps(r) for r in lines) + "\n\n"
    (tmp_path / "a.jsonl").write_text(body)
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "last"}))  # no trailing newline
    spec = SourceSpec(type="jsonl", path=str(tmp_path / "*.jsonl"), label_field="y")
    units = list(plan_shards(spec, target_tokens))
    assert [u.index for u in units] == list(range(len(units)))
    assert list(plan_shards(spec, target_tokens)) == units  # deterministic
    docs = _docs(spec, units)
    assert [d.text for d in docs] == [r["text"] for r in lines if r["text"]] + ["last"]
    assert len({d.doc_id for d in docs}) == len(docs)
    assert all(d.doc_id >> DOC_BITS == u.index for u in units for d in shard_docs(spec, u))
    assert docs[0].label == "0" and docs[-1].label is None
    if hasattr(docs[0], "source"):  # Docs that record their origin: file and 0-based line
        assert [d.index for d in docs] == [i for i, r in enumerate(lines) if r["text"]] + [0]
        assert {d.source for d in docs} == {str(tmp_path / "a.jsonl"), str(tmp_path / "b.jsonl")}


def test_parquet_row_groups_and_text_files(tmp_path, text_corpus):
    t = pa.table({"text": [f"row {i}" for i in range(100)]})
    pq.write_table(t, tmp_path / "p.parquet", row_group_size=10)
    spec = SourceSpec(type="parquet", path=str(tmp_path / "p.parquet"))
    units = list(plan_shards(spec, 5))
    assert len(units) == 10 and all(u.kind == "rowgroup" for u in units)
    assert [d.text for d in _docs(spec, units)] == t.column("text").to_pylist()
    spec = SourceSpec(type="text", path=str(text_corpus))
    units = list(plan_shards(spec, 64))
    assert len(units) == len(list(text_corpus.iterdir())) and all(u.kind == "file" for u in units)
    assert [d.doc_id for d in _docs(spec, units)] == [u.index << DOC_BITS for u in units]


def test_bad_lines_and_image_sources_raise_typed_errors(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    spec = SourceSpec(type="jsonl", path=str(tmp_path / "bad.jsonl"))
    with pytest.raises(SourceError):
        _docs(spec, plan_shards(spec, 1000))
    with pytest.raises(SourceError):
        list(plan_shards(SourceSpec(type="images", path=str(tmp_path)), 10))
