"""Independent reference computations for the tests (plain transformers + torch hooks)."""
from __future__ import annotations

import numpy as np
import torch


def reference_activations(model: torch.nn.Module, module_names: list[str], **inputs) -> dict[str, torch.Tensor]:
    """Run the full model with plain forward hooks (no actlake code) and return the outputs."""
    mods = dict(model.named_modules())
    got: dict[str, torch.Tensor] = {}
    handles = []
    for name in module_names:
        if name.endswith(":input"):
            m = name[: -len(":input")]
            handles.append(mods[m].register_forward_pre_hook(lambda mod, args, n=name: got.__setitem__(n, args[0])))
        else:
            def hook(mod, args, out, n=name):
                got[n] = out[0] if isinstance(out, tuple) else out
            handles.append(mods[name].register_forward_hook(hook))
    try:
        with torch.no_grad():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    return got


def contexts_from_provenance(prov, bos_id: int | None) -> dict[int, np.ndarray]:
    """Rebuild each context's token ids from provenance rows (position 0 = BOS when dropped)."""
    ctx = prov.column("context_id").to_numpy()
    pos = prov.column("context_pos").to_numpy()
    tok = prov.column("token_id").to_numpy()
    out = {}
    for c in np.unique(ctx):
        sel = ctx == c
        n = int(pos[sel].max()) + 1
        ids = np.full(n, -1, dtype=np.int64)
        ids[pos[sel]] = tok[sel]
        if bos_id is not None and ids[0] == -1:
            ids[0] = bos_id
        assert (ids >= 0).all(), f"context {c} has holes"
        out[int(c)] = ids
    return out
