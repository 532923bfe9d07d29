"""The CLI surface of DESIGN.md's public interface: every command is registered and its --help runs."""
from __future__ import annotations

import pytest
from typer.main import get_command
from typer.testing import CliRunner

from actlake.cli import app

COMMANDS = ["extract", "info", "verify", "hooks", "vacuum", "serve", "submit", "jobs", "query"]
QUERY = ["topk", "bottomk", "intervals", "stats", "fetch", "correlate", "pca"]
JOBS = ["list", "status", "logs", "cancel", "wait"]


def test_every_public_command_is_registered():
    group = get_command(app)
    names = set(group.list_commands(None))  # type: ignore[arg-type]
    assert set(COMMANDS) <= names, sorted(set(COMMANDS) - names)
    assert set(QUERY) <= set(group.get_command(None, "query").list_commands(None))  # type: ignore[union-attr]
    assert set(JOBS) <= set(group.get_command(None, "jobs").list_commands(None))  # type: ignore[union-attr]


@pytest.mark.parametrize("argv", [[c] for c in COMMANDS if c not in ("query", "jobs")]
                         + [["query", q] for q in QUERY] + [["jobs", j] for j in JOBS])
def test_help_runs_and_shows_defaults_or_arguments(argv):
    res = CliRunner().invoke(app, [*argv, "--help"], env={"COLUMNS": "200"})
    assert res.exit_code == 0, res.output
    assert "Usage:" in res.output and "--help" in res.output
