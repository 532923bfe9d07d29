"""Server restarts, clients that vanish mid-stream, shutdown on SIGTERM, and `actlake serve` input errors."""
from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
import torch
from remote_server import TOKEN, Server

import actlake
from actlake.schemas.errors import RemoteError


def _ids(batches) -> list[torch.Tensor]:
    return [b["row_id"] for b in batches]


def test_resume_across_server_restart(store, start_server):
    local = actlake.open_dataset(store)
    ref = _ids(local.batches(24, seed=9, with_provenance=True))
    srv = start_server([store])
    port = srv.port
    ds = actlake.open_dataset(srv.uri("acts"), storage_options={"token": TOKEN})

    # 1) a checkpoint taken before the server died resumes on the restarted server
    s = ds.batches(24, seed=9, with_provenance=True)
    it = iter(s)
    got = [next(it)["row_id"] for _ in range(5)]
    state = s.state_dict()
    it.close()
    assert srv.stop() == 0
    srv2 = start_server([store], port=port)
    t0 = time.monotonic()
    s2 = actlake.open_dataset(srv2.uri("acts"), storage_options={"token": TOKEN}).batches(
        24, seed=9, with_provenance=True)
    s2.load_state_dict(state)
    it2 = iter(s2)
    got.append(next(it2)["row_id"])
    resume_s = time.monotonic() - t0
    got += [b["row_id"] for b in it2]
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref))
    assert resume_s < 5  # generous on a shared 2-core machine; bench/remote.py measures it

    # 2) a stream being iterated while its server restarts reconnects and loses/repeats nothing
    ds.reconnect_s = 180  # the restart below takes a while on a loaded machine
    s3 = ds.batches(24, seed=9, with_provenance=True, prefetch_batches=1)
    it3 = iter(s3)
    got3 = [next(it3)["row_id"] for _ in range(3)]
    assert srv2.stop() == 0
    start_server([store], port=port)
    got3 += [b["row_id"] for b in it3]
    assert len(got3) == len(ref) and all(torch.equal(a, b) for a, b in zip(got3, ref))
    assert s3.state_dict()["step"] == len(ref)


CLIENT = textwrap.dedent("""
    import sys, time, actlake
    ds = actlake.open_dataset(sys.argv[1], storage_options={"token": sys.argv[2]})
    it = iter(ds.batches(2048, seed=1))
    next(it); next(it)
    print("reading", flush=True)
    time.sleep(600)
""")


def _stats(ds) -> dict:
    return ds.stats()


def _wait_streams(ds, n: int, timeout: float = 30) -> dict:
    end = time.monotonic() + timeout
    while True:
        st = _stats(ds)
        if st["streams"] == n or time.monotonic() > end:
            return st
        time.sleep(0.1)


def test_disconnect_frees_server_resources(tmp_path, start_server):
    from stores import make_store

    # 100 MB: much more than gRPC and socket buffers hold, so a client that stops reading leaves
    # its stream open on the server
    big = make_store(str(tmp_path / "big"), fragments=(16384,) * 3, dim=512, chunk_rows=1024)
    srv = start_server([big])
    ds = actlake.open_dataset(srv.uri("big"), storage_options={"token": TOKEN})
    assert sum(len(b["h"]) for b in ds.batches(2048, seed=1)) == 3 * 16384
    rss = []
    for round_ in range(3):  # round 0 warms the dataset's buffer cache and the allocator
        procs = [subprocess.Popen([sys.executable, "-c", CLIENT, srv.uri("big"), TOKEN], stdout=subprocess.PIPE,
                                  text=True) for _ in range(2)]
        try:
            for p in procs:
                assert p.stdout.readline().strip() == "reading"
            # (usually 2; a stream whose client's buffers took all of it has already completed)
            assert _wait_streams(ds, 2, timeout=5)["streams"] >= 1, (round_, "".join(srv.output))
        finally:
            for p in procs:
                os.kill(p.pid, signal.SIGKILL)  # vanish mid-stream: no goodbye
                p.wait()
        after = _wait_streams(ds, 0)
        assert after["streams"] == 0, after
        rss.append(after["rss_bytes"])
    # an in-process client that closes its stream early frees it too
    it = iter(ds.batches(2048, seed=2))
    next(it)
    assert _stats(ds)["streams"] == 1
    it.close()
    after = _wait_streams(ds, 0)
    assert after["streams"] == 0 and after["streams_opened"] == 1 + 3 * 2 + 1, "".join(srv.output)
    # RSS back to the warm baseline: killed streams leave nothing behind (slack: allocator noise)
    assert max(rss[1:] + [after["rss_bytes"]]) <= rss[0] + 16 * 2**20, rss


def test_sigterm_with_open_stream_exits_cleanly(tmp_path):
    from stores import make_store

    mid = make_store(str(tmp_path / "mid"), fragments=(16384, 16384), dim=512, chunk_rows=1024)  # 64 MB
    srv = Server([mid])
    try:
        ds = actlake.open_dataset(srv.uri("mid"), storage_options={"token": TOKEN, "reconnect_s": 1})
        it = iter(ds.batches(1024, seed=0, prefetch_batches=1))
        next(it)
        assert ds.stats()["streams"] == 1
        assert srv.stop(signal.SIGTERM) == 0  # the open stream does not hold the server up
        assert any("shutting down" in line for line in srv.output)
        with pytest.raises(RemoteError):  # once its buffered batches are used up, the client gives up
            list(it)
        with pytest.raises(RemoteError):
            ds.batches(8)
    finally:
        srv.stop(signal.SIGKILL)


@pytest.mark.parametrize("args", [
    ["/nonexistent/store"],
    ["STORE", "--token", "a", "--token-file", "/nonexistent"],
    ["STORE", "--name", "../up"],
    ["STORE", "STORE"],
])
def test_serve_bad_input_is_one_error_line(store, args):
    args = [store if a == "STORE" else a for a in args]
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "serve", *args, "--port", "0"], capture_output=True,
                       text=True, timeout=120, env={k: v for k, v in os.environ.items() if k != "ACTLAKE_TOKEN"})
    assert r.returncode != 0
    lines = [line for line in r.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error:"), r.stderr
    assert "listening" not in r.stdout
