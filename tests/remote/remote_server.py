"""A real ``actlake serve`` process on 127.0.0.1 (started on a free port, stopped by its pid)."""
from __future__ import annotations

import os
import queue
import re
import signal
import subprocess
import sys
import threading
import time

TOKEN = "s3cr3t-token-for-tests"


class Server:
    """``actlake serve ARGS`` in its own process; ``port`` is parsed from its 'listening on' line."""

    def __init__(self, args: list[str], port: int = 0, token: str | None = TOKEN, env: dict | None = None):
        cmd = [sys.executable, "-m", "actlake.cli", "serve", *args, "--host", "127.0.0.1", "--port", str(port)]
        if token:
            cmd += ["--token", token]
        self.token = token
        e = {k: v for k, v in os.environ.items() if k != "ACTLAKE_TOKEN"}
        self.proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**e, **(env or {})})
        self.lines: queue.Queue = queue.Queue()
        self.output: list[str] = []
        threading.Thread(target=self._pump, daemon=True).start()
        self.port = self._wait_port()

    def _pump(self) -> None:
        for line in self.proc.stdout:  # type: ignore[union-attr]
            self.output.append(line)
            self.lines.put(line)
        self.lines.put(None)

    def _wait_port(self, timeout: float = 60) -> int:
        end = time.monotonic() + timeout
        while time.monotonic() < end:
            try:
                line = self.lines.get(timeout=end - time.monotonic())
            except queue.Empty:
                break
            if line is None:
                raise RuntimeError(f"server exited: {''.join(self.output)}")
            m = re.search(r"listening on grpc(?:\+tls)?://127\.0\.0\.1:(\d+)", line)
            if m:
                return int(m.group(1))
        self.stop()
        raise RuntimeError(f"server did not start: {''.join(self.output)}")

    def uri(self, name: str, scheme: str = "grpc") -> str:
        return f"{scheme}://127.0.0.1:{self.port}/{name}"

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 20) -> int:
        if self.proc.poll() is None:
            os.kill(self.proc.pid, sig)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
        return self.proc.returncode
