"""Typed errors for every user-facing failure.

All derive from ``ActlakeError`` (the CLI prints any of them as one ``error:`` line and exits
non-zero); each also derives from the stdlib exception a Python caller would naturally catch, so
``except KeyError`` / ``except FileNotFoundError`` keep working (after zarr-python's ``errors.py``).
Tests match these types, never message text.

Hierarchy::

    ActlakeError
    ├── JobSpecError(ValueError)          a job spec / CLI flag combination that cannot run
    ├── SourceError(ValueError)           a source that is empty, unreadable or of the wrong kind
    ├── ModelError(ValueError)            a model that cannot be loaded or does not fit the job
    ├── HookError(KeyError)               a hook name the model (or the dataset) does not have
    ├── NotADatasetError(FileNotFoundError)  the URI holds no actlake dataset
    ├── StoreDamagedError(OSError)        bytes on storage disagree with the commit log / checksums
    ├── StoreLocationError(ValueError)    --out already holds something else
    ├── CommitConflictError               another writer owns the commit entry (after bounded retries)
    ├── NonFiniteError(ValueError)        inf/NaN activations under the default policy
    ├── StreamStateError(ValueError)      a state_dict that does not fit the stream it is loaded into
    ├── RowIdError(IndexError)            a row id out of range or not an integer
    ├── QueryError(ValueError)            a query argument that cannot run (named in the message)
    ├── StorageError(OSError)             permanent storage failure (no bucket, access denied, …)
    ├── ClusterError(RuntimeError)        Ray cluster / Jobs API unreachable or a job id unknown
    └── RemoteError(RuntimeError)         a Flight server refused or failed a request
"""
from __future__ import annotations

from pydantic import ValidationError


class ActlakeError(Exception):
    """An error whose message is meant for the user verbatim (bad input, damaged store, ...)."""


class JobSpecError(ActlakeError, ValueError):
    """A job spec or CLI flag combination that cannot run."""


class SourceError(ActlakeError, ValueError):
    """A data source that is empty, unreadable, or of the wrong kind for the model."""


class ModelError(ActlakeError, ValueError):
    """A model that cannot be loaded offline or does not fit the job (context length, modality)."""


class HookError(ActlakeError, KeyError):
    """A hook name that the model or the dataset does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


class NotADatasetError(ActlakeError, FileNotFoundError):
    """The URI does not hold an actlake dataset (missing, a plain file, or no manifest)."""


class StoreDamagedError(ActlakeError, OSError):
    """Stored bytes disagree with the commit log or the checksums.

    Args:
        path: the object (file/key) that is damaged.
        problem: what is wrong with it (missing, truncated, checksum mismatch, ...).
    """

    def __init__(self, path: str, problem: str):
        super().__init__(f"store is damaged: {path}: {problem}")
        self.path, self.problem = path, problem

    def __str__(self) -> str:
        return f"store is damaged: {self.path}: {self.problem}"

    def __reduce__(self):  # picklable across Ray workers
        return (type(self), (self.path, self.problem))


class StoreLocationError(ActlakeError, ValueError):
    """The output location already holds something that is not this job's dataset."""


class CommitConflictError(ActlakeError):
    """A commit entry could not be created: another writer owns it (after bounded retries)."""


class NonFiniteError(ActlakeError, ValueError):
    """Activations contain inf/NaN (from the model, or from a cast such as fp16 overflow)."""


class StreamStateError(ActlakeError, ValueError):
    """A ``state_dict`` that does not belong to the stream it is loaded into."""


class ArgumentError(ActlakeError, ValueError):
    """An argument of the read API that cannot run (a fraction where a whole number is meant, a
    batch size below 1, a rank outside [0, world_size), a sample larger than the dataset)."""


class RowIdError(ActlakeError, IndexError):
    """A row id that is out of range or not an integer."""


class QueryError(ActlakeError, ValueError):
    """A query argument that cannot run (unknown hook, unit out of range, bad direction, k <= 0)."""


class StorageError(ActlakeError, OSError):
    """A permanent storage failure: no such bucket, access denied, unreachable endpoint."""


class ClusterError(ActlakeError, RuntimeError):
    """A Ray cluster or Jobs API that cannot be reached, or a job id it does not know."""


class RemoteError(ActlakeError, RuntimeError):
    """A Flight server that refused (auth, unknown dataset) or failed a request."""


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """Collapse a pydantic error into one line that names the offending field(s)."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if x != "__root__") or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{loc}: {msg}")
    return "; ".join(parts)


class AlignmentError(QueryError):
    """Two datasets joined on identical tokens disagree: a token differs at the same provenance key
    (e.g. a one-token shift), keys repeat, or rows exist on one side only (``on_mismatch="error"``)."""
