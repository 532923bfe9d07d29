"""The CUDA capture path (pinned staging, non-blocking device-to-host copies, one wait per unit) stores
the same rows in the same shuffled slots as the CPU path.  Runs only where torch sees a GPU."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from actlake.schemas.job import parse_job
from actlake.service.coordinator import generate_units
from actlake.workers.model_worker import ModelWorker

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_cuda_rows_equal_cpu_rows(tmp_path, tiny_gpt2, text_corpus):
    got = {}
    for device in ("cpu", "cuda"):
        job = parse_job({"model": str(tiny_gpt2), "hooks": ["transformer.h.1", "transformer.h.2.mlp"],
                         "data": str(text_corpus), "out": str(tmp_path / device), "context_len": 32,
                         "max_tokens": 600, "fragment_tokens": 256, "batch_size": 3, "dtype": "fp32",
                         "device": device, "progress": False})
        w = ModelWorker(job, "t")
        w.describe()
        units = list(generate_units(job, w.lm.tokenizer))
        assert len(units) > 1
        got[device] = [w.forward(u)[1:] for u in units]
    for (cpu_rows, cpu_prov), (gpu_rows, gpu_prov) in zip(got["cpu"], got["cuda"], strict=True):
        assert cpu_prov.equals(gpu_prov)
        for name, a in cpu_rows.items():
            np.testing.assert_allclose(gpu_rows[name], a, rtol=1e-4, atol=1e-4)
