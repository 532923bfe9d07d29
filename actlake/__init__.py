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


def extract(job: "JobSpec | dict[str, Any] | str", address: str | None = None,
            storage_options: dict[str, Any] | None = None) -> str:
    """Run (or resume) an extraction job on Ray and return the dataset URI.

    ``job`` is a JobSpec, a dict of its fields, or a path to a YAML/JSON job file.  Without
    ``address`` an embedded single-node Ray cluster is started on a loopback address."""
    from actlake.schemas.job import load_job, parse_job
    from actlake.service.runner import run_job

    if isinstance(job, str):
        job = load_job(job)
    elif isinstance(job, dict):
        job = parse_job(job)
    return run_job(job, address=address, storage_options=storage_options)


__all__ = ["open_dataset", "ActivationDataset", "extract", "submit", "JobHandle", "JobSpec", "ActlakeError", "errors", "__version__"]
