"""Pydantic models: the single source of truth for job, hook, source, manifest and fragment shapes.

Imports nothing else of actlake, so every other layer can depend on it."""
from actlake.schemas.errors import (
    ActlakeError,
    ClusterError,
    CommitConflictError,
    HookError,
    JobSpecError,
    ModelError,
    NonFiniteError,
    NotADatasetError,
    QueryError,
    RemoteError,
    RowIdError,
    SourceError,
    StorageError,
    StoreDamagedError,
    StoreLocationError,
    StreamStateError,
    format_validation_error,
)
from actlake.schemas.fragment import Commit, FragmentRecord
from actlake.schemas.hooks import HookInfo, HookSpec, parse_hooks
from actlake.schemas.job import DEMO_JOB, JobSpec, load_job
from actlake.schemas.manifest import Manifest, ModelInfo, TokenizerInfo
from actlake.schemas.sources import SourceSpec

__all__ = [
    "HookSpec", "HookInfo", "parse_hooks", "SourceSpec", "JobSpec", "load_job", "DEMO_JOB",
    "Manifest", "ModelInfo", "TokenizerInfo", "FragmentRecord", "Commit", "ActlakeError", "ClusterError",
    "CommitConflictError", "HookError", "JobSpecError", "ModelError", "NonFiniteError", "NotADatasetError",
    "QueryError", "RemoteError", "RowIdError", "SourceError", "StorageError", "StoreDamagedError",
    "StoreLocationError", "StreamStateError",
    "format_validation_error",
]
