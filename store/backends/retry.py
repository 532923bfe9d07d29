"""The one place storage faults are classified and retried.

Transient faults (connection reset/refused, timeouts, HTTP 5xx, 503 SlowDown, throttling, a 409
ConditionalRequestConflict) are retried with exponential backoff and full jitter (AWS Architecture
Blog, "Exponential Backoff and Jitter", 2015: sleep = uniform(0, min(cap, base * 2**attempt))) until
a time budget is spent.  Missing objects (FileNotFoundError) and lost conditional writes pass
through untouched; permanent faults (access denied, no such bucket, bad credentials) and faults that
outlive the budget become one ``StorageError`` naming the URI and the cause.  The clients below
(s3fs, botocore) are configured with their own retries off, so this is the only retry loop."""
from __future__ import annotations

import errno
import random
import socket
import time
from collections.abc import Callable, Iterator
from typing import TypeVar

from actlake.schemas.errors import StorageError

T = TypeVar("T")

TRANSIENT_CODES = {"SlowDown", "Throttling", "ThrottlingException", "RequestTimeout", "RequestTimeTooSkewed",
                   "InternalError", "ServiceUnavailable", "ConditionalRequestConflict", "RequestLimitExceeded",
                   "OperationAborted", "ExpiredToken"}
PERMANENT_CODES = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "NoSuchBucket",
                   "AllAccessDisabled", "InvalidBucketName", "AccountProblem", "Forbidden"}
PRECONDITION_CODES = {"PreconditionFailed", "412"}

# (base seconds, cap seconds, budget seconds) for ordinary calls; open-time probes use a short budget
DEFAULT_POLICY = (0.05, 2.0, 60.0)
PROBE_POLICY = (0.05, 0.5, 3.0)


def _chain(exc: BaseException | None) -> Iterator[BaseException]:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        yield exc
        exc = exc.__cause__ or exc.__context__


def error_code(exc: BaseException) -> tuple[str | None, int | None]:
    """(S3 error code, HTTP status) of the first botocore ClientError in the exception chain."""
    for e in _chain(exc):
        resp = getattr(e, "response", None)
        if isinstance(resp, dict) and "Error" in resp:
            status = resp.get("ResponseMetadata", {}).get("HTTPStatusCode")
            return resp["Error"].get("Code"), status
    return None, None


def is_precondition_failed(exc: BaseException) -> bool:
    """True if ``exc`` is a lost conditional write (HTTP 412 / PreconditionFailed)."""
    code, status = error_code(exc)
    return code in PRECONDITION_CODES or status == 412 or isinstance(exc, FileExistsError)


def classify(exc: BaseException) -> str:
    """'missing', 'exists', 'transient' or 'permanent' for one exception raised by a storage client."""
    code, status = error_code(exc)
    if code in PRECONDITION_CODES or status == 412:
        return "exists"
    if code in TRANSIENT_CODES or (status is not None and (status >= 500 or status in (408, 429))):
        return "transient"
    if code in PERMANENT_CODES or status in (401, 403):
        return "permanent"
    for e in _chain(exc):
        name = type(e).__name__
        if isinstance(e, (ConnectionError, TimeoutError, socket.timeout)):
            return "transient"
        if name in ("EndpointConnectionError", "ConnectionClosedError", "ReadTimeoutError", "ConnectTimeoutError",
                    "ClientOSError", "ServerDisconnectedError", "ClientConnectorError", "ClientPayloadError",
                    "IncompleteRead", "ResponseStreamingError", "FSTimeoutError", "ProtocolError"):
            return "transient"
        if isinstance(e, OSError) and e.errno in (errno.ECONNRESET, errno.ECONNREFUSED, errno.ETIMEDOUT, errno.EPIPE):
            return "transient"
    if isinstance(exc, FileNotFoundError):
        return "missing"
    if isinstance(exc, FileExistsError):
        return "exists"
    return "permanent"


def backoff(attempt: int, base: float, cap: float, rng: random.Random | None = None) -> float:
    """Full-jitter delay in seconds before retry ``attempt`` (0-based): U(0, min(cap, base·2^attempt))."""
    return (rng or random).uniform(0.0, min(cap, base * (2 ** attempt)))


def with_retries(fn: Callable[[], T], uri: str, what: str,
                 policy: tuple[float, float, float] = DEFAULT_POLICY) -> T:
    """Run ``fn``, retrying transient faults with backoff+jitter until ``policy``'s budget is spent.

    Raises:
        FileNotFoundError: the object does not exist (passed through).
        FileExistsError / the client's precondition error: a lost conditional write (passed through).
        StorageError: a permanent fault, or a transient one that outlived the budget; its message
            names ``uri`` and the cause and never carries credentials."""
    base, cap, budget = policy
    deadline = time.monotonic() + budget
    attempt = 0
    while True:
        try:
            return fn()
        except StorageError:
            raise
        except Exception as e:  # noqa: BLE001 - classified below
            kind = classify(e)
            if kind in ("missing", "exists"):
                raise
            if kind == "transient" and time.monotonic() < deadline:
                time.sleep(min(backoff(attempt, base, cap), max(0.0, deadline - time.monotonic())))
                attempt += 1
                continue
            raise StorageError(f"{what} {uri}: {describe(e)}"
                               + (f" (gave up after {attempt + 1} attempts)" if kind == "transient" else "")) from None


def describe(exc: BaseException) -> str:
    """A one-line cause without secrets: the S3 error code or the exception's type and message."""
    code, status = error_code(exc)
    if code:
        denied = "access denied: check the credentials (AWS_ACCESS_KEY_ID/AWS_SECRET_ACCESS_KEY, AWS_PROFILE or " \
                 "storage_options key/secret) and the bucket's policy"
        msg = {"NoSuchBucket": "no such bucket", "AccessDenied": denied, "403": denied,
               "InvalidAccessKeyId": "access denied: unknown access key id (check AWS_ACCESS_KEY_ID / "
                                     "storage_options key)",
               "SignatureDoesNotMatch": "access denied: the secret key does not match the access key id "
                                        "(check AWS_SECRET_ACCESS_KEY / storage_options secret)",
               "401": "not authenticated: credentials are missing or expired",
               "404": "not found", "NoSuchKey": "not found"}.get(code, code)
        return f"{msg} (HTTP {status})" if status else msg
    text = str(exc).splitlines()[0] if str(exc) else ""
    if isinstance(exc, PermissionError):
        return f"access denied ({text})" if text else "access denied"
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
