"""``actlake query topk|bottomk|intervals|stats|fetch|correlate|pca URI --hook H …``: rich tables, ``--out`` files.

Registered in actlake/cli.py.  All arguments are checked (QueryError, one ``error:`` line, exit 2)
before any chunk is read; nothing is written to ``--out`` unless the query succeeds."""
from __future__ import annotations

import json
import math
import os
from typing import TYPE_CHECKING, Any, Optional

import typer
from rich.console import Console
from rich.progress import BarColumn, Progress, TextColumn, TimeRemainingColumn
from rich.table import Table

if TYPE_CHECKING:  # numpy loads in the commands that use it: `--help` stays fast
    import numpy as np

app = typer.Typer(add_completion=False, no_args_is_help=True, rich_markup_mode=None,
                  help="Query stored activations: top-k, bottom-k, interval samples, statistics, fetch, "
                       "correlate, PCA, project onto directions, plots.")
err = Console(stderr=True)
out = Console()
OUT_FORMATS = (".parquet", ".csv", ".json")
SHOW_ROWS = 50

URI = typer.Argument(..., help="dataset URI (path, s3://, gs://)")
HOOK = typer.Option(..., "--hook", help="hook name (see `actlake info URI`)")
OUT = typer.Option(None, "--out", help="also write the result to a .parquet, .csv or .json file")
ADDRESS = typer.Option(None, help="Ray cluster address ('local': embedded Ray); default: in-process threads")
TASKS = typer.Option(None, help="plan items (default: ~64 MB of the hook's bytes each)")


def _qerr(msg: str):
    from actlake.schemas.errors import QueryError

    return QueryError(msg)


def _ints(name: str, text: Optional[str]) -> list[int] | None:
    if text is None:
        return None
    try:
        return [int(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise _qerr(f"{name}: expected comma-separated integers, got {text!r}") from None


def _check_out(path: Optional[str], arg: str = "out", formats: tuple[str, ...] = OUT_FORMATS) -> None:
    """An output file named on the command line, checked before the query runs (suffix, folder)."""
    from actlake.client.outputs import check_output_file

    if path is not None:
        check_output_file(arg, path, formats)


def _load_arrays(name: str, path: str) -> dict[str, np.ndarray]:
    """Arrays from .npy / .npz / .safetensors / .pt (a tensor or a state dict)."""
    import numpy as np

    if not os.path.exists(path):
        raise _qerr(f"{name}: no such file {path!r}")
    try:
        if path.endswith(".npy"):
            return {"": np.load(path)}
        if path.endswith(".npz"):
            return dict(np.load(path))
        if path.endswith(".safetensors"):
            from safetensors.numpy import load_file

            return load_file(path)
        import torch

        obj = torch.load(path, map_location="cpu", weights_only=True)
        return {"": obj.float().numpy()} if isinstance(obj, torch.Tensor) else \
            {k: v.float().numpy() for k, v in obj.items() if isinstance(v, torch.Tensor)}
    except Exception as e:
        raise _qerr(f"{name}: cannot read {path!r}: {type(e).__name__}: {e}") from None


def _encoder(path: Optional[str], activation: str, k: Optional[int]) -> dict[str, Any] | None:
    """SAELens (W_enc, b_enc, b_dec) or sparsify (encoder.weight, encoder.bias, b_dec) weights."""
    if path is None:
        return None
    arrs = _load_arrays("sae", path)
    w = arrs.get("W_enc", arrs.get("encoder.weight"))
    if w is None:
        raise _qerr(f"sae: {path!r} has no W_enc or encoder.weight (keys: {', '.join(arrs) or 'none'})")
    return {"W_enc": w, "b_enc": arrs.get("b_enc", arrs.get("encoder.bias")), "b_dec": arrs.get("b_dec"),
            "activation": activation, "k": k}


def _direction(path: Optional[str]) -> np.ndarray | None:
    if path is None:
        return None
    arrs = _load_arrays("direction", path)
    return next(iter(arrs.values())) if len(arrs) == 1 else arrs.get("direction", next(iter(arrs.values())))


def _progress_bar():
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(),
                    TextColumn("{task.completed:,.0f}/{task.total:,.0f} rows"), TimeRemainingColumn(),
                    console=err, transient=True)


def _run(desc: str, fn, **kw):
    with _progress_bar() as bar:
        task = bar.add_task(desc, total=0)
        return fn(progress=lambda done, total: bar.update(task, completed=done, total=total), **kw)


def _plain(table):
    """Vector columns become strings (CSV cannot hold lists)."""
    import pyarrow as pa

    cols = {}
    for name in table.column_names:
        c = table.column(name)
        if pa.types.is_fixed_size_list(c.type) or pa.types.is_list(c.type):
            whole = pa.types.is_integer(c.type.value_type)  # counts stay integers
            c = pa.array([json.dumps(row if whole else [round(float(v), 6) for v in row]) for row in c.to_pylist()],
                         pa.string())
        elif pa.types.is_dictionary(c.type):
            c = c.cast(pa.string())
        cols[name] = c
    return pa.table(cols)


def _decoded(table):
    """``table`` with dictionary columns as plain strings (lists stay lists: for JSON)."""
    import pyarrow as pa

    return pa.table({name: c.cast(pa.string()) if pa.types.is_dictionary(c.type) else c
                     for name, c in zip(table.column_names, table.columns, strict=True)})


def _finite(v: Any) -> Any:
    """NaN / ±inf → None (strict JSON), inside lists too."""
    if isinstance(v, float):
        return v if math.isfinite(v) else None
    if isinstance(v, list):
        return [_finite(x) for x in v]
    return v


def _write(table, path: Optional[str]) -> None:
    if path is None:
        return
    import pyarrow.csv as pcsv
    import pyarrow.parquet as pq

    from actlake.client.outputs import write_atomically

    def write(tmp: str) -> None:
        if path.endswith(".parquet"):
            pq.write_table(table, tmp)
        elif path.endswith(".csv"):
            pcsv.write_csv(_plain(table), tmp)
        else:
            with open(tmp, "w") as f:  # strict JSON: NaN / ±inf (a constant unit's correlation) become null
                json.dump([{k: _finite(v) for k, v in row.items()} for row in _decoded(table).to_pylist()], f,
                          allow_nan=False)

    write_atomically(path, write)
    err.print(f"wrote {table.num_rows:,} rows to {path}")


def _show(table, title: str) -> None:
    """Print the first rows as a table.  Values are never wrapped inside a cell (a number split over
    two lines reads as two numbers); only long text (``context``, histograms) folds.  A table wider than the console (a pipe
    is 80 columns) is printed at its own width rather than squeezed."""
    plain = _plain(table)
    rows = [[f"{v:.6g}" if isinstance(v, float) else str(v) for v in row.values()]
            for row in plain.slice(0, SHOW_ROWS).to_pylist()]
    t = Table(title=title)
    need = 1
    for j, name in enumerate(plain.column_names):
        w = max([len(name)] + [len(r[j]) for r in rows])
        if name == "context" or w > 24:  # text, histograms, vectors: folded
            t.add_column(name, overflow="fold", min_width=min(w, 20), max_width=60)
            need += min(w, 60) + 3
        else:  # numbers, ids, short labels: never split
            t.add_column(name, no_wrap=True, min_width=w)
            need += w + 3
    for r in rows:
        t.add_row(*r)
    printer = out if out.width >= need else Console(width=need, highlight=False)
    printer.print(t)
    if table.num_rows > SHOW_ROWS:
        out.print(f"… {table.num_rows - SHOW_ROWS:,} more rows (use --out to get them all)")


def _ranked(largest: bool, uri: str, hook: str, unit: Optional[str], direction: Optional[str], sae: Optional[str],
            sae_activation: str, sae_k: Optional[int], k: int, context: int, dedup: Optional[str],
            out_path: Optional[str], address: Optional[str], tasks: Optional[int]) -> None:
    import actlake

    _check_out(out_path)
    units, enc, dirs = _ints("unit", unit), _encoder(sae, sae_activation, sae_k), _direction(direction)
    ds = actlake.open_dataset(uri)
    table = _run("top-k" if largest else "bottom-k", ds.query.topk, hook=hook, unit=units, direction=dirs, encoder=enc,
                 k=k, context=context, dedup=dedup, largest=largest, address=address, tasks=tasks)
    _show(table, f"{'top' if largest else 'bottom'}-{k} of {hook}")
    _write(table, out_path)


def _ranked_command(largest: bool):
    def cmd(uri: str = URI, hook: str = HOOK,
            unit: Optional[str] = typer.Option(None, help="unit index or comma-separated indices"),
            direction: Optional[str] = typer.Option(None, help=".npy/.npz/.pt/.safetensors: [d] or [C, d] directions"),
            sae: Optional[str] = typer.Option(None, help="SAE weights (W_enc, b_enc, b_dec): rank its latents"),
            sae_activation: str = typer.Option("relu", help="relu or topk"),
            sae_k: Optional[int] = typer.Option(None, help="latents kept per row for --sae-activation topk"),
            k: int = typer.Option(20, "-k", "--k", help="rows per unit / direction / latent"),
            context: int = typer.Option(8, help="tokens shown each side of the activating token (-1: none)"),
            dedup: Optional[str] = typer.Option(None, help="'context': at most one row per model context"),
            out_path: Optional[str] = OUT, address: Optional[str] = ADDRESS, tasks: Optional[int] = TASKS) -> None:
        _ranked(largest, uri, hook, unit, direction, sae, sae_activation, sae_k, k, context, dedup, out_path, address,
                tasks)

    cmd.__doc__ = ("The k rows with the largest values of a unit, direction or SAE latent (ties: smaller row id)."
                   if largest else "The k rows with the smallest (most negative) values (inhibition).")
    return cmd


app.command("topk")(_ranked_command(True))
app.command("bottomk")(_ranked_command(False))


@app.command()
def intervals(uri: str = URI, hook: str = HOOK, unit: Optional[int] = typer.Option(None, help="unit index"),
              direction: Optional[str] = typer.Option(None, help="file with one [d] direction"),
              bins: int = typer.Option(11, help="equal intervals between 0 and the max"),
              per_bin: int = typer.Option(10, help="random rows per interval"),
              seed: int = typer.Option(0, help="sampling seed"),
              context: int = typer.Option(8, help="tokens each side"),
              out_path: Optional[str] = OUT, address: Optional[str] = ADDRESS, tasks: Optional[int] = TASKS) -> None:
    """Random rows from each of BINS equal activation intervals of (0, max] (two passes)."""
    import actlake

    _check_out(out_path)
    dirs = _direction(direction)
    ds = actlake.open_dataset(uri)
    table = _run("intervals", ds.query.sample_intervals, hook=hook, unit=unit, direction=dirs, bins=bins,
                 per_bin=per_bin, seed=seed, context=context, address=address, tasks=tasks)
    _show(table, f"interval samples of {hook}")
    _write(table, out_path)


def stats_table(res: dict, by: Optional[str], units: Optional[list[int]] = None, full: bool = False):
    """Per-unit (and per-group) stats dict → one table row per (group, unit); ``units``: the unit
    numbers the result's columns stand for (default 0..C-1).  ``full`` (the ``--out`` file) adds
    ``active`` (values > threshold), the shared bin edges of the ``hist`` counts as ``hist_edges``,
    and the per-row summaries of the group
    (``row_norm_*``, ``row_kurtosis_*``: mean, var, min, max; the same on each row of a group)."""
    import numpy as np
    import pyarrow as pa

    groups = res.items() if by else [(None, res)]
    parts = []
    for g, r in groups:
        n = len(r["mean"])
        cols: dict[str, Any] = {} if by is None else {by: pa.array([str(g)] * n)}
        cols["unit"] = pa.array(np.asarray(units, np.int64) if units is not None else np.arange(n))
        for key in ("count", "mean", "var", "skew", "kurtosis", "min", "max", "density") + (("active",) if full else ()):
            if key in r:
                cols[key] = pa.array(np.asarray(r[key]))
        if "hist" in r:  # a list column: the console table (_plain) and CSV show it as JSON
            cols["hist"] = pa.array([h.tolist() for h in np.asarray(r["hist"], np.int64)], pa.list_(pa.int64()))
            if full:
                edges = np.asarray(r["hist_edges"], np.float64).tolist()
                cols["hist_edges"] = pa.array([edges] * n, pa.list_(pa.float64()))
        for name in ("row_norm", "row_kurtosis"):
            if full and isinstance(r.get(name), dict):
                for stat in ("mean", "var", "min", "max"):
                    if stat in r[name]:
                        cols[f"{name}_{stat}"] = pa.array([float(r[name][stat])] * n, pa.float64())
        parts.append(pa.table(cols))
    return pa.concat_tables(parts, promote_options="default")


@app.command()
def stats(uri: str = URI, hook: str = HOOK,
          by: Optional[str] = typer.Option(None, help="group by a provenance column: position, context_pos, "
                                           "token_type, label, token_id, doc_id, patch_row, patch_col; or hook"),
          threshold: float = typer.Option(0.0, help="density counts values > threshold"),
          unit: Optional[str] = typer.Option(None, help="only these units (comma-separated); default all"),
          histogram_bins: Optional[int] = typer.Option(None,
                                                       help="also histograms with shared bins (2nd pass; ≤ 10,000)"),
          out_path: Optional[str] = OUT, address: Optional[str] = ADDRESS, tasks: Optional[int] = TASKS) -> None:
    """Per-unit count, mean, var, skew, kurtosis, min, max, density (float64, one pass)."""
    import actlake

    _check_out(out_path)
    ds = actlake.open_dataset(uri)
    units = _ints("unit", unit)
    res = _run("stats", ds.query.stats, hook=hook, by=by, threshold=threshold, unit=units,
               histogram_bins=histogram_bins, address=address, tasks=tasks)
    by_col = None if by is None else "group"
    _show(stats_table(res, by_col, units), f"statistics of {hook}")
    rows = res if by is None else next(iter(res.values()), {})
    for name in ("row_norm", "row_kurtosis"):
        if by is None and name in rows:
            s = rows[name]
            out.print(f"{name}: mean {s['mean']:.6g}, var {s['var']:.6g}, min {s['min']:.6g}, max {s['max']:.6g}")
    if out_path is not None:
        _write(stats_table(res, by_col, units, full=True), out_path)


@app.command()
def fetch(uri: str = URI, rows: Optional[str] = typer.Option(None, help="row ids, comma-separated"),
          doc_id: Optional[str] = typer.Option(None, help="doc ids (with --doc-pos or --context-pos)"),
          doc_pos: Optional[str] = typer.Option(None, help="token positions in the document"),
          context_id: Optional[str] = typer.Option(None, help="model context ids"),
          context_pos: Optional[str] = typer.Option(None, help="positions in the model input"),
          image_id: Optional[str] = typer.Option(None, help="image ids (with --patch-row and --patch-col)"),
          patch_row: Optional[str] = typer.Option(None, help="patch rows"),
          patch_col: Optional[str] = typer.Option(None, help="patch columns"),
          hooks: Optional[str] = typer.Option(None, help="comma-separated hooks (default all)"),
          context: int = typer.Option(-1, help="tokens each side in a context column (-1: none)"),
          out_path: Optional[str] = OUT) -> None:
    """Rows by id or by provenance key, with their activations."""
    import actlake

    _check_out(out_path)
    keys = {k: _ints(k.replace("_", "-"), v) for k, v in dict(doc_id=doc_id, doc_pos=doc_pos, context_id=context_id,
                                                               context_pos=context_pos, image_id=image_id,
                                                               patch_row=patch_row, patch_col=patch_col).items()}
    ds = actlake.open_dataset(uri)
    table = ds.query.fetch(_ints("rows", rows), hooks=None if hooks is None else hooks.split(","), context=context,
                           **keys)
    _show(table, f"{table.num_rows} row(s)")
    _write(table, out_path)


from actlake.cli_analysis import register as _register_analysis  # noqa: E402  (correlate, pca, project, plot)

_register_analysis(app)
