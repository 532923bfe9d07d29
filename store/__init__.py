"""The dataset format: manifest, commit log, fragments (zarr v3 + parquet), checksums.

Shared by the writers (workers/) and the readers (client/); everything goes through fsspec so the
same code serves local disks and object stores."""
from actlake.store.commitlog import CommitLog, Snapshot
from actlake.store.fragment import FragmentReader, write_fragment
from actlake.store.fs import StoreFS, open_store
from actlake.store.manifest_io import read_manifest, write_manifest
from actlake.store.verify import VerifyReport, verify_store

__all__ = [
    "StoreFS", "open_store", "CommitLog", "Snapshot", "read_manifest", "write_manifest",
    "FragmentReader", "write_fragment", "verify_store", "VerifyReport",
]
