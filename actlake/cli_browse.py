"""``actlake browse URI --hook H --units 0,5,17 [--sae W.pt] --out report/``: static HTML feature pages.

Registered in actlake/cli.py.  Arguments are checked before any query runs (one ``error:`` line,
exit 2); the site is written to a temporary folder and moved into ``--out`` only when complete."""
from __future__ import annotations

import typer
from rich.console import Console

err = Console(stderr=True)


def browse(uri: str = typer.Argument(..., help="dataset URI (path, s3://, gs://)"),
           hook: str = typer.Option(..., "--hook", help="hook name (see `actlake info URI`)"),
           units: str = typer.Option(..., help="comma-separated unit indices (latent indices with --sae)"),
           sae: str | None = typer.Option(None, help="SAE weights (W_enc, b_enc, b_dec; .pt/.npz/.safetensors): "
                                                       "pages show its latents"),
           out: str = typer.Option("report", "--out", help="folder to write index.html and feature pages into"),
           k: int = typer.Option(20, "-k", "--k", help="top contexts per feature"),
           context: int = typer.Option(8, help="tokens shown each side of the activating token"),
           bins: int = typer.Option(11, help="activation intervals sampled between 0 and the max"),
           per_bin: int = typer.Option(3, help="rows sampled per interval")) -> None:
    """Write a static HTML site: per feature the top-k contexts (tokens coloured by activation),
    interval samples, an activation histogram, density, and the best-correlated neuron; an index page."""
    import actlake
    from actlake.browse import build_site
    from actlake.cli_query import _encoder, _ints

    unit_list = _ints("units", units) or []
    enc = _encoder(sae, "relu", None)
    ds = actlake.open_dataset(uri)
    feats = build_site(ds, hook, unit_list, out, encoder=enc, k=k, context=context, bins=bins, per_bin=per_bin)
    err.print(f"wrote {len(feats)} feature page(s) and index.html to {out}/")
