"""One rule for every source type: null/missing/empty text skipped and counted, non-string text a
SourceError naming file and line/row, binary files skipped with a warning; every document knows
its file and line/row."""
from __future__ import annotations

import json
import os
import shutil

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actlake.schemas import SourceSpec
from actlake.schemas.errors import SourceError
from actlake.workers.sources import SkipCounts, SourceWarning, iter_docs


def _docs(spec: SourceSpec):
    counts = SkipCounts()
    return list(iter_docs(spec, counts)), counts


def test_null_and_missing_text_are_skipped_and_counted(tmp_path):
    rows = [{"text": "first"}, {"text": None}, {"other": 1}, {"text": ""}, {"text": "last"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    with pytest.warns(SourceWarning, match=r"a\.jsonl: skipped 2 document\(s\) whose text is null or missing"):
        docs, counts = _docs(SourceSpec(type="jsonl", path=str(tmp_path / "a.jsonl")))
    assert [d.text for d in docs] == ["first", "last"]  # never the document "None"
    assert (counts.null, counts.empty) == (2, 1)
    assert [(d.source, d.index) for d in docs] == [(str(tmp_path / "a.jsonl"), 0), (str(tmp_path / "a.jsonl"), 4)]
    pq.write_table(pa.table({"text": ["first", None, "", "last"]}), tmp_path / "a.parquet")
    with pytest.warns(SourceWarning, match="skipped 1 document"):
        docs, counts = _docs(SourceSpec(type="parquet", path=str(tmp_path / "a.parquet")))
    assert [d.text for d in docs] == ["first", "last"] and (counts.null, counts.empty) == (1, 1)
    assert [d.index for d in docs] == [0, 3]


def test_shard_units_warn_with_their_count_of_null_texts(tmp_path):
    """The per-shard plan (cluster jobs) applies the same rule: nulls skipped, counted in a warning."""
    from actlake.workers.plan import plan_shards, shard_docs

    rows = [{"text": "first"}, {"text": None}, {"other": 1}, {"text": "last"}]
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    pq.write_table(pa.table({"text": ["x", None, None, "y"]}), tmp_path / "b.parquet")
    for name, nulls in (("a.jsonl", 2), ("b.parquet", 2)):
        spec = SourceSpec.from_string(str(tmp_path / name))
        units = list(plan_shards(spec, fragment_tokens=4096))
        with pytest.warns(SourceWarning, match=f"skipped {nulls} document"):
            docs = [d for u in units for d in shard_docs(spec, u)]
        assert len(docs) == 2


@pytest.mark.parametrize("value", [42, 1.5, True, ["a"], {"a": 1}])
def test_non_string_jsonl_text_names_file_and_line(tmp_path, value):
    (tmp_path / "b.jsonl").write_text(json.dumps({"text": "ok"}) + "\n" + json.dumps({"text": value}) + "\n")
    with pytest.raises(SourceError, match=r"b\.jsonl:2"):
        list(iter_docs(SourceSpec(type="jsonl", path=str(tmp_path / "b.jsonl"))))


def test_non_string_parquet_column_is_a_source_error(tmp_path):
    pq.write_table(pa.table({"text": np.arange(5)}), tmp_path / "ints.parquet")
    with pytest.raises(SourceError, match=r"ints\.parquet.*int64"):
        list(iter_docs(SourceSpec(type="parquet", path=str(tmp_path / "ints.parquet"))))
    (tmp_path / "broken.parquet").write_bytes(b"PAR1 not really")
    with pytest.raises(SourceError, match="broken.parquet"):
        list(iter_docs(SourceSpec(type="parquet", path=str(tmp_path / "broken.parquet"))))


def test_binary_files_in_a_text_folder_are_skipped_with_a_warning(tmp_path):
    (tmp_path / "a.txt").write_text("a real document\n")
    shutil.copy(shutil.which("ls") or "/bin/ls", tmp_path / "ls")  # an ELF executable
    (tmp_path / "random.txt").write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    (tmp_path / "nul.txt").write_bytes(b"looks like text\x00but has NUL bytes")
    (tmp_path / "z.txt").write_text("caf\u00e9 \u2014 another one\n")
    counts = SkipCounts()
    with pytest.warns(SourceWarning, match="3 file"):
        docs = list(iter_docs(SourceSpec(type="text", path=str(tmp_path)), counts))
    assert [os.path.basename(d.source) for d in docs] == ["a.txt", "z.txt"]
    assert [d.doc_id for d in docs] == [0, 1] and docs[1].text.startswith("caf\u00e9")
    assert counts.undecodable == 3 and {os.path.basename(f) for f in counts.undecodable_files} == {"ls", "random.txt", "nul.txt"}


def test_text_file_document_knows_its_file(tmp_path):
    (tmp_path / "one.txt").write_text("hello")
    (doc,) = iter_docs(SourceSpec(type="text", path=str(tmp_path / "one.txt")))
    assert doc.source == str(tmp_path / "one.txt") and doc.index is None
