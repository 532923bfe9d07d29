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
    group_bytes = pq.ParquetFile(tmp_path / "p.parquet").metadata.row_group(0).total_byte_size
    units = list(plan_shards(spec, max(1, group_bytes // 8)))  # target = group/2: one group per unit
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


def test_large_parquet_row_groups_are_split_into_row_slices(tmp_path):
    """A row group far larger than a unit (pyarrow's default is 1 Mi rows per group) is cut into row
    slices read batch by batch, so no unit holds a whole large group; small groups around it still
    form runs; every row comes once, in order, with its row number and label."""
    from actlake.workers.plan import SPLIT_ROW_GROUP

    texts = [f"document number {i} " + "word " * (i % 7) for i in range(9000)]
    labels = [None if i % 5 == 0 else f"l{i % 3}" for i in range(9000)]
    t = pa.table({"text": texts, "label": labels})
    with pq.ParquetWriter(tmp_path / "p.parquet", t.schema) as w:
        w.write_table(t.slice(0, 40), row_group_size=40)       # small group
        w.write_table(t.slice(40, 8920), row_group_size=8920)  # one large group
        w.write_table(t.slice(8960, 40), row_group_size=40)    # small group
    md = pq.ParquetFile(tmp_path / "p.parquet").metadata
    big = md.row_group(1).total_byte_size
    fragment_tokens = int(big / 4 / 10)  # target = big / 10 bytes: the big group is split in ~10
    assert big > SPLIT_ROW_GROUP * fragment_tokens * 4
    spec = SourceSpec(type="parquet", path=str(tmp_path / "p.parquet"), label_field="label")
    units = list(plan_shards(spec, fragment_tokens))
    kinds = [u.kind for u in units]
    assert kinds[0] == "rowgroup" and kinds[-1] == "rowgroup" and 8 <= kinds.count("rows") <= 12
    rows = [u for u in units if u.kind == "rows"]
    assert rows[0].start == 40 and rows[-1].stop == 8960
    assert all(a.stop == b.start for a, b in zip(rows, rows[1:], strict=False))
    docs = _docs(spec, units)
    assert [d.text for d in docs] == texts
    if hasattr(docs[0], "index"):
        assert [d.index for d in docs] == list(range(9000))
    assert [d.label for d in docs] == labels
    assert len({d.doc_id for d in docs}) == 9000


@pytest.mark.filterwarnings("ignore:.*null or missing")
def test_jsonl_line_numbers_counted_once_per_file(tmp_path):
    """The coordinator numbers each byte range's first line (LineNumbers: one pass per file when the
    ranges come in order, a recount when one comes back out of order); documents get the same 0-based
    line numbers as when each worker counts the lines before its range, for ranges that start on a
    line, inside a line, and inside one long line (no line starts there: no documents)."""
    import json

    from actlake.workers.plan import LineNumbers

    lines = [{"text": ("x" * (i * 37 % 300)) or None} for i in range(200)] + [{"text": "y" * 5000}, {"text": "end"}]
    (tmp_path / "a.jsonl").write_text("".join(json.dumps(r) + "\n" for r in lines))
    spec = SourceSpec(type="jsonl", path=str(tmp_path / "a.jsonl"))
    want = [i for i, r in enumerate(lines) if r["text"]]
    for target_tokens in (64, 100, 257):
        units = list(plan_shards(spec, target_tokens))
        numbers = LineNumbers()
        numbered = [numbers.number(u) for u in units]
        assert all(u.line0 >= 0 for u in numbered) and all(u.line0 == -1 for u in units)
        assert numbers.number(units[1]).line0 == numbered[1].line0  # out of order: counted again
        counted = [d.index for u in units for d in shard_docs(spec, u)]
        planned = [d.index for u in numbered for d in shard_docs(spec, u)]
        assert planned == counted == want
        assert any(not list(shard_docs(spec, u)) for u in units)  # ranges inside the long line
