"""actlake: distributed activation datasets for interpretability research.

    import actlake
    ds = actlake.open_dataset("./actlake-data/demo")
    for batch in ds.batches(4096, seed=0):  # {hook: tensor[4096, d]}
        ...
"""
from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

from actlake.client.dataset import ActivationDataset, open_dataset  # noqa: E402
from actlake.schemas import errors  # noqa: E402
from actlake.schemas.errors import ActlakeError  # noqa: E402
from actlake.schemas.job import JobSpec  # noqa: E402
from actlake.service.submit import JobHandle, submit  # noqa: E402


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


__all__ = ["open_dataset", "ActivationDataset", "extract", "submit", "JobHandle", "JobSpec", "ActlakeError", "errors", "__version__"]
