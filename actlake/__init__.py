"""actlake: distributed activation datasets for interpretability research.

    import actlake
    ds = actlake.open_dataset("./actlake-data/demo")
    for batch in ds.batches(4096, seed=0):  # {hook: tensor[4096, d]}
        ...
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:  # what type checkers see; at run time these load on first use (``__getattr__`` below)
    from actlake.client.dataset import ActivationDataset, open_dataset
    from actlake.schemas import errors
    from actlake.schemas.errors import ActlakeError
    from actlake.schemas.job import JobSpec
    from actlake.service.submit import JobHandle

# Public names loaded on first access, so that ``import actlake`` (and every ``actlake`` command, even
# ``--help``) does not pay for torch, zarr, pyarrow and pydantic before it needs them.
_LAZY = {
    "open_dataset": ("actlake.client.dataset", "open_dataset"),
    "ActivationDataset": ("actlake.client.dataset", "ActivationDataset"),
    "errors": ("actlake.schemas.errors", None),
    "ActlakeError": ("actlake.schemas.errors", "ActlakeError"),
    "JobSpec": ("actlake.schemas.job", "JobSpec"),
    "JobHandle": ("actlake.service.submit", "JobHandle"),
}


def extract(job: JobSpec | dict[str, Any] | str, address: str | None = None,
            storage_options: dict[str, Any] | None = None, overwrite: bool = False) -> str:
    """Run (or resume) an extraction job on Ray and return the dataset URI.

    ``job`` is a JobSpec, a dict of its fields, or a path to a YAML/JSON job file.  Without
    ``address`` a private single-node Ray cluster is started on a loopback address (never an existing
    one).  ``overwrite`` deletes an existing actlake job dataset at the output location first.

    Raises:
        JobSpecError: a bad job file or field.  StoreLocationError: the location holds something else.
        SourceError, ModelError, HookError: input the model cannot take, found before anything is written.
        Any other ActlakeError raised inside a worker, as its own type.
    """
    from actlake.schemas.job import load_job, parse_job
    from actlake.service.runner import run_job

    if isinstance(job, str):
        job = load_job(job)
    elif isinstance(job, dict):
        job = parse_job(job)
    return run_job(job, address=address, storage_options=storage_options, overwrite=overwrite)


def submit(job: JobSpec | dict[str, Any] | str, address: str | None = None, **kw: Any) -> JobHandle:
    """Submit an extraction job to a Ray cluster through the Ray Jobs API; returns a ``JobHandle``
    (``.status()``, ``.logs()``, ``.cancel()``, ``.wait()``).  Keyword options (``working_dir``,
    ``token``, ``wait``, ``python``, ``driver_args``, ``submission_id``) and the errors raised
    (JobSpecError, ClusterError) are documented in ``actlake.service.submit.submit``.  Imported lazily:
    a trainer that only reads datasets never loads the service layer."""
    from actlake.service.submit import submit as _submit

    return _submit(job, address, **kw)


def __getattr__(name: str) -> Any:
    """PEP 562: import a public name of ``_LAZY`` on first access and keep it as a module attribute."""
    if name not in _LAZY:
        raise AttributeError(f"module 'actlake' has no attribute {name!r}")
    import importlib

    module, attr = _LAZY[name]
    value = importlib.import_module(module)
    if attr is not None:
        value = getattr(value, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_LAZY})


def join(ds_a: ActivationDataset, ds_b: ActivationDataset, on_mismatch: str = "error",
         prefixes: tuple[str, str] = ("a/", "b/")) -> Any:
    """Two datasets aligned on identical tokens as one (hooks: the union); see ``actlake.client.join``.

    Raises AlignmentError naming the first differing row (e.g. a one-token shift), or on rows found
    on one side only unless ``on_mismatch="drop"``."""
    from actlake.client.join import join as _join

    return _join(ds_a, ds_b, on_mismatch, prefixes)  # type: ignore[arg-type]


__all__ = ["join", "open_dataset", "ActivationDataset", "extract", "submit", "JobHandle", "JobSpec", "ActlakeError",
           "errors", "__version__"]
