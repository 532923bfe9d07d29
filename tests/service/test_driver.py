"""The elastic driver on an embedded cluster: shard plan, exactly-once coverage, resume, status file."""
from __future__ import annotations

import json

import pytest

from actlake.schemas.errors import JobSpecError
from actlake.schemas.job import parse_job
from actlake.service.driver import coordinator_name, run_cluster_job
from cluster_checks import assert_exactly_once, expected_shard_pairs


def _job(model, corpus, out, **kw):
    return parse_job({"model": str(model), "hooks": ["transformer.h.1", "transformer.h.2.mlp"], "data": str(corpus),
                      "out": str(out), "context_len": 32, "fragment_tokens": 64, "chunk_rows": 32,
                      "batch_size": 4, "plan": "shards", "progress": False, **kw})


def test_shard_plan_job_commits_every_token_once_and_resumes(ray_local, tiny_gpt2, text_corpus, tmp_path):
    out = tmp_path / "ds"
    job = _job(tiny_gpt2, text_corpus, out)
    lines: list[str] = []
    assert run_cluster_job(job, log=lines.append) == str(out)
    ds = assert_exactly_once(out, expected_shard_pairs(tiny_gpt2, text_corpus))
    assert len(ds.snapshot.fragments) == 6  # one unit per file
    status = json.loads((out / "_progress.json").read_text())
    assert status["state"] == "done" and status["units_done"] == 6 and status["units_leased"] == 0
    assert status["tokens_done"] == sum(f.num_tokens for f in ds.snapshot.fragments)
    assert any(line.startswith("progress:") for line in lines)
    # the same job again: nothing to redo
    lines.clear()
    run_cluster_job(job, log=lines.append)
    assert "already complete" in lines[0]


def test_name_is_deterministic_and_max_tokens_needs_stream(ray_local, tiny_gpt2, text_corpus, tmp_path):
    a, b = _job(tiny_gpt2, text_corpus, tmp_path / "a"), _job(tiny_gpt2, text_corpus, tmp_path / "a", batch_size=2)
    assert coordinator_name(a) == coordinator_name(b)  # runtime fields do not change the job
    assert coordinator_name(a) != coordinator_name(_job(tiny_gpt2, text_corpus, tmp_path / "c"))
    with pytest.raises(JobSpecError):
        run_cluster_job(_job(tiny_gpt2, text_corpus, tmp_path / "m", max_tokens=100), log=lambda s: None)


def test_job_failing_before_its_first_commit_leaves_nothing(ray_local, tiny_gpt2, text_corpus, tmp_path):
    """A worker's source error before any commit: the error's own type, no dataset stub or directory
    left, and no coordinator left running (even a detached one: there is nothing to resume)."""
    import ray

    from actlake.schemas.errors import SourceError

    (tmp_path / "bad.jsonl").write_text(json.dumps({"text": "a short document"}) + '\n{"text": "unterminated\n')
    job = _job(tiny_gpt2, tmp_path / "bad.jsonl", tmp_path / "o")
    lines: list[str] = []
    with pytest.raises(SourceError, match="not valid JSON"):
        run_cluster_job(job, detached=True, log=lines.append)
    assert not (tmp_path / "o").exists()
    assert any("nothing was committed" in line for line in lines), lines
    with pytest.raises(ValueError):
        ray.get_actor(coordinator_name(job), namespace="actlake")


def test_byte_ranges_inside_one_long_line_are_empty_units(ray_local, tiny_gpt2, text_corpus, tmp_path):
    """jsonl byte ranges that start no line (inside a long document) are units without text: done with
    nothing committed, not an error; every document is still extracted exactly once."""
    from collections import Counter

    from transformers import AutoTokenizer

    from actlake import open_dataset

    texts = [p.read_text()[:4000] for p in sorted(text_corpus.iterdir())[:3]]
    (tmp_path / "long.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts))
    out = tmp_path / "o"
    job = _job(tiny_gpt2, tmp_path / "long.jsonl", out)  # fragment_tokens 64: byte ranges far shorter than a line
    run_cluster_job(job, log=lambda s: None)
    status = json.loads((out / "_progress.json").read_text())
    ds = open_dataset(str(out))
    assert status["state"] == "done" and status["units_empty"] > 0
    assert status["units_done"] == len(ds.snapshot.fragments) + status["units_empty"]
    prov = ds.provenance(range(ds.num_rows)).to_pydict()
    pairs = list(zip(prov["doc_id"], prov["doc_pos"], strict=True))
    assert len(set(pairs)) == len(pairs)  # nothing twice
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    per_doc = sorted(Counter(prov["doc_id"]).items())
    # every token once, plus the EOS the packer appends after each document
    assert [n for _, n in per_doc] == [len(tok(t)["input_ids"]) + 1 for t in texts]
