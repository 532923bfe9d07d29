"""S3 and S3-compatible servers (via s3fs): atomic create by conditional PUT ``If-None-Match: *``.

AWS S3 has honoured ``If-None-Match: *`` on PutObject and CompleteMultipartUpload since August 2024
(botocore ≥ 1.35.20 sends it; s3fs exposes it as ``pipe_file(..., mode="create")``).  A losing
writer gets HTTP 412 PreconditionFailed; a 409 ConditionalRequestConflict (two in flight) is retried.
SeaweedFS ≥ 4 honours it too (tests/store/test_backend_conformance.py races threads and processes
against a real server).  Servers that silently ignore the header would make ``create`` unsafe: pass
``storage_options={"atomic_create": False}`` for those and the commit log falls back to a writer
lease (see docs/decisions.md).

Credentials come from the standard AWS chain (env vars, ``AWS_PROFILE``, config files) or from
``storage_options`` (``key``/``secret``/``token``); a custom endpoint from ``AWS_ENDPOINT_URL`` or
``storage_options={"endpoint_url": ...}``.  None of them is ever stored or printed: only ``uri``."""
from __future__ import annotations

import threading
from typing import Any

from actlake.schemas.errors import StorageError
from actlake.store.backends.fsspec import FsspecBackend
from actlake.store.backends.retry import PROBE_POLICY, is_precondition_failed, with_retries

# botocore and s3fs retry nothing themselves: retry.py is the one retry loop
_CLIENT_DEFAULTS = {"connect_timeout": 5, "read_timeout": 60, "retries": {"max_attempts": 1, "mode": "standard"}}


def make_s3fs(storage_options: dict[str, Any]) -> Any:
    """An ``s3fs.S3FileSystem`` with client-side retries off, finite timeouts and no listing cache."""
    import s3fs

    opts = dict(storage_options)
    # no listing cache: the commit log and vacuum must see objects other writers just created
    opts.setdefault("use_listings_cache", False)
    cfg = {**_CLIENT_DEFAULTS, **opts.pop("config_kwargs", {})}
    fs = s3fs.S3FileSystem(config_kwargs=cfg, **opts)
    fs.retries = 1
    return fs


class S3Backend(FsspecBackend):
    """An S3 bucket prefix.  ``create`` is a conditional PUT (exactly one of N racing creators wins);
    ``read_into`` is a ranged GET read straight into the caller's buffer (``s3_reads.py``) by the
    calling thread, so a pool of I/O threads gives as many GETs in flight."""

    def __init__(self, fs: Any, root: str, uri: str, atomic_create: bool = True,
                 storage_options: dict[str, Any] | None = None):
        super().__init__(fs, root, uri)
        self._atomic = atomic_create
        # options for the direct-read client (s3_reads.py); None: read through s3fs
        self._options = None if storage_options is None else dict(storage_options)
        self._client: Any = None
        self._client_lock = threading.Lock()

    def __getstate__(self) -> dict:  # the sync client (sockets, locks) is rebuilt where unpickled
        state = dict(self.__dict__)
        state["_client"], state["_client_lock"] = None, None
        return state

    def __setstate__(self, state: dict) -> None:
        vars(self).update(state)
        self._client_lock = threading.Lock()

    @property
    def supports_atomic_create(self) -> bool:
        return self._atomic

    def _sync_client(self) -> Any:
        """The botocore client for direct reads (built once), or False where s3fs must read."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    from actlake.store.backends.s3_reads import make_sync_client

                    self._client = (make_sync_client(self._options, _CLIENT_DEFAULTS) if self._options is not None
                                    else None) or False
        return self._client

    def read_into(self, key: str, dst: memoryview, start: int = 0) -> int | None:
        if not len(dst):
            return None
        client = self._sync_client()
        if client is False:
            return super().read_into(key, dst, start)
        from actlake.store.backends.s3_reads import get_into

        bucket, _, obj = self.path(key).partition("/")
        return self._call(lambda: get_into(client, bucket, obj, dst, start), "cannot read", key)

    def create(self, key: str, data: bytes) -> bool:
        if not self._atomic:
            return super().create(key, data)

        def put() -> bool:
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
                return True
            except Exception as e:
                if is_precondition_failed(e):
                    return False
                raise
        return self._call(put, "cannot create", key)

    def probe(self) -> None:
        """Fail fast (seconds) on a bad endpoint, no such bucket, or denied access.

        Raises:
            StorageError: naming the URI and the cause."""
        bucket = self.root.split("/", 1)[0]

        def head() -> None:
            self.fs.call_s3("head_bucket", Bucket=bucket)
        try:
            with_retries(head, self.uri, "cannot open", PROBE_POLICY)
        except FileNotFoundError:
            raise StorageError(f"cannot open {self.uri}: no such bucket {bucket!r}") from None


class GCSBackend(FsspecBackend):
    """Google Cloud Storage via gcsfs: ``create`` writes with ``ifGenerationMatch=0``
    (gcsfs ``pipe_file(..., mode="create")``).  Not exercised by the test suite: the PyPI GCS
    emulator ignores preconditions (docs/decisions.md); ``atomic_create=False`` falls back to
    check-then-put under the commit log's writer lease."""

    def __init__(self, fs: Any, root: str, uri: str, atomic_create: bool = True):
        super().__init__(fs, root, uri)
        self._atomic = atomic_create

    @property
    def supports_atomic_create(self) -> bool:
        return self._atomic

    def create(self, key: str, data: bytes) -> bool:
        if not self._atomic:
            return super().create(key, data)

        def put() -> bool:
            try:
                self.fs.pipe_file(self.path(key), data, mode="create")
                return True
            except Exception as e:
                if is_precondition_failed(e) or "412" in str(e) or "conditionNotMet" in str(e):
                    return False
                raise
        return self._call(put, "cannot create", key)
