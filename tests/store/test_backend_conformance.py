"""One conformance suite that every storage backend runs (after zarr-python's testing/store.py):
local disk, fsspec memory://, and a real S3 server (SeaweedFS on loopback)."""
from __future__ import annotations

import threading
import uuid

import pytest

from actlake.store.backends import ObjectStore, open_backend


@pytest.fixture(params=["local", "memory", "s3"])
def backend(request, tmp_path) -> ObjectStore:
    if request.param == "local":
        return open_backend(str(tmp_path / "root"))
    if request.param == "memory":
        return open_backend(f"memory://conformance-{uuid.uuid4().hex[:8]}/root")
    srv = request.getfixturevalue("s3_server")
    return open_backend(f"s3://{srv.bucket}/conf-{uuid.uuid4().hex[:8]}", srv.storage_options)


def test_write_read_roundtrip_and_ranges(backend):
    data = bytes(range(256)) * 4
    backend.write("a/b/obj.bin", data)
    assert backend.read("a/b/obj.bin") == data
    assert backend.read("a/b/obj.bin", 10, 20) == data[10:20]
    assert backend.read("a/b/obj.bin", 1000) == data[1000:]
    backend.write("a/b/obj.bin", b"new")  # overwrite replaces the whole object
    assert backend.read("a/b/obj.bin") == b"new"


def test_missing_object_is_file_not_found(backend):
    with pytest.raises(FileNotFoundError):
        backend.read("nope/missing.bin")
    with pytest.raises(FileNotFoundError):
        backend.read("nope/missing.bin", 0, 4)
    assert not backend.exists("nope/missing.bin")


def test_create_if_absent(backend):
    assert backend.create("log/0001.json", b"first") is True
    assert backend.create("log/0001.json", b"second") is False
    assert backend.read("log/0001.json") == b"first"


def test_list_direct_children_and_recursive(backend):
    backend.write_many({"x/1.bin": b"1", "x/2.bin": b"22", "x/sub/3.bin": b"333", "y/4.bin": b"4444"})
    assert backend.list("x") == ["1.bin", "2.bin", "sub"]
    assert backend.list("") == ["x", "y"]
    assert backend.list("absent") == []
    objs = backend.list_objects("x")
    assert [(o.key, o.size) for o in objs] == [("x/1.bin", 1), ("x/2.bin", 2), ("x/sub/3.bin", 3)]
    assert backend.read_many(["x/1.bin", "y/4.bin"]) == {"x/1.bin": b"1", "y/4.bin": b"4444"}
    assert backend.exists("x/sub/3.bin") and backend.exists("x")


def test_delete(backend):
    backend.write_many({"d/1": b"1", "d/2": b"2", "d/3": b"3"})
    backend.delete("d/1")
    backend.delete("d/1")  # missing is fine
    assert not backend.exists("d/1")
    backend.delete_many(["d/2", "d/3"])
    assert backend.list_objects("d") == []


def test_racing_creators_exactly_one_wins(backend):
    if not backend.supports_atomic_create:
        pytest.skip("backend claims no atomic create (the commit log takes a writer lease instead)")
    n = 8
    barrier = threading.Barrier(n)
    wins: list[int] = []
    errors: list[BaseException] = []

    def go(i: int) -> None:
        barrier.wait()
        try:
            if backend.create("race/key.json", f"writer {i}".encode()):
                wins.append(i)
        except BaseException as e:  # surfaced below
            errors.append(e)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert len(wins) == 1
    assert backend.read("race/key.json") == f"writer {wins[0]}".encode()


def test_capabilities(backend):
    assert isinstance(backend.supports_atomic_create, bool)
    root = backend.local_root
    if root is not None:
        backend.write("f.bin", b"abc")
        with open(f"{root}/f.bin", "rb") as f:
            assert f.read() == b"abc"


def test_read_into_ranges_short_and_missing(backend):
    data = bytes(range(256)) * 64  # 16 KiB
    backend.write("r/obj.bin", data)
    buf = bytearray(len(data))
    size = backend.read_into("r/obj.bin", memoryview(buf))
    assert bytes(buf) == data and size in (None, len(data))
    part = bytearray(1000)
    backend.read_into("r/obj.bin", memoryview(part), 5000)
    assert bytes(part) == data[5000:6000]
    tail = bytearray(100)  # the object ends 40 bytes in: its size is returned, only those bytes written
    assert backend.read_into("r/obj.bin", memoryview(tail), len(data) - 40) == len(data)
    assert bytes(tail[:40]) == data[-40:]
    with pytest.raises(FileNotFoundError):
        backend.read_into("r/missing.bin", memoryview(bytearray(8)))
