"""URI → backend."""
from __future__ import annotations

import os
from typing import Any

import fsspec
from fsspec.implementations.local import LocalFileSystem

from actlake.schemas.errors import StorageError, StoreLocationError
from actlake.store.backends.base import ObjectStore
from actlake.store.backends.fsspec import FsspecBackend
from actlake.store.backends.local import LocalBackend


def open_backend(uri: str, storage_options: dict[str, Any] | None = None, probe: bool = True) -> ObjectStore:
    """See ``_open``; with ``cache_dir`` (and ``cache_bytes``, default 16 GiB) in ``storage_options``,
    a remote store is wrapped in a bounded local read cache (``cache.CachedBackend``)."""
    opts = dict(storage_options or {})
    cache_dir, cache_bytes = opts.pop("cache_dir", None), opts.pop("cache_bytes", 16 << 30)
    backend = _open(uri, opts, probe)
    if cache_dir and backend.local_root is None:
        from actlake.store.backends.cache import CachedBackend

        return CachedBackend(backend, str(cache_dir), int(cache_bytes))
    return backend


def _open(uri: str, storage_options: dict[str, Any], probe: bool) -> ObjectStore:
    """Resolve a path or fsspec URL (``s3://``, ``gs://``, ``memory://``, ``file://``) to a backend.

    ``storage_options`` go to the fsspec filesystem, except ``cache_dir``/``cache_bytes``,
    ``atomic_create`` (S3, GCS: set False for servers that ignore conditional writes) and
    ``direct_reads`` (S3 only: False reads chunk ranges through s3fs instead of ``s3_reads.py``).  With
    ``probe``, S3 checks the bucket once (a few seconds at most) so a bad endpoint, a missing
    bucket or denied access fail at once.

    Raises:
        StoreLocationError: empty URI or unknown protocol.
        StorageError: the store cannot be reached or is not accessible (message names ``uri``)."""
    if not uri:
        raise StoreLocationError("empty dataset URI")
    opts = dict(storage_options or {})
    atomic = bool(opts.pop("atomic_create", True))
    direct = bool(opts.pop("direct_reads", True))
    protocol = uri.split("://", 1)[0] if "://" in uri else "file"
    if protocol in ("s3", "s3a"):
        from actlake.store.backends.s3 import S3Backend, make_s3fs

        try:
            fs = make_s3fs(opts)
        except ImportError as e:
            raise StoreLocationError(f"cannot open {uri!r}: {e} (pip install s3fs)") from None
        root = fs._strip_protocol(uri).rstrip("/")
        if not root:
            raise StoreLocationError(f"cannot open {uri!r}: no bucket in the URI")
        s3 = S3Backend(fs, root, uri, atomic_create=atomic, storage_options=opts if direct else None)
        if probe:
            s3.probe()
        return s3
    try:
        fs, root = fsspec.core.url_to_fs(uri, **opts)
    except (ImportError, ValueError) as e:
        raise StoreLocationError(f"cannot open {uri!r}: {e}") from None
    except OSError as e:
        raise StorageError(f"cannot open {uri}: {type(e).__name__}: {e}") from None
    if isinstance(fs, LocalFileSystem):
        return LocalBackend(os.path.abspath(root), uri)
    if protocol in ("gs", "gcs"):
        from actlake.store.backends.s3 import GCSBackend

        return GCSBackend(fs, root, uri, atomic_create=atomic)
    return FsspecBackend(fs, root, uri)
