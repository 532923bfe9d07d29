"""Fixtures: real ``actlake serve`` processes (tests/remote/remote_server.py)."""
from __future__ import annotations

import pytest
from remote_server import Server


@pytest.fixture
def start_server():
    """Factory: ``start_server([uri, ...], token=...)``; every server started is stopped at teardown."""
    servers: list[Server] = []

    def start(args: list[str], **kw) -> Server:
        s = Server(args, **kw)
        servers.append(s)
        return s

    yield start
    for s in servers:
        s.stop()


@pytest.fixture(scope="session")
def store(tmp_path_factory) -> str:
    """The 622-row test store of tests/stores.py (row r holds r in column 0 of hook 'h'); read-only, one
    for the session."""
    from stores import make_store

    return make_store(str(tmp_path_factory.mktemp("remote") / "acts"))


@pytest.fixture(scope="session")
def server(store):
    """One token-protected server for the session's tests (each process start imports torch: seconds),
    serving ``store`` as 'acts'; tests that stop, restart or count streams start their own."""
    s = Server([store])
    yield s
    s.stop()
