"""The ``actlake`` command line (typer).  Every user-facing failure is one line and a non-zero exit."""
from __future__ import annotations

import json
import sys
from typing import Optional

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False,
                  help="actlake: extract model activations into sharded Zarr v3 stores and stream them.")
err = Console(stderr=True)
out = Console()

SNIPPET = """import actlake
ds = actlake.open_dataset("{uri}")
for batch in ds.batches(batch_size=4096, seed=0):  # {{hook: tensor[4096, d]}}"""


@app.command()
def extract(
    config: Optional[str] = typer.Option(None, "--config", "-c", help="job YAML/JSON file"),
    model: Optional[str] = typer.Option(None, help="HF id (offline cache), local model dir, or smollm2-135m"),
    hooks: Optional[str] = typer.Option(None, help="comma-separated module paths, '*' wildcards, ':input' suffix"),
    data: Optional[str] = typer.Option(None, help="text file/dir/glob, .jsonl, .parquet, image folder, or 'stdlib'"),
    out_uri: Optional[str] = typer.Option(None, "--out", help="dataset URI (path, s3://, gs://)"),
    max_tokens: Optional[int] = typer.Option(None, help="model input tokens to process (text)"),
    max_images: Optional[int] = typer.Option(None, help="images to process (vision)"),
    context_len: Optional[int] = typer.Option(None, help="tokens per model context"),
    batch_size: Optional[int] = typer.Option(None, help="contexts or images per forward pass"),
    dtype: Optional[str] = typer.Option(None, help="storage dtype: bf16, fp16 or fp32"),
    compression: Optional[str] = typer.Option(None, help="none or zstd (byte-shuffle + zstd)"),
    fragment_tokens: Optional[int] = typer.Option(None, help="rows per fragment (approximately)"),
    chunk_rows: Optional[int] = typer.Option(None, help="rows per zarr chunk"),
    num_workers: Optional[int] = typer.Option(None, help="model workers (default: one per GPU, else 1)"),
    device: Optional[str] = typer.Option(None, help="auto, cpu, cuda, cuda:1 ..."),
    address: Optional[str] = typer.Option(None, help="Ray cluster address; default: embedded local Ray"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
) -> None:
    """Extract activations (no arguments: the built-in demo).  Re-running an interrupted job resumes it."""
    from actlake.schemas.job import load_job
    from actlake.service.runner import run_job

    is_demo = config is None and all(v is None for v in (model, hooks, data, out_uri))
    job = load_job(
        config, model=model, hooks=hooks, data=data, out=out_uri, max_tokens=max_tokens, max_images=max_images,
        context_len=context_len, batch_size=batch_size, dtype=dtype, compression=compression,
        fragment_tokens=fragment_tokens, chunk_rows=chunk_rows, num_workers=num_workers, device=device,
        progress=None if progress else False,
    )
    if is_demo:
        err.print(f"[bold]demo[/]: {job.model} on the Python standard library sources "
                  f"({job.max_tokens:,} tokens, hooks {', '.join(h.name for h in job.hooks)}) → {job.out}")
    uri = run_job(job, address=address)
    _print_info(uri)
    out.print("\nStream it:\n" + SNIPPET.format(uri=uri), highlight=False)


def _print_info(uri: str) -> None:
    import actlake

    ds = actlake.open_dataset(uri)
    m = ds.manifest
    t = Table(title=f"{uri}  ({m.status})", show_header=True)
    for c in ("hook", "shape", "dtype", "codec", "size"):
        t.add_column(c)
    for name, h in m.hooks.items():
        t.add_row(name, "×".join(map(str, h.shape)), h.dtype, h.codec, _human(h.row_bytes * ds.num_rows))
    out.print(t)
    out.print(f"model {m.model.id} ({m.model.architecture}, {m.model.kind}); rows {ds.num_rows:,}; "
              f"fragments {len(ds.snapshot.fragments)}; chunk rows {m.chunk_rows}; "
              f"write-time row shuffle {'on' if m.row_shuffle else 'off'}")


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@app.command()
def info(uri: str = typer.Argument(..., help="dataset URI"),
         as_json: bool = typer.Option(False, "--json", help="print the manifest and row count as JSON")) -> None:
    """Show what a dataset holds: model, hooks, rows, fragments."""
    if as_json:
        import actlake

        ds = actlake.open_dataset(uri)
        d = ds.manifest.model_dump(mode="json")
        d["committed_rows"], d["committed_fragments"] = ds.num_rows, len(ds.snapshot.fragments)
        out.print_json(json.dumps(d))
    else:
        _print_info(uri)


@app.command()
def verify(uri: str = typer.Argument(..., help="dataset URI")) -> None:
    """Check every committed file against its checksum and the job's completeness; exit 1 on damage."""
    from rich.progress import Progress

    from actlake.store.commitlog import CommitLog
    from actlake.store.fs import open_store
    from actlake.store.verify import verify_store

    store = open_store(uri)
    try:
        n = len(CommitLog(store).snapshot().fragments)
    except Exception:
        n = None
    with Progress(console=err, transient=True) as bar:
        task = bar.add_task("verify", total=n)
        rep = verify_store(store, on_fragment=lambda k: bar.advance(task, k))
    for e in rep.errors[:50]:
        err.print(f"[red]damaged[/]: {e}", highlight=False)
    if len(rep.errors) > 50:
        err.print(f"... and {len(rep.errors) - 50} more problems")
    state = "complete" if rep.complete else "incomplete (job not finished)"
    msg = f"{rep.fragments} fragments, {rep.files} files, {_human(rep.bytes)}, {rep.rows:,} rows; {state}"
    if rep.ok:
        out.print(f"[green]ok[/]: {msg}")
    else:
        err.print(f"[red]verify failed[/]: {len(rep.errors)} problem(s); {msg}")
        raise typer.Exit(1)


from actlake.cli_query import app as _query_app  # noqa: E402

app.add_typer(_query_app, name="query")
from actlake.cli_browse import browse as _browse  # noqa: E402

app.command("browse")(_browse)


def main() -> None:
    from actlake.schemas.errors import ActlakeError

    try:
        app()
    except ActlakeError as e:
        err.print(f"[red]error[/]: {e}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
