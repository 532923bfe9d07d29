"""Issue 7 B17 (a garbled checkpoint JSON; errors name the file): a damaged commit-log checkpoint
or checkpoint pointer is a StoreDamagedError naming *that* file, from the API and as one ``error:``
line from the CLI."""
from __future__ import annotations

import os

import pytest
from stores import make_store
from test_bad_input import assert_one_error, run

import actlake
from actlake.schemas.errors import StoreDamagedError


@pytest.mark.parametrize("target", ["checkpoint", "pointer"])
@pytest.mark.parametrize("damage", [b"{garbled", b"", b"[1, 2]"])
def test_damaged_checkpoint_names_its_file(tmp_path, target, damage):
    uri = make_store(str(tmp_path / "s"), fragments=(30, 20, 10), chunk_rows=16)
    commits = os.path.join(uri, "_commits")
    names = os.listdir(commits)
    name = next(n for n in names if n.endswith(".checkpoint.json")) if target == "checkpoint" else "_last_checkpoint.json"
    path = os.path.join(commits, name)
    with open(path, "wb") as f:
        f.write(damage)
    with pytest.raises(StoreDamagedError) as e:
        actlake.open_dataset(uri)
    assert e.value.path.endswith(name), (e.value.path, name)
    if damage == b"":
        assert_one_error(run("info", uri), "damaged", name)
