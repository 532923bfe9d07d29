"""``actlake query correlate|pca|project|plot``: the analyses of client/analysis.py and client/plots.py.

Registered on the ``actlake query`` app by one line at the end of actlake/cli_query.py."""
from __future__ import annotations

import typer

from actlake.cli_query import (
    ADDRESS,
    HOOK,
    OUT,
    TASKS,
    URI,
    _check_out,
    _direction,
    _ints,
    _qerr,
    _run,
    _show,
    _write,
    err,
    out,
)

PRECISION = typer.Option("float64", help="products in 'float64', or 'float32' (float32 products of shifted blocks, "
                         "merged in float64; ~1e-6 of float64, less CPU)")


def correlate(uri: str = URI, hook: str = HOOK,
              hook_b: str | None = typer.Option(None, help="second hook (default: the same hook)"),
              units: str | None = typer.Option(None, help="units of --hook (comma-separated; default all)"),
              units_b: str | None = typer.Option(None, help="units of the second hook (default all)"),
              best: str = typer.Option("max", help="best match by 'max' correlation or 'abs' value"),
              matrix: str | None = typer.Option(None, help="also save the float64 matrix to this .npy file"),
              precision: str = PRECISION, out_path: str | None = OUT, address: str | None = ADDRESS,
              tasks: int | None = TASKS) -> None:
    """Pearson correlation between units of two hooks (one pass, float64); prints each unit's best match."""
    import numpy as np

    import actlake

    _check_out(out_path)
    _check_out(matrix, "matrix", (".npy",))
    ds = actlake.open_dataset(uri)
    res = _run("correlate", ds.query.correlate, hook_a=hook, hook_b=hook_b, units_a=_ints("units", units),
               units_b=_ints("units-b", units_b), best=best, precision=precision, address=address, tasks=tasks)
    _show(res.best, f"best matches of {hook} in {hook_b or hook} ({res.n:,} rows)")
    _write(res.best, out_path)
    if matrix is not None:
        from actlake.client.outputs import write_atomically

        write_atomically(matrix, lambda tmp: np.save(tmp, res.matrix))
        err.print(f"wrote the {res.matrix.shape[0]}×{res.matrix.shape[1]} matrix to {matrix}")


def pca(uri: str = URI, hook: str = HOOK, n_components: int = typer.Option(10, "-n", "--n-components"),
        cosine: str | None = typer.Option(None, help=".npy/.pt file of [d] or [m, d] vectors: cosine with each PC"),
        components: str | None = typer.Option(None, help="also save mean [d], components [k, d] (unit rows), "
                                              "explained_variance [k] and explained_variance_ratio [k] "
                                              "(float64) to this .npz file"),
        precision: str = PRECISION, out_path: str | None = OUT, address: str | None = ADDRESS,
        tasks: int | None = TASKS) -> None:
    """Principal components of a hook (streaming float64 covariance, eigendecomposition at the end)."""
    import numpy as np
    import pyarrow as pa

    import actlake

    _check_out(out_path)
    _check_out(components, "components", (".npz",))
    vecs = _direction(cosine)
    ds = actlake.open_dataset(uri)
    res = _run("pca", ds.query.pca, hook=hook, n_components=n_components, precision=precision, address=address,
               tasks=tasks)
    cols = {"component": pa.array(np.arange(len(res.explained_variance))),
            "explained_variance": pa.array(res.explained_variance),
            "explained_variance_ratio": pa.array(res.explained_variance_ratio)}
    if vecs is not None:
        cos = np.atleast_2d(res.cosine(vecs))
        for i, row in enumerate(cos):
            cols[f"cosine_{i}"] = pa.array(row)
    table = pa.table(cols)
    _show(table, f"PCA of {hook} ({res.n:,} rows)")
    _write(table, out_path)
    if components is not None:
        from actlake.client.outputs import write_atomically

        write_atomically(components, lambda tmp: np.savez(
            tmp, mean=res.mean, components=res.components, explained_variance=res.explained_variance,
            explained_variance_ratio=res.explained_variance_ratio))
        err.print(f"wrote mean, {len(res.components)} components and their variances to {components}")


def project(uri: str = URI, hook: str = HOOK,
            directions: str = typer.Option(..., help=".npy/.npz/.pt/.safetensors: [C, d] directions (rows)"),
            name: str = typer.Option(..., help="name of the new derived hook"),
            address: str | None = ADDRESS) -> None:
    """Write every row's values on the directions as a new derived hook (float32, committed)."""
    import numpy as np

    import actlake

    dirs = _direction(directions)
    ds = actlake.open_dataset(uri)
    _run("project", ds.query.project, hook=hook, directions=dirs, name=name, address=address)
    out.print(f"derived hook {name!r}: {ds.num_rows:,} rows × {np.atleast_2d(dirs).shape[0]} (float32)")


def plot(kind: str = typer.Argument(..., help="histogram | density | kurtosis"), uri: str = URI,
         hook: str | None = typer.Option(None, "--hook", help="hook (kurtosis: comma-separated, default all)"),
         units: str | None = typer.Option(None, help="histogram: units (default the first 8)"),
         bins: int = typer.Option(50, help="histogram bins"),
         threshold: float = typer.Option(0.0, help="density: values > threshold count as active"),
         out_path: str = typer.Option(..., "--out", help=".png, .svg or .pdf file")) -> None:
    """Activation histogram per unit, density over units (log scale), or kurtosis per layer."""
    import actlake

    ds = actlake.open_dataset(uri)
    if kind != "kurtosis" and hook is None:
        raise _qerr(f"hook: {kind} needs --hook")
    kw: dict = {}
    if kind == "histogram":
        kw = {"units": _ints("units", units), "bins": bins}
    elif kind == "density":
        kw = {"threshold": threshold}
    target = hook if kind != "kurtosis" or hook is None else hook.split(",")
    ds.query.plot(kind, target, out_path, **kw)
    err.print(f"wrote {out_path}")


def register(app: typer.Typer) -> None:
    """Add the analysis commands to the ``actlake query`` app."""
    for fn in (correlate, pca, project, plot):
        app.command(fn.__name__)(fn)
