"""``python -m actlake.cli ARGS`` as a separate process per command, forked from one interpreter that has
already imported the CLI (a "zygote", as Android and multiprocessing's forkserver start processes).

Each command is its own process with its own stdin (``/dev/null``), stdout and stderr (files), exit status,
environment and working directory, and runs ``actlake.cli`` as ``__main__`` like ``python -m`` does (its
``main()``, atexit handlers included); what it skips is the ~3 s of imports (torch) a fresh interpreter pays
per command.  For tests that run many short commands (the CLI error checks); a test that is about the fresh
interpreter itself (the entry point's imports) uses ``subprocess.run`` instead.
"""
from __future__ import annotations

import atexit
import json
import os
import select
import signal
import subprocess
import sys
import tempfile

_SERVER = r"""
import atexit, json, os, runpy, sys, traceback
import actlake.cli  # noqa: F401 - the imports every command shares

requests, replies = sys.stdin, sys.stdout
for line in requests:
    req = json.loads(line)
    replies.flush()
    pid = os.fork()
    if pid == 0:  # the command's process
        os.chdir(req["cwd"])
        os.environ.clear()
        os.environ.update(req["env"])
        null = os.open(os.devnull, os.O_RDONLY)
        out = os.open(req["stdout"], os.O_WRONLY | os.O_TRUNC)
        err = os.open(req["stderr"], os.O_WRONLY | os.O_TRUNC)
        for src, dst in ((null, 0), (out, 1), (err, 2)):
            os.dup2(src, dst)
            os.close(src)
        sys.stdin = open(0, closefd=False)
        sys.argv = [actlake.cli.__file__, *req["argv"]]
        del sys.modules["actlake.cli"]  # as in a fresh interpreter: runpy runs it as __main__, not a second copy
        rc = 0
        try:
            runpy.run_module("actlake.cli", run_name="__main__", alter_sys=True)
        except SystemExit as e:  # the interpreter's own rules for exit codes
            if e.code is None:
                rc = 0
            elif isinstance(e.code, int):
                rc = e.code
            else:
                print(e.code, file=sys.stderr)
                rc = 1
        except BaseException:
            traceback.print_exc()
            rc = 1
        try:
            atexit._run_exitfuncs()
        finally:
            sys.stdout.flush()
            sys.stderr.flush()
            os._exit(rc)
    replies.write(json.dumps({"pid": pid}) + "\n")
    replies.flush()
    _, status = os.waitpid(pid, 0)
    replies.write(json.dumps({"rc": os.waitstatus_to_exitcode(status)}) + "\n")
    replies.flush()
"""


class Zygote:
    """One zygote interpreter (started with ``env``); ``run(args)`` works like ``subprocess.run(CLI + args,
    capture_output=True, text=True, env=..., timeout=...)`` in the caller's current directory."""

    def __init__(self, env: dict[str, str]):
        self.proc = subprocess.Popen([sys.executable, "-c", _SERVER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                     text=True, env=env)
        self._buf = b""
        atexit.register(self.close)

    def _reply(self, timeout: float | None) -> dict:
        """The zygote's next reply line (unbuffered reads: select must see what is not yet read)."""
        fd = self.proc.stdout.fileno()  # type: ignore[union-attr]
        while b"\n" not in self._buf:
            ready, _, _ = select.select([fd], [], [], timeout)
            if not ready:
                raise TimeoutError
            chunk = os.read(fd, 4096)
            if not chunk:
                raise RuntimeError(f"the CLI zygote exited with {self.proc.wait()}")
            self._buf += chunk
        line, self._buf = self._buf.split(b"\n", 1)
        return json.loads(line)

    def run(self, args: list[str], env: dict[str, str], timeout: float = 300,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
        with tempfile.TemporaryDirectory(prefix="cli-") as d:
            paths = {k: os.path.join(d, k) for k in ("stdout", "stderr")}
            for p in paths.values():
                open(p, "w").close()
            req = {"argv": list(map(str, args)), "env": env, "cwd": os.fspath(cwd or os.getcwd()), **paths}
            self.proc.stdin.write(json.dumps(req) + "\n")  # type: ignore[union-attr]
            self.proc.stdin.flush()  # type: ignore[union-attr]
            pid = self._reply(60)["pid"]
            try:
                rc = self._reply(timeout)["rc"]
            except TimeoutError:
                os.kill(pid, signal.SIGKILL)
                self._reply(60)
                raise subprocess.TimeoutExpired(["actlake", *args], timeout) from None
            with open(paths["stdout"]) as o, open(paths["stderr"]) as e:
                return subprocess.CompletedProcess([sys.executable, "-m", "actlake.cli", *args], rc, o.read(), e.read())

    def close(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()  # type: ignore[union-attr]
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


_ZYGOTES: dict[tuple, Zygote] = {}


def run_cli(args: list[str], env: dict[str, str] | None = None, timeout: float = 300,
            cwd: str | os.PathLike | None = None) -> subprocess.CompletedProcess:
    """``subprocess.run([sys.executable, "-m", "actlake.cli", *args], capture_output=True, text=True, env=env,
    cwd=cwd, timeout=timeout)``, forked from a zygote started with exactly this environment (what modules
    read from it at import time is the same as in a fresh interpreter; the last two environments keep one)."""
    env = dict(os.environ if env is None else env)
    key = tuple(sorted((k, v) for k, v in env.items() if k != "PYTEST_CURRENT_TEST"))  # set anew for each test
    z = _ZYGOTES.get(key)
    if z is None or z.proc.poll() is not None:
        while len(_ZYGOTES) >= 2:
            _ZYGOTES.pop(next(iter(_ZYGOTES))).close()
        z = _ZYGOTES[key] = Zygote(env)
    return z.run(list(args), env, timeout, cwd)
