"""Sources and packing: deterministic documents, contexts of the right length, budgets honoured."""
from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from actlake.schemas import ActlakeError, SourceSpec
from actlake.workers.sources import iter_docs, list_images
from actlake.workers.text import pack_contexts

TEXTS = ["alpha beta gamma", "", "delta epsilon", "zeta eta theta iota kappa"]


@pytest.fixture
def tok(tiny_gpt2):
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(tiny_gpt2)


def test_jsonl_and_parquet_give_the_same_documents(tmp_path):
    (tmp_path / "a.jsonl").write_text("\n".join(json.dumps({"text": t, "y": i}) for i, t in enumerate(TEXTS)))
    pq.write_table(pa.table({"text": TEXTS, "y": [str(i) for i in range(4)]}), tmp_path / "a.parquet")
    j = list(iter_docs(SourceSpec.from_string(str(tmp_path / "a.jsonl"))))
    p = list(iter_docs(SourceSpec(type="parquet", path=str(tmp_path / "a.parquet"), label_field="y")))
    assert [d.text for d in j] == [d.text for d in p] == [t for t in TEXTS if t]
    assert [d.doc_id for d in j] == [0, 1, 2]  # empty documents are skipped, ids stay dense
    assert [d.label for d in p] == ["0", "2", "3"]


def test_bad_sources_are_clear(tmp_path):
    (tmp_path / "bad.jsonl").write_text('{"text": "ok"}\nnot json\n')
    with pytest.raises(ActlakeError, match="bad.jsonl:2: not valid JSON"):
        list(iter_docs(SourceSpec(type="jsonl", path=str(tmp_path / "bad.jsonl"))))
    pq.write_table(pa.table({"body": ["x"]}), tmp_path / "b.parquet")
    with pytest.raises(ActlakeError, match="no column 'text'"):
        list(iter_docs(SourceSpec(type="parquet", path=str(tmp_path / "b.parquet"))))
    with pytest.raises(ActlakeError, match="not found"):
        list(iter_docs(SourceSpec(type="text", path=str(tmp_path / "missing"))))
    with pytest.raises(ActlakeError, match="image folder not found"):
        list_images(SourceSpec(type="images", path=str(tmp_path / "nope")))


def test_stdlib_corpus_is_real_and_stable():
    a = [d.text[:50] for _, d in zip(range(5), iter_docs(SourceSpec(type="python-stdlib")))]
    b = [d.text[:50] for _, d in zip(range(5), iter_docs(SourceSpec(type="python-stdlib")))]
    assert a == b and all(a)


@pytest.mark.parametrize("bos", [True, False])
@pytest.mark.parametrize("budget", [None, 50, 64, 70])
def test_packing_cuts_the_stream_into_contexts(tok, text_corpus, bos, budget):
    docs = list(iter_docs(SourceSpec(type="text", path=str(text_corpus))))
    ctxs = list(pack_contexts(docs, tok, 16, bos, budget))
    lens = [len(c.tokens) for c in ctxs]
    assert all(n == 16 for n in lens[:-1]) and 0 < lens[-1] <= 16
    if budget is not None:
        assert sum(lens) <= budget and sum(lens) >= budget - (1 if bos else 0) - 1
    if bos:
        assert all(c.tokens[0] == tok.bos_token_id and c.doc_pos[0] == -1 for c in ctxs)
    body = np.concatenate([c.tokens[1:] if bos else c.tokens for c in ctxs])
    stream = np.concatenate([tok(d.text, add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for d in docs])
    assert np.array_equal(body, stream[: len(body)])  # nothing skipped, nothing repeated
