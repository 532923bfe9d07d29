"""``actlake submit`` and ``actlake jobs list|status|logs|cancel|wait`` (Ray Jobs API).

The address comes from ``--address`` or ``RAY_ADDRESS`` (as ``ray job`` takes it); a token from
``--token`` or Ray's own lookup (``RAY_AUTH_MODE=token`` + ``RAY_AUTH_TOKEN`` / ``~/.ray/auth_token``)."""
from __future__ import annotations

import json
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

err = Console(stderr=True)
out = Console()

ADDRESS = typer.Option(None, "--address", envvar="RAY_ADDRESS",
                       help="Ray Jobs API address, e.g. http://HEAD:8265 (default: $RAY_ADDRESS)")
TOKEN = typer.Option(None, "--token", help="Ray auth token (default: Ray's RAY_AUTH_TOKEN / ~/.ray/auth_token)")

jobs_app = typer.Typer(no_args_is_help=True, rich_markup_mode=None, help="Manage extraction jobs submitted to a Ray cluster.")


def submit(
    spec: str = typer.Argument(..., help="job YAML/JSON file"),
    address: Optional[str] = ADDRESS,
    wait: bool = typer.Option(False, "--wait", help="block until the job ends; exit 1 unless it succeeded"),
    working_dir: Optional[str] = typer.Option(None, "--working-dir", help="local folder shipped with the job"),
    token: Optional[str] = TOKEN,
    python: str = typer.Option("python", help="interpreter on the cluster that has actlake installed"),
    detached: bool = typer.Option(False, "--detached", help="coordinator outlives the driver"),
    lease_s: float = typer.Option(600.0, help="seconds before a unit held by a silent worker is re-queued"),
) -> None:
    """Submit an extraction job to a Ray cluster; prints the job id.  Resubmitting the same spec resumes."""
    from actlake.service.submit import submit as do_submit

    args = f"--lease-s {lease_s}" + (" --detached" if detached else "")
    h = do_submit(spec, address, working_dir=working_dir, token=token, python=python, driver_args=args)
    out.print(h.job_id, highlight=False)
    err.print(f"follow it with: actlake jobs logs --follow {h.job_id}", highlight=False)
    if wait:
        _finish(h)


def _finish(h) -> None:
    state = h.wait()
    err.print(f"{h.job_id}: {state}", highlight=False)
    if state != "SUCCEEDED":
        err.print(h.logs()[-2000:], highlight=False, markup=False)
        raise typer.Exit(1)


@jobs_app.command("list")
def list_cmd(address: Optional[str] = ADDRESS, token: Optional[str] = TOKEN) -> None:
    """actlake jobs on the cluster, newest first."""
    from actlake.service.submit import list_jobs

    t = Table(show_header=True)
    for c in ("job id", "state", "out"):
        t.add_column(c, overflow="fold")  # ids and paths wrap on narrow terminals, never "…"
    for r in list_jobs(address, token):
        t.add_row(r["job_id"], r["state"], r["out"])
    out.print(t)


@jobs_app.command()
def status(job_id: str = typer.Argument(..., help="job id from actlake submit"), address: Optional[str] = ADDRESS,
           token: Optional[str] = TOKEN, as_json: bool = typer.Option(False, "--json", help="print JSON")) -> None:
    """State, tokens done/total, tokens/s, units done/leased/left, workers per node, errors, ETA."""
    from actlake.service.submit import attach

    s = attach(job_id, address, token).status()
    if as_json:
        out.print_json(json.dumps(s, default=str))
        return
    total = s.get("tokens_total")
    left = s.get("units_left")
    eta = s.get("eta_s")
    lines = [
        f"job       {s['job_id']}  [{s['state']}]",
        f"out       {s.get('out')}",
        f"{s.get('unit', 'tokens'):<9} {s.get('tokens_done', 0):,}" + (f" / {total:,}" if total else ""),
        f"rate      {s.get('tokens_per_s', 0):,.0f}/s" + (f", eta {eta:.0f}s" if eta is not None else ""),
        f"units     {s.get('units_done', 0)} done / {s.get('units_leased', 0)} leased / "
        f"{'?' if left is None else left} left",
        "workers   " + (", ".join(f"{k}: {v}" for k, v in sorted(s.get("workers_per_node", {}).items())) or "-"),
        f"errors    {len(s.get('errors', []))}",
    ]
    lines += [f"  {e}" for e in s.get("errors", [])]
    if s.get("message"):
        lines.append(f"message   {s['message']}")
    out.print("\n".join(lines), highlight=False, markup=False)


@jobs_app.command()
def logs(job_id: str = typer.Argument(..., help="job id"), address: Optional[str] = ADDRESS,
         token: Optional[str] = TOKEN, follow: bool = typer.Option(False, "--follow", "-f", help="stream until the job ends")) -> None:
    """The job driver's output (progress lines, errors)."""
    from actlake.service.submit import attach

    h = attach(job_id, address, token)
    if follow:
        for chunk in h.follow():
            out.print(chunk, end="", highlight=False, markup=False)
    else:
        out.print(h.logs(), end="", highlight=False, markup=False)


@jobs_app.command()
def cancel(job_id: str = typer.Argument(..., help="job id"), address: Optional[str] = ADDRESS,
           token: Optional[str] = TOKEN) -> None:
    """Stop a job; committed fragments stay and resubmitting the same spec resumes."""
    from actlake.service.submit import attach

    stopped = attach(job_id, address, token).cancel()
    out.print(f"{job_id}: {'stop requested' if stopped else 'already finished'}", highlight=False)


@jobs_app.command("wait")
def wait_cmd(job_id: str = typer.Argument(..., help="job id"), address: Optional[str] = ADDRESS,
             token: Optional[str] = TOKEN,
             timeout: Optional[float] = typer.Option(None, help="seconds to wait at most")) -> None:
    """Block until the job ends; exit 0 if it succeeded, 1 otherwise."""
    from actlake.service.submit import attach

    h = attach(job_id, address, token)
    state = h.wait(timeout)
    out.print(f"{job_id}: {state}", highlight=False)
    if state != "SUCCEEDED":
        raise typer.Exit(1)


def register(app: typer.Typer) -> None:
    """Add ``submit`` and the ``jobs`` group to the main app."""
    app.command("submit")(submit)
    app.add_typer(jobs_app, name="jobs")
