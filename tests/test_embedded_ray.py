"""B18: another Ray on the machine never breaks the embedded default.

A real user cluster (``ray start --head`` on 127.0.0.3, own process group, token auth off) runs while two
``actlake extract`` jobs without ``--address`` run at once; both finish and the user's cluster is left
running.  After that cluster is killed, Ray's address file stays behind (and ``RAY_ADDRESS`` points at the
dead cluster): a third job still starts its own private cluster.  ``RAY_TMPDIR`` confines the address file
(``$RAY_TMPDIR/ray/ray_current_cluster``) to this test, so other Ray users on the machine are not affected."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

import actlake

pytestmark = pytest.mark.slow


def _free_port(host: str) -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def _extract(model: Path, data: Path, out: Path, env: dict) -> subprocess.Popen:
    args = [sys.executable, "-m", "actlake.cli", "extract", "--model", str(model), "--hooks", "transformer.h.0",
            "--data", str(data), "--out", str(out), "--max-tokens", "120", "--context-len", "16", "--no-progress"]
    return subprocess.Popen(args, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def _finish(p: subprocess.Popen) -> tuple[int, str]:
    _, stderr = p.communicate(timeout=400)
    return p.returncode, stderr


def test_embedded_ray_ignores_a_user_cluster(tmp_path, tiny_gpt2, text_corpus):
    tmpdir = tempfile.mkdtemp(prefix="alr", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    env = {**os.environ, "RAY_TMPDIR": tmpdir, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0",
           "HF_HUB_OFFLINE": "1", "COLUMNS": "200"}
    env.pop("RAY_ADDRESS", None)
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = _free_port("127.0.0.3")
    head = subprocess.Popen(
        [ray_bin, "start", "--head", "--block", "--node-ip-address=127.0.0.3", f"--port={port}", "--num-cpus=1",
         f"--ray-client-server-port={_free_port('127.0.0.3')}",
         "--include-dashboard=false", "--disable-usage-stats"],
        env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    address_file = Path(tmpdir) / "ray" / "ray_current_cluster"
    try:
        deadline = time.time() + 120
        while not address_file.exists() and time.time() < deadline and head.poll() is None:
            time.sleep(0.5)
        assert head.poll() is None and address_file.exists(), "the user's ray head did not start"
        assert f"127.0.0.3:{port}" in address_file.read_text()

        jobs = [_extract(tiny_gpt2, text_corpus, tmp_path / f"job{i}", env) for i in range(2)]
        results = [_finish(p) for p in jobs]
        for rc, stderr in results:
            assert rc == 0, stderr[-3000:]
        for i in range(2):
            ds = actlake.open_dataset(str(tmp_path / f"job{i}"))
            assert ds.manifest.status == "complete" and ds.num_rows > 0
        assert head.poll() is None, "the user's cluster was stopped"
        assert f"127.0.0.3:{port}" in address_file.read_text(), "the user's address file was changed"
    finally:
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGKILL)
        head.wait(timeout=60)

    try:
        assert address_file.exists()  # what Ray leaves behind; a plain ray.init() would try to join it
        rc, stderr = _finish(_extract(tiny_gpt2, text_corpus, tmp_path / "after",
                                      {**env, "RAY_ADDRESS": f"127.0.0.3:{port}"}))
        assert rc == 0, stderr[-3000:]
        assert actlake.open_dataset(str(tmp_path / "after")).manifest.status == "complete"
    finally:
        shutil.rmtree(tmpdir, ignore_errors=True)
