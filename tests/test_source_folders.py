"""A folder (or glob) given as ``--data`` is read in the format of its files, never as raw text of JSON.

A folder of .jsonl files was once read as plain text: the model saw JSON syntax and escapes, silently."""
from __future__ import annotations

import json

import pyarrow as pa
import pyarrow.feather as feather
import pyarrow.parquet as pq
import pytest

from actlake.schemas import SourceSpec
from actlake.schemas.errors import JobSpecError
from actlake.schemas.job import parse_job
from actlake.workers.sources import iter_docs

TEXTS = ["日本語のテキストも少し。", "alpha beta gamma", "delta epsilon"]


def _write(d, fmt: str) -> None:
    d.mkdir()
    if fmt == "jsonl":
        (d / "a.jsonl").write_text("\n".join(json.dumps({"text": t}) for t in TEXTS[:2]) + "\n")
        (d / "b.jsonl").write_text(json.dumps({"text": TEXTS[2]}) + "\n")
    elif fmt == "parquet":
        pq.write_table(pa.table({"text": TEXTS}), d / "a.parquet")
    else:
        feather.write_feather(pa.table({"text": TEXTS}), str(d / "a.arrow"))


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "arrow"])
def test_folder_of_structured_files_reads_their_text_field(tmp_path, fmt):
    d = tmp_path / fmt
    _write(d, fmt)
    for given in (str(d), str(d) + "/", str(d / "*")):
        spec = SourceSpec.from_string(given)
        assert spec.type == fmt, given
        assert [doc.text for doc in iter_docs(spec)] == TEXTS


def test_folder_of_plain_text_stays_text(tmp_path):
    (tmp_path / "a.txt").write_text("one")
    (tmp_path / "b.md").write_text("two")
    spec = SourceSpec.from_string(str(tmp_path))
    assert spec.type == "text" and [d.text for d in iter_docs(spec)] == ["one", "two"]


def test_mixed_folder_is_refused_naming_both_formats(tmp_path):
    _write(tmp_path / "m", "jsonl")
    (tmp_path / "m" / "notes.txt").write_text("plain")
    with pytest.raises(JobSpecError) as e:
        parse_job({"model": "m", "hooks": ["h"], "data": str(tmp_path / "m"), "out": str(tmp_path / "o")})
    msg = str(e.value)
    assert "mixes formats" in msg and "jsonl" in msg and "text" in msg
    # an explicit type is honoured: every file read as plain text
    spec = SourceSpec(type="text", path=str(tmp_path / "m"))
    assert len(list(iter_docs(spec))) == 3
