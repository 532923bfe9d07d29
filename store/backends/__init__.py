"""Object-store backends behind one small protocol (``base.ObjectStore``).

``open_backend(uri, storage_options)`` picks the implementation: a plain path or ``file://`` →
``LocalBackend`` (hard-link atomic create, a local root for ``preadv``); ``s3://`` → ``S3Backend``
(conditional PUT ``If-None-Match: *``); ``gs://`` → ``GCSBackend`` (``if_generation_match=0``);
anything else fsspec knows (``memory://``, ``az://``, ...) → ``FsspecBackend`` (no atomic create)."""
from actlake.store.backends.base import ObjectInfo, ObjectStore
from actlake.store.backends.open import open_backend

__all__ = ["ObjectStore", "ObjectInfo", "open_backend"]
