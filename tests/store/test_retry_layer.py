"""The one retry layer: classification, bounded backoff, and a real S3 outage ridden out."""
from __future__ import annotations

import threading
import time

import pytest
from botocore.exceptions import ClientError, EndpointConnectionError

from actlake.schemas.errors import StorageError
from actlake.store.backends import open_backend
from actlake.store.backends.retry import backoff, classify, with_retries


def _client_error(code: str, status: int) -> ClientError:
    return ClientError({"Error": {"Code": code, "Message": code}, "ResponseMetadata": {"HTTPStatusCode": status}},
                       "GetObject")


@pytest.mark.parametrize("exc,kind", [
    (_client_error("SlowDown", 503), "transient"),
    (_client_error("InternalError", 500), "transient"),
    (_client_error("RequestTimeout", 400), "transient"),
    (_client_error("AccessDenied", 403), "permanent"),
    (_client_error("NoSuchBucket", 404), "permanent"),
    (_client_error("PreconditionFailed", 412), "exists"),
    (ConnectionResetError(104, "reset"), "transient"),
    (EndpointConnectionError(endpoint_url="http://127.0.0.1:1"), "transient"),
    (TimeoutError(), "transient"),
    (FileNotFoundError("k"), "missing"),
    (PermissionError("denied"), "permanent"),
])
def test_classify(exc, kind):
    assert classify(exc) == kind
    wrapped = OSError("translated by the client")
    wrapped.__cause__ = exc
    if kind != "missing":  # the class survives a client's own translation (s3fs raises from ClientError)
        assert classify(wrapped) == kind


def test_backoff_is_bounded_full_jitter():
    import random

    rng = random.Random(0)
    d = [backoff(a, 0.1, 1.0, rng) for a in range(20) for _ in range(50)]
    assert min(d) >= 0 and max(d) <= 1.0 and len(set(d)) > 100


def test_with_retries_retries_transient_then_gives_one_storage_error():
    calls = []

    def flaky():
        calls.append(1)
        if len(calls) < 3:
            raise ConnectionResetError(104, "reset")
        return "ok"
    assert with_retries(flaky, "s3://b/k", "cannot read", (0.001, 0.01, 5.0)) == "ok" and len(calls) == 3

    def down():
        raise _client_error("SlowDown", 503)
    t0 = time.monotonic()
    with pytest.raises(StorageError, match="s3://b/k"):
        with_retries(down, "s3://b/k", "cannot read", (0.001, 0.01, 0.2))
    assert time.monotonic() - t0 < 2

    def denied():
        raise _client_error("AccessDenied", 403)
    with pytest.raises(StorageError, match="access denied"):
        with_retries(denied, "s3://b/k", "cannot read")
    with pytest.raises(FileNotFoundError):
        with_retries(lambda: (_ for _ in ()).throw(FileNotFoundError("k")), "s3://b/k", "cannot read")


def test_read_rides_out_a_real_server_outage(s3_server, s3_uri):
    b = open_backend(s3_uri, s3_server.storage_options)
    b.write("fragments/x/obj", b"payload")
    s3_server.stop()
    restart = threading.Timer(2.0, s3_server.start)
    restart.start()
    t0 = time.monotonic()
    try:
        assert b.read("fragments/x/obj", 1, 4) == b"ayl"  # retried until the server was back
        assert time.monotonic() - t0 >= 1.5
    finally:
        restart.join()
    assert b.create("fragments/x/new", b"1") and not b.create("fragments/x/new", b"2")
