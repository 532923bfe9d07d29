"""Reading and writing ``actlake.json``."""
from __future__ import annotations

import json

from pydantic import ValidationError

from actlake.schemas.errors import (
    ActlakeError,
    NotADatasetError,
    StorageError,
    StoreDamagedError,
    format_validation_error,
)
from actlake.schemas.manifest import FORMAT_VERSION, READABLE_VERSION, Manifest
from actlake.store import layout
from actlake.store.fs import StoreFS


def read_manifest(store: StoreFS) -> Manifest:
    try:
        raw = store.read_bytes(layout.MANIFEST)
    except (FileNotFoundError, NotADirectoryError, IsADirectoryError):
        raise NotADatasetError(f"not an actlake dataset (no {layout.MANIFEST}): {store.uri}") from None
    except PermissionError as e:
        raise StorageError(f"cannot read {store.uri}: {e}") from None
    try:
        data = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise StoreDamagedError(store.path(layout.MANIFEST), "not valid JSON") from None
    if isinstance(data, dict) and data.get("format_version", FORMAT_VERSION) > READABLE_VERSION:
        raise ActlakeError(
            f"{store.uri} uses format version {data['format_version']}; this actlake reads <= {READABLE_VERSION}"
        )
    try:
        return Manifest.model_validate(data)
    except ValidationError as e:
        raise StoreDamagedError(store.path(layout.MANIFEST), f"bad manifest: {format_validation_error(e)}") from None


def write_manifest(store: StoreFS, manifest: Manifest) -> None:
    store.write_bytes(layout.MANIFEST, manifest.model_dump_json(indent=2).encode())
