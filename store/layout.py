"""Names of things inside a dataset root (see docs/format.md)."""
MANIFEST = "actlake.json"
COMMITS = "_commits"
LAST_CHECKPOINT = "_commits/_last_checkpoint.json"
FRAGMENTS = "fragments"
CHECKSUMS = "_checksums.json"
PROVENANCE = "provenance.parquet"
DOCUMENTS = "documents.parquet"  # doc_id, source, index, label of the fragment's documents
ACTS = "acts"  # zarr v3 group inside a fragment, one array per hook
CHECKPOINT_EVERY = 128  # commits between consolidated checkpoints


def commit_name(version: int) -> str:
    return f"{COMMITS}/{version:020d}.json"


def checkpoint_name(version: int) -> str:
    return f"{COMMITS}/{version:020d}.checkpoint.json"


def chunk_key(array: str, chunk: int, ndim: int) -> str:
    """zarr v3 default chunk key encoding ('/' separator) for a chunk along axis 0 only."""
    return f"{ACTS}/{array}/c/{chunk}" + "/0" * (ndim - 1)
WRITER_LEASE = "_commits/_writer_lease.json"  # single-writer lease on stores without atomic create
