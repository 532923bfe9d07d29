"""Ray token auth (on by default in Ray 2.60) with the Jobs API: a head started with
``RAY_AUTH_MODE=token`` refuses a client without the token (one ``error:`` line, nothing listed or
submitted) and accepts the token given by Ray's standard mechanism (``RAY_AUTH_MODE=token`` +
``RAY_AUTH_TOKEN``) or by ``--token``."""
from __future__ import annotations

import secrets
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from ray_head import RayHead, head_env

from actlake.schemas.errors import ClusterError

CLI = [sys.executable, "-m", "actlake.cli"]


@pytest.fixture(scope="module")
def token_head():
    token = secrets.token_hex(32)
    tmp = Path(tempfile.mkdtemp(prefix="rt", dir="/tmp"))
    h = RayHead("127.0.0.3", num_cpus=1, tmp=tmp, env={"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token})
    try:
        h.wait_ready()
        yield h, token
    finally:
        h.stop()
        shutil.rmtree(tmp, ignore_errors=True)


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(CLI + list(args), env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_token_auth_refused_without_token_accepted_with_it(token_head, tmp_path, text_corpus):
    head, token = token_head
    no_auth = {**head_env(), "RAY_AUTH_MODE": "disabled"}
    no_auth.pop("RAY_AUTH_TOKEN", None)
    res = _cli(no_auth, "jobs", "list", "--address", head.address)
    assert res.returncode != 0
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1 and ("401" in errors[0] or "auth" in errors[0].lower()), res.stderr
    spec = tmp_path / "job.yaml"
    spec.write_text(f"model: x\nhooks: [a]\ndata: {tmp_path}\nout: {tmp_path / 'o'}\nplan: shards\n")
    res = _cli(no_auth, "submit", str(spec), "--address", head.address)
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert res.returncode != 0 and len(errors) == 1 and "auth" in errors[0].lower(), res.stderr

    standard = {**no_auth, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": token}  # Ray's own lookup
    res = _cli(standard, "jobs", "list", "--address", head.address)
    assert res.returncode == 0, res.stderr
    res = _cli(no_auth, "jobs", "list", "--address", head.address, "--token", token)  # explicit header
    assert res.returncode == 0, res.stderr
    res = _cli(no_auth, "jobs", "status", "raysubmit_doesnotexist", "--address", head.address, "--token", token)
    assert res.returncode != 0 and res.stderr.strip().startswith("error:"), res.stderr

    from actlake.service.submit import list_jobs

    with pytest.raises(ClusterError):
        list_jobs(head.address, token="not-" + token)
    assert list_jobs(head.address, token=token) == []  # nothing was submitted
    assert not (tmp_path / "o").exists()

    # a real submission through Ray's token lookup; the job fails on the cluster (no such model), and
    # --wait reports it: exit 1, the job id on stdout, the state and the driver's error on stderr
    spec.write_text(f"model: {tmp_path / 'no-model'}\nhooks: [a]\ndata: {text_corpus}\n"
                    f"out: {tmp_path / 'o2'}\nplan: shards\n")
    res = subprocess.run(CLI + ["submit", str(spec), "--address", head.address, "--wait"], env=standard,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 1, res.stderr
    assert res.stdout.strip().startswith("raysubmit_") and "FAILED" in res.stderr and "error:" in res.stderr
    assert [j["state"] for j in list_jobs(head.address, token=token)] == ["FAILED"]
