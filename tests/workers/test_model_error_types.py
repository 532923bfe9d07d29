"""Issue 7 B (typed errors): model and device problems raise the typed errors of schemas/errors.py
(ModelError / JobSpecError, still ActlakeError and ValueError), not a bare ActlakeError."""
from __future__ import annotations

import pytest

from actlake.schemas.errors import ActlakeError, JobSpecError, ModelError
from actlake.workers.models import pick_device, resolve_model_dir


def test_model_problems_are_model_errors(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file").write_text("x")
    for model in (str(tmp_path / "empty"), str(tmp_path / "missing"), str(tmp_path / "file"),
                  "no-such-org/no-such-model-xyz"):
        with pytest.raises(ModelError) as e:
            resolve_model_dir(model)
        assert isinstance(e.value, ActlakeError) and isinstance(e.value, ValueError)


def test_bad_device_is_a_job_spec_error():
    with pytest.raises(JobSpecError):
        pick_device("warp-drive:0")
