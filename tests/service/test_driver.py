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
