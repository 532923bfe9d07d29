"""A real Ray head with the Jobs API on a loopback address, in its own process group (test helper)."""
from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path

PORT_FLAGS = ("--port", "--dashboard-port", "--ray-client-server-port", "--dashboard-agent-listen-port",
              "--dashboard-agent-grpc-port", "--metrics-export-port", "--runtime-env-agent-port",
              "--node-manager-port", "--object-manager-port")


def free_port(ip: str) -> int:
    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def head_env(tmp: Path | None = None) -> dict[str, str]:
    """Environment of the head (and so of submitted drivers): auth off, this venv first on PATH, and
    (with ``tmp``) Ray's temp dir there, so the "current cluster" file never reaches other sessions."""
    venv_bin = str(Path(sys.executable).parent)
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", "RAY_USAGE_STATS_ENABLED": "0", "HF_HUB_OFFLINE": "1",
           "PATH": venv_bin + os.pathsep + os.environ.get("PATH", "")}
    if tmp is not None:
        env["RAY_TMPDIR"] = str(tmp)
    return env


class RayHead:
    """``ray start --head --block`` on ``ip`` with free ports; ``address`` is the Jobs API URL."""

    def __init__(self, ip: str = "127.0.0.3", num_cpus: int = 2, tmp: Path | None = None,
                 env: dict[str, str] | None = None):
        ports = {f: free_port(ip) for f in PORT_FLAGS}
        lo = free_port(ip)
        while any(lo <= p <= lo + 200 for p in ports.values()):  # Ray exits 1 when a port lies in the worker range
            lo = free_port(ip)
        cmd = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--node-ip-address={ip}",
               f"--dashboard-host={ip}", f"--num-cpus={num_cpus}", "--include-dashboard=true",
               f"--min-worker-port={lo}", f"--max-worker-port={lo + 200}"]
        cmd += [f"{k}={v}" for k, v in ports.items()]
        if tmp is not None:
            cmd.append(f"--temp-dir={tmp / 'ray'}")
        self.address = f"http://{ip}:{ports['--dashboard-port']}"
        self.gcs = f"{ip}:{ports['--port']}"
        self.log = tempfile.TemporaryFile()  # the head's output, shown if it exits before it is ready
        self.proc = subprocess.Popen(cmd, env={**head_env(tmp), **(env or {})}, start_new_session=True, stdout=self.log,
                                     stderr=subprocess.STDOUT)

    def wait_ready(self, timeout: float = 120) -> None:
        deadline = time.time() + timeout
        while time.time() < deadline:
            if self.proc.poll() is not None:
                self.log.seek(0)
                tail = self.log.read().decode(errors="replace")[-2000:]
                raise RuntimeError(f"ray head exited with {self.proc.returncode}:\n{tail}")
            try:
                with urllib.request.urlopen(self.address + "/api/version", timeout=2) as r:
                    if r.status == 200:
                        return
            except urllib.error.HTTPError as e:
                if e.code in (401, 403):  # a head with token auth: up, and refusing us
                    return
            except OSError:
                pass
            time.sleep(0.5)
        raise TimeoutError("ray head did not come up")

    def stop(self) -> None:
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=20)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
        self.log.close()
