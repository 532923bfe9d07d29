"""The ``actlake`` command line (typer).  Every user-facing failure is one line and a non-zero exit."""
from __future__ import annotations

import json
import sys

import typer
from rich.console import Console
from rich.table import Table

app = typer.Typer(add_completion=False, no_args_is_help=True, pretty_exceptions_enable=False, rich_markup_mode=None,
                  help="actlake: extract model activations into sharded Zarr v3 stores and stream them.")
err = Console(stderr=True)
out = Console()

DTYPE_SHORT = {"bfloat16": "bf16", "float16": "fp16", "float32": "fp32"}
# Flags that change how a job runs, not what it writes: giving only these still runs the demo.
RUNTIME_FLAGS = ("batch_size", "num_workers", "device", "progress")


def _default(field: str) -> str:
    """The JobSpec default of ``field`` as --help shows it (JobSpec is the single source of truth)."""
    from actlake.schemas.job import JobSpec

    v = JobSpec.model_fields[field].get_default(call_default_factory=True)
    if v is None:
        return "none"
    if isinstance(v, list):
        return ",".join(map(str, v)) or "none"
    return DTYPE_SHORT.get(str(v), str(v))


def snippet(uri: str, num_rows: int, hook: str | None = None) -> str:
    """A Python snippet that opens ``uri`` and reads one shuffled batch; runs as printed."""
    bs = 4096 if num_rows >= 4096 else max(1, 1 << max(0, num_rows.bit_length() - 1))
    comment = f"  # {{{hook!r}: tensor[{bs}, d], ...}}" if hook else ""
    return (f"import actlake\n"
            f"ds = actlake.open_dataset({json.dumps(uri)})\n"
            f"for batch in ds.batches(batch_size={bs}, seed=0):{comment}\n"
            f"    print({{k: tuple(v.shape) for k, v in batch.items()}})\n"
            f"    break\n")


@app.command()
def extract(
    config: str | None = typer.Option(None, "--config", "-c", help="job YAML/JSON file (same fields as the flags)",
                                         show_default="none"),
    model: str | None = typer.Option(None, help="HF id (offline cache), local model dir, or smollm2-135m",
                                        show_default="demo: smollm2-135m"),
    hooks: str | None = typer.Option(None, help="comma-separated module paths or TransformerLens names "
                                        "(blocks.6.hook_resid_post), '*' wildcards, ':input', kinds ':q' ':k' ':v' "
                                        "':scores' ':probs' ':pre' ':post' ... "
                                        "(docs/hooks.md; `actlake hooks MODEL` lists them)",
                                        show_default="demo hooks"),
    data: str | None = typer.Option(None, help="text file/dir/glob, .jsonl, .parquet, .arrow, a datasets "
                                       "save_to_disk folder, image folder, or 'stdlib' (columns: --text-field, "
                                       "--image-field, --label-field)",
                                       show_default="demo: stdlib"),
    out_uri: str | None = typer.Option(None, "--out", help="dataset URI (path, s3://, gs://)",
                                          show_default="demo: ./actlake-data/demo"),
    max_tokens: int | None = typer.Option(None, help="model input tokens to process (text); none = whole source",
                                             show_default=_default("max_tokens")),
    max_images: int | None = typer.Option(None, help="images to process (vision); none = whole source",
                                             show_default=_default("max_images")),
    context_len: int | None = typer.Option(None, help="tokens per model context (at most the model's positions)",
                                              show_default=_default("context_len")),
    batch_size: int | None = typer.Option(None, help="contexts or images per forward pass",
                                             show_default=_default("batch_size")),
    dtype: str | None = typer.Option(None, help="storage dtype: bf16, fp16 or fp32", show_default=_default("dtype")),
    compression: str | None = typer.Option(None, help="none or zstd (byte-shuffle + zstd)",
                                              show_default=_default("compression")),
    fragment_tokens: int | None = typer.Option(
        None, help="model input tokens per fragment, approximately (a fragment's rows are the tokens kept from them)",
        show_default=_default("fragment_tokens")),
    chunk_rows: int | None = typer.Option(None, help="rows per zarr chunk", show_default=_default("chunk_rows")),
    num_workers: int | None = typer.Option(None, help="model workers", show_default="one per GPU, else 1"),
    device: str | None = typer.Option(None, help="auto, cpu, cuda, cuda:1 ...", show_default=_default("device")),
    address: str | None = typer.Option(None, help="Ray cluster address (HOST:PORT, ray://…, auto)",
                                          show_default="a private embedded Ray on 127.0.0.2"),
    overwrite: bool = typer.Option(False, "--overwrite", help="delete an existing actlake dataset at --out first",
                                   show_default="off"),
    progress: bool = typer.Option(True, "--progress/--no-progress", help="show a progress bar"),
    prepend_bos: bool | None = typer.Option(
        None, "--prepend-bos/--no-prepend-bos",
        help="insert BOS ([CLS] for BERT-style tokenizers) at each context start",
        show_default="auto: yes when the tokenizer has one"),
    drop_tokens: str | None = typer.Option(
        None, help="inserted tokens that get no rows: comma list of bos, eos, pad, or 'none'",
        show_default="bos,pad"),
    nonfinite: str | None = typer.Option(
        None, help="inf/NaN activations: error (NonFiniteError), warn (store and count) or clamp",
        show_default=_default("nonfinite")),
    tokens_per_context: int | None = typer.Option(
        None, help="keep N random positions per context (seeded by --seed)", show_default="all positions"),
    seed: int | None = typer.Option(None, help="seed of token sampling and of the write-time row shuffle",
                                    show_default=_default("seed")),
    weights: str | None = typer.Option(
        None, help="parameters to export next to the activations (names, wildcards, or blocks.*.attn.W_Q style; "
        "read with ds.weights(name))", show_default="none"),
    text_field: str | None = typer.Option(None, help="text column of .jsonl/.parquet/.arrow/datasets sources",
                                          show_default="text"),
    image_field: str | None = typer.Option(None, help="column of encoded images (parquet/arrow/datasets)",
                                           show_default="auto: an Image feature or bytes column"),
    label_field: str | None = typer.Option(None, help="column stored as each row's label in provenance",
                                           show_default="none"),
) -> None:
    """Extract activations.  With no --config/--model/--hooks/--data/--out it runs the built-in demo
    (other flags apply to it).  Re-running an interrupted job resumes it; a job that failed before its
    first commit can be re-run with corrected flags into the same --out."""
    from actlake.schemas.job import DEMO_JOB, load_job, parse_job
    from actlake.service.runner import run_job

    flags = dict(max_tokens=max_tokens, max_images=max_images, context_len=context_len, batch_size=batch_size,
                 dtype=dtype, compression=compression, fragment_tokens=fragment_tokens, chunk_rows=chunk_rows,
                 num_workers=num_workers, device=device, progress=None if progress else False,
                 prepend_bos=prepend_bos, drop_tokens=drop_tokens, nonfinite=nonfinite,
                 tokens_per_context=tokens_per_context, weights=weights, seed=seed)
    is_demo = config is None and all(v is None for v in (model, hooks, data, out_uri))
    if is_demo:
        job = parse_job({**DEMO_JOB, **{k: v for k, v in flags.items() if v is not None}})
        err.print(f"[bold]demo[/]: {job.model} on the Python standard library sources "
                  f"({job.max_tokens:,} tokens, hooks {', '.join(h.name for h in job.hooks)}) → {job.out}",
                  highlight=False)
    else:
        job = load_job(config, model=model, hooks=hooks, data=data, out=out_uri, **flags)
        columns = {k: v for k, v in (("text_field", text_field), ("image_field", image_field),
                                     ("label_field", label_field)) if v is not None}
        if columns:  # source columns: set on the data source, whether it came from --data or the job file
            job = parse_job({**job.model_dump(mode="json"), "data": {**job.data.model_dump(mode="json"), **columns}})
    uri = run_job(job, address=address, overwrite=overwrite)
    _print_info(uri)
    import actlake

    ds = actlake.open_dataset(uri)
    out.print("\nStream it:", highlight=False)
    out.print(snippet(uri, ds.num_rows, next(iter(ds.manifest.hooks), None)), highlight=False, markup=False,
              soft_wrap=True)  # never wrap: the snippet must paste as printed


def _disk_bytes(ds) -> tuple[dict[str, int], int]:
    """True bytes on storage of the committed fragments: (per hook, total).  From the commit records
    (no listing) where they hold sizes; fragments written before sizes were recorded are measured."""
    from actlake.store import layout
    from actlake.store.verify import committed_sizes

    total, per_hook = committed_sizes(ds.snapshot, ds.manifest.hooks)
    old = {f.path for f in ds.snapshot.fragments if not f.total_bytes}
    if not old:
        return per_hook, total
    store = ds.store
    by_array = {h.array: name for name, h in ds.manifest.hooks.items()}
    try:
        found = store.fs.find(store.path(layout.FRAGMENTS), detail=True)
    except FileNotFoundError:
        return per_hook, total
    root = store.path(layout.FRAGMENTS).rstrip("/") + "/"
    for path, st in found.items():
        parts = path[len(root):].split("/") if path.startswith(root) else []
        if not parts or f"{layout.FRAGMENTS}/{parts[0]}" not in old:
            continue
        size = int(st.get("size") or 0)
        total += size
        if len(parts) >= 3 and parts[1] == layout.ACTS and parts[2] in by_array:
            per_hook[by_array[parts[2]]] += size
    return per_hook, total


def _print_info(uri: str) -> None:
    import actlake

    ds = actlake.open_dataset(uri)
    m = ds.manifest
    disk, total = _disk_bytes(ds)
    t = Table(title=f"{uri}  ({m.status})", show_header=True)
    t.add_column("hook", overflow="fold")  # long hook names wrap on narrow terminals, never "…"
    for c in ("shape", "dtype", "codec", "values", "on disk"):
        t.add_column(c, no_wrap=True)
    for name, h in m.hooks.items():
        t.add_row(name, "×".join(map(str, h.shape)), h.dtype, h.codec, _human(h.row_bytes * ds.num_rows),
                  _human(disk.get(name, 0)))
    out.print(t)
    out.print(f"model {m.model.id} ({m.model.architecture}, {m.model.kind}); rows {ds.num_rows:,}; "
              f"fragments {len(ds.snapshot.fragments)}; chunk rows {m.chunk_rows}; "
              f"write-time row shuffle {'on' if m.row_shuffle else 'off'}; "
              f"on disk {_human(total)} (provenance, documents and checksums {_human(total - sum(disk.values()))})",
              highlight=False)
    if m.tokenizer is not None:
        tk = m.tokenizer
        line = (f"tokenizer {tk.name} (vocab {tk.vocab_size:,}; bos {tk.bos_token_id}, eos {tk.eos_token_id}, "
                f"pad {tk.pad_token_id})")
        pk = tk.packing
        if pk is not None:
            auto = " (auto)" if pk.prepend_bos_requested is None else ""
            line += (f"; packing: prepend {pk.bos_token or 'bos'} {'yes' if pk.prepend_bos else 'no'}{auto}, "
                     f"separator {pk.separator_token or 'none'}, rows dropped for "
                     f"{', '.join(pk.drop_tokens) or 'no'} inserted tokens")
        if m.job is not None:
            line += f"; context {m.job.context_len}"
        out.print(line, highlight=False, markup=False)
    counts = _nonfinite_counts(ds)
    # datasets written from arrays (DatasetWriter) record no job, hence no policy
    policy = f"policy {m.job.nonfinite}" if m.job is not None else "no job recorded"
    if counts:  # under "error" nothing non-finite is committed: these came from warn / clamp runs, whatever the
        # manifest's job says (nonfinite is a runtime setting: a rerun with --nonfinite warn keeps the first job)
        out.print("non-finite values (written under --nonfinite warn or clamp): "
                  + "; ".join(f"{k} {v:,}" for k, v in counts.items()), highlight=False, markup=False)
    else:
        out.print(f"non-finite values: none ({policy})", highlight=False, markup=False)


def _nonfinite_counts(ds) -> dict[str, int]:
    """inf/NaN values per hook over the committed fragments (recorded per fragment at write time);
    only hooks with any."""
    counts: dict[str, int] = {}
    for f in ds.snapshot.fragments:
        for hook, n in f.nonfinite.items():
            counts[hook] = counts.get(hook, 0) + n
    return {k: v for k, v in counts.items() if v}


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.1f} {unit}" if unit != "B" else f"{int(n)} B"
        n /= 1024
    return str(n)


@app.command()
def info(uri: str = typer.Argument(..., help="dataset URI"),
         as_json: bool = typer.Option(False, "--json", show_default="off",
                                      help="print the manifest, row count and non-finite counts as JSON")) -> None:
    """Show what a dataset holds: model, hooks, rows, fragments."""
    if as_json:
        import actlake

        ds = actlake.open_dataset(uri)
        d = ds.manifest.model_dump(mode="json")
        d["committed_rows"], d["committed_fragments"] = ds.num_rows, len(ds.snapshot.fragments)
        d["nonfinite"] = _nonfinite_counts(ds)
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


# Commands that live in their own modules (one concept per file).
from actlake.cli_hooks import hooks as _hooks  # noqa: E402
from actlake.cli_jobs import register as _register_jobs  # noqa: E402
from actlake.cli_query import app as _query_app  # noqa: E402
from actlake.cli_serve import serve as _serve  # noqa: E402
from actlake.cli_vacuum import vacuum as _vacuum  # noqa: E402

app.command(name="hooks")(_hooks)
app.command(name="vacuum")(_vacuum)
app.command(name="serve")(_serve)
_register_jobs(app)
app.add_typer(_query_app, name="query")
from actlake.cli_browse import browse as _browse  # noqa: E402

app.command("browse")(_browse)


def main() -> None:
    """Console entry point: every ActlakeError is one ``error:`` line (exit 2); any other exception too
    (exit 1, named as unexpected; ``ACTLAKE_DEBUG=1`` shows its traceback)."""
    import os

    from rich.text import Text

    from actlake.schemas.errors import ActlakeError

    try:
        app()
    except ActlakeError as e:
        err.print(Text.assemble(("error", "red"), f": {_one_line(e)}"), highlight=False, soft_wrap=True)
        sys.exit(2)
    except KeyboardInterrupt:
        sys.exit(130)
    except Exception as e:
        if os.environ.get("ACTLAKE_DEBUG"):
            raise
        err.print(Text.assemble(("error", "red"), f": unexpected {type(e).__name__}: {_one_line(e)} "
                                "(please report it; ACTLAKE_DEBUG=1 shows the traceback)"),
                  highlight=False, soft_wrap=True)
        sys.exit(1)


def _one_line(e: BaseException) -> str:
    return " ".join(str(e).split()) or type(e).__name__


if __name__ == "__main__":
    main()
