"""`import actlake` and the CLI's light commands load only what they use.

Each case runs in a fresh interpreter (a subprocess): torch alone costs ~2 s of CPU before a command can
print anything, so `actlake --help`, `actlake info`, `actlake verify` must not import it (nor Ray,
transformers, matplotlib or Arrow Flight); the public names still resolve, lazily."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
from stores import make_store

import actlake

HEAVY = ("torch", "ray", "transformers", "matplotlib", "pyarrow.flight")
# --help pages need none of the data stack either
HEAVY_FOR_HELP = (*HEAVY, "numpy", "pyarrow", "zarr")

# Runs each `actlake ARGS...` in turn in one interpreter through the console entry point, then prints
# which heavy modules were loaded (the union over the commands is empty iff each one's is).
DRIVER = """
import json, sys
heavy, commands = sys.argv[1].split(","), json.loads(sys.argv[2])
from actlake.cli import main
codes = []
for args in commands:
    sys.argv = ["actlake", *args]
    try:
        main()
        codes.append(0)
    except SystemExit as e:
        codes.append(e.code or 0)
print(json.dumps({"codes": codes, "loaded": [m for m in heavy if m in sys.modules]}), file=sys.stderr)
"""


def _loaded(commands: list[list[str]], heavy: tuple[str, ...]) -> list[str]:
    r = subprocess.run([sys.executable, "-c", DRIVER, ",".join(heavy), json.dumps(commands)], capture_output=True,
                       text=True, timeout=120)
    report = json.loads(r.stderr.strip().splitlines()[-1])
    assert report["codes"] == [0] * len(commands), r.stderr
    return report["loaded"]


def test_import_actlake_loads_no_torch():
    code = ("import actlake, sys; assert 'torch' not in sys.modules, 'torch'; "
            f"print(sorted(m for m in {HEAVY_FOR_HELP!r} if m in sys.modules))")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "[]"


def test_help_loads_nothing_heavy():
    helps = [["--help"], ["extract", "--help"], ["info", "--help"], ["verify", "--help"], ["hooks", "--help"],
             ["query", "--help"], ["query", "topk", "--help"], ["query", "pca", "--help"], ["serve", "--help"],
             ["jobs", "--help"], ["browse", "--help"], ["vacuum", "--help"]]
    assert _loaded(helps, HEAVY_FOR_HELP) == []


def test_info_and_verify_load_no_torch(tmp_path):
    uri = make_store(str(tmp_path / "ds"), fragments=(40, 24))
    assert _loaded([["info", uri], ["info", "--json", uri], ["verify", uri]], HEAVY) == []


def test_public_names_resolve_lazily():
    from actlake import ActivationDataset, ActlakeError, JobHandle, JobSpec, errors, open_dataset
    from actlake.client.dataset import ActivationDataset as DatasetClass
    from actlake.client.dataset import open_dataset as open_fn
    from actlake.schemas import errors as errors_module
    from actlake.schemas.job import JobSpec as JobSpecClass
    from actlake.service.submit import JobHandle as JobHandleClass

    assert open_dataset is open_fn and ActivationDataset is DatasetClass and JobSpec is JobSpecClass
    assert errors is errors_module and ActlakeError is errors_module.ActlakeError and JobHandle is JobHandleClass
    assert set(actlake.__all__) <= set(dir(actlake))
    with pytest.raises(AttributeError):
        actlake.no_such_name  # noqa: B018
