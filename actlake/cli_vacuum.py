"""``actlake vacuum``: delete attempt directories that were never committed."""
from __future__ import annotations

import re

import typer

from actlake.schemas.errors import JobSpecError

_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> float:
    """'90s', '30m', '1h', '2d' or plain seconds → seconds.  Raises JobSpecError on anything else."""
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd]?)\s*", text)
    if not m:
        raise JobSpecError(f"--older-than: expected a duration such as 90s, 30m, 1h or 2d, got {text!r}")
    return float(m.group(1)) * _UNITS[m.group(2) or "s"]


def vacuum(
    uri: str = typer.Argument(..., help="dataset URI (path, s3://, gs://, any fsspec URL)"),
    older_than: str = typer.Option("1h", "--older-than", help="only attempts whose newest file is older than this"),
    dry_run: bool = typer.Option(False, "--dry-run", help="list what would be deleted, delete nothing"),
) -> None:
    """Delete attempt directories no commit references (killed workers, retries).  Never touches files of
    a committed fragment; attempts younger than --older-than (a job still running) are kept."""
    from rich.console import Console

    from actlake.store.fs import open_store
    from actlake.store.vacuum import vacuum as run

    seconds = parse_duration(older_than)
    out = Console()
    found = run(open_store(uri), seconds, dry_run)
    for g in found:
        out.print(f"{'would delete' if dry_run else 'deleted'} {g.path} ({len(g.keys)} files, {g.bytes:,} B)",
                  highlight=False)
    total = sum(g.bytes for g in found)
    verb = "would free" if dry_run else "freed"
    out.print(f"{len(found)} uncommitted attempt(s); {verb} {total:,} B", highlight=False)
