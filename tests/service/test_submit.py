"""actlake submit / jobs against a real Ray head (Jobs API on loopback): submit, watch, cancel mid-job,
resubmit → resumes with every token exactly once; bad spec / unreachable address / unknown id → one error."""
from __future__ import annotations

import shutil
import subprocess
import sys
import sysconfig
import tempfile
import time
from pathlib import Path

import pytest
import yaml

import actlake
from actlake.schemas.errors import ClusterError, JobSpecError
from cluster_checks import assert_exactly_once, expected_shard_pairs
from ray_head import RayHead, free_port, head_env

CLI = [sys.executable, "-m", "actlake.cli"]
MODULES = ["textwrap", "string", "shlex", "bisect", "heapq", "colorsys", "fnmatch", "keyword", "queue", "sched",
           "glob", "copy", "abc", "numbers", "enum", "dataclasses", "functools", "operator", "types", "weakref",
           "contextlib", "tokenize", "token", "linecache"]


@pytest.fixture(scope="module")
def head():
    tmp = Path(tempfile.mkdtemp(prefix="rh", dir="/tmp"))
    h = RayHead("127.0.0.3", num_cpus=2, tmp=tmp)
    try:
        h.wait_ready()
        yield h
    finally:
        h.stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def big_corpus(tmp_path_factory) -> Path:
    d = tmp_path_factory.mktemp("corpus24")
    root = Path(sysconfig.get_paths()["stdlib"])
    for i, m in enumerate(MODULES):
        (d / f"{i:02d}_{m}.txt").write_text((root / f"{m}.py").read_text()[:3000])
    return d


def _spec(tmp: Path, model: Path, corpus: Path, out: Path) -> Path:
    p = tmp / "job.yaml"
    p.write_text(yaml.safe_dump({
        "model": str(model), "hooks": ["transformer.h.1", "transformer.h.2.mlp"], "data": str(corpus),
        "out": str(out), "context_len": 16, "batch_size": 4, "fragment_tokens": 64, "chunk_rows": 32,
        "plan": "shards", "progress": False}))
    return p


def _cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), env=head_env(), capture_output=True, text=True, timeout=timeout)


def _one_error(res: subprocess.CompletedProcess) -> None:
    assert res.returncode != 0
    lines = [ln for ln in res.stderr.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), res.stderr


def _commits(out: Path) -> int:
    d = out / "_commits"
    return len([p for p in d.glob("*.json") if p.stem.isdigit()]) if d.exists() else 0


def test_bad_input_submits_nothing(head, tmp_path, tiny_gpt2, text_corpus):
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: x\nhooks: [a]\ndata: {type: text}\nout: o\n")  # text source without a path
    _one_error(_cli("submit", str(bad), "--address", head.address))
    with pytest.raises(JobSpecError):
        actlake.submit(str(bad), head.address)
    dead = f"http://127.0.0.3:{free_port('127.0.0.3')}"
    _one_error(_cli("submit", str(_spec(tmp_path, tiny_gpt2, text_corpus, tmp_path / "o")), "--address", dead))
    with pytest.raises(ClusterError):
        actlake.submit(_spec(tmp_path, tiny_gpt2, text_corpus, tmp_path / "o"), dead)
    _one_error(_cli("jobs", "status", "raysubmit_doesnotexist", "--address", head.address))
    from actlake.service.submit import attach, list_jobs

    with pytest.raises(ClusterError):
        attach("raysubmit_doesnotexist", head.address)

    assert list_jobs(head.address) == []  # nothing was submitted
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_submit_cancel_resubmit_resumes_exactly_once(head, tmp_path, tiny_gpt2, big_corpus):
    from actlake.service.submit import attach, list_jobs

    out = tmp_path / "ds"
    spec = _spec(tmp_path, tiny_gpt2, big_corpus, out)
    res = _cli("submit", str(spec), "--address", head.address)
    assert res.returncode == 0, res.stderr
    job_id = res.stdout.strip().splitlines()[-1]
    assert job_id.startswith("raysubmit_")
    deadline = time.time() + 180
    while _commits(out) < 2 and time.time() < deadline:
        time.sleep(0.2)
    first = attach(job_id, head.address)
    assert _commits(out) >= 2, first.logs()
    assert first.cancel()  # kills the driver (and with it the coordinator and workers) mid-job
    assert first.wait(timeout=120) == "STOPPED"
    assert _commits(out) < len(MODULES), "job finished before it could be cancelled"
    assert first.status()["state"] == "STOPPED"

    h = actlake.submit(spec, head.address)  # the same spec again: resumes from the commit log
    assert h.wait(timeout=300) == "SUCCEEDED", h.logs()[-3000:]
    s = h.status()
    assert s["state"] == "SUCCEEDED" and s["units_done"] == len(MODULES) and s["units_leased"] == 0
    assert s["tokens_done"] > 0 and s["tokens_per_s"] > 0 and s["workers_per_node"]
    assert "progress:" in h.logs()
    assert "done:" in "".join(h.follow())  # --follow of a finished job: its whole log, then it ends
    assert_exactly_once(out, expected_shard_pairs(tiny_gpt2, big_corpus))
    assert {job_id, h.job_id} <= {r["job_id"] for r in list_jobs(head.address)}
    shown = _cli("jobs", "status", h.job_id, "--address", head.address)
    assert f"{len(MODULES)} done" in shown.stdout
