"""``actlake hooks MODEL``: every hook point (module paths, named kinds, TransformerLens aliases) with
its per-row shape, from one dummy forward on the CPU (no data is read)."""
from __future__ import annotations

import json
from typing import Optional

import typer


def hooks(
    model: str = typer.Argument(..., help="HF id (offline cache), local model dir, or smollm2-135m"),
    revision: Optional[str] = typer.Option(None, help="model revision (offline cache)"),
    grep: Optional[str] = typer.Option(None, "--grep", "-g", help="show only hooks whose name contains this"),
    context_len: int = typer.Option(128, help="key axis of :scores/:probs rows (text models)"),
    as_json: bool = typer.Option(False, "--json", help="print JSON lines instead of a table"),
) -> None:
    """List every hook of MODEL with its per-row shape (one dummy forward, nothing written)."""
    from rich.console import Console
    from rich.table import Table

    from actlake.workers.hook_catalog import catalog
    from actlake.workers.models import is_vision_model, load_model

    vision = is_vision_model(model, revision)
    lm = load_model(model, revision, "float32", "cpu", vision)
    rows = catalog(lm.model, vision, lm.processor, key_len=None if vision else context_len)
    if grep:
        rows = [r for r in rows if grep in r.name or grep in (r.alias_of or "")]
    out = Console(width=None if Console().is_terminal else 220)
    if as_json:
        for r in rows:
            print(json.dumps({"hook": r.name, "module": r.module, "shape": r.shape, "layout": r.layout,
                              "alias_of": r.alias_of, "calls": r.calls}))
        return
    t = Table(title=f"{lm.info.id}: {len(rows)} hooks (per-row shapes; rows are "
                    f"{'patches/positions' if vision else 'tokens'})")
    for c in ("hook", "per-row shape", "layout", "alias of", "calls"):
        t.add_column(c, overflow="fold")
    for r in rows:
        t.add_row(r.name, "×".join(map(str, r.shape)), r.layout, r.alias_of or "",
                  str(r.calls) + (" (use :call=N)" if r.calls > 1 else ""))
    out.print(t)
