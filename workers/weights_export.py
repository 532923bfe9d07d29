"""Which parameters ``--weights`` exports, and in which layout.

Patterns are parameter names from ``model.named_parameters()`` (wildcards as for hooks) or
TransformerLens-style names, found by name through the same rules as the hook aliases:
``blocks.L.attn.W_Q``/``W_K``/``W_V`` → (heads, d_model, d_head), ``blocks.L.attn.W_O`` →
(heads, d_head, d_model), ``blocks.L.mlp.W_in``/``W_gate`` → (d_model, d_mlp), ``blocks.L.mlp.W_out``
→ (d_mlp, d_model), ``W_E`` → (vocab, d_model), ``W_U`` → (d_model, vocab).  ``Linear`` weights are
(out, in); GPT-2's ``Conv1D`` weights are (in, out): both are brought to the (in, out) convention.
"""
from __future__ import annotations

import numpy as np
import torch

from actlake.schemas.errors import HookError
from actlake.workers.hook_aliases import alias_table, find_blocks
from actlake.workers.hook_kinds import (ATTN_MARKERS, OUT_NAMES, _find, _qkv_taps, find_activation, head_dim,
                                        num_heads)
from actlake.workers.hooks import match_pattern


def _in_out(mod: torch.nn.Module) -> torch.Tensor:
    """A projection's weight as (in, out)."""
    w = mod.weight.detach().float()
    return w if type(mod).__name__ == "Conv1D" else w.T


def _tl_table(model: torch.nn.Module) -> dict[str, tuple[str, object]]:
    """``{TL name: (source parameter, thunk → tensor)}`` for the names the model supports."""
    modules = dict(model.named_modules())
    cfg = getattr(model.config, "text_config", None) or model.config
    out: dict[str, tuple[str, object]] = {}
    aliases = alias_table(model)
    if "hook_embed" in aliases and hasattr(modules[aliases["hook_embed"][0]], "weight"):
        m = aliases["hook_embed"][0]
        out["W_E"] = (f"{m}.weight", lambda m=m: modules[m].weight.detach().float())
    if "logits" in aliases:
        m = aliases["logits"][0]
        out["W_U"] = (f"{m}.weight", lambda m=m: _in_out(modules[m]))
    blocks = find_blocks(model)
    if blocks is None:
        return out
    for i in range(len(modules[blocks])):
        attn = aliases.get(f"blocks.{i}.attn.hook_q", (None,))[0]  # the attention module
        if attn:
            hd, nh = head_dim(modules[attn], cfg), num_heads(modules[attn], cfg)
            for w in "QKV":
                tap, pick = _qkv_taps(modules, attn, w.lower(), nh, hd, cfg)

                def qkv(tap=tap, pick=pick, hd=hd):
                    full = pick(_in_out(modules[tap.module]))  # (d_model, H*hd); fused q/k/v split on out
                    return full.reshape(full.shape[0], -1, hd).permute(1, 0, 2).contiguous()
                out[f"blocks.{i}.attn.W_{w}"] = (f"{tap.module}.weight", qkv)
            o = _find(modules, attn, OUT_NAMES)
            if o:
                out[f"blocks.{i}.attn.W_O"] = (f"{o}.weight", lambda o=o, hd=hd: _in_out(modules[o]).reshape(-1, hd, _in_out(modules[o]).shape[1]))
        mlp = aliases.get(f"blocks.{i}.mlp.hook_pre", (None,))[0]  # the MLP, or the block (BERT)
        if mlp:
            try:
                act = find_activation(modules, mlp)
            except HookError:
                continue
            lin = [n for n, m in modules.items() if n.startswith(mlp + ".") and hasattr(m, "weight")
                   and type(m).__name__ in ("Linear", "Conv1D")
                   and not any(k in n[len(mlp) + 1:] for k in ATTN_MARKERS)]
            names = {n.rsplit(".", 1)[-1]: n for n in lin}
            w_in = names.get("up_proj") or names.get("c_fc") or names.get("fc1")
            w_out = names.get("down_proj") or names.get("fc2") or names.get("c_proj")
            if not w_in:  # BERT-style: the projection next to the activation, then the one reading its width
                beside = [n for n in lin if n.rsplit(".", 1)[0] == act.rsplit(".", 1)[0]]
                if len(beside) == 1:
                    w_in = beside[0]
                    width = _in_out(modules[w_in]).shape[1]
                    after = [n for n in lin if n != w_in and _in_out(modules[n]).shape[0] == width]
                    w_out = w_out or (after[0] if len(after) == 1 else None)
            if w_in:
                out[f"blocks.{i}.mlp.W_in"] = (f"{w_in}.weight", lambda n=w_in: _in_out(modules[n]))
            if "gate_proj" in names:
                out[f"blocks.{i}.mlp.W_gate"] = (f"{names['gate_proj']}.weight", lambda n=names["gate_proj"]: _in_out(modules[n]))
            if w_out:
                out[f"blocks.{i}.mlp.W_out"] = (f"{w_out}.weight", lambda n=w_out: _in_out(modules[n]))
    return out


def resolve_weights(model: torch.nn.Module, patterns: list[str]) -> dict[str, tuple[str, object]]:
    """``{stored name: (source parameter, thunk)}``; HookError for a pattern that matches nothing."""
    params = dict(model.named_parameters())
    tl = _tl_table(model)
    out: dict[str, tuple[str, object]] = {}
    for p in patterns:
        hits = match_pattern(p, list(params))
        for h in hits:
            out[h] = (h, lambda h=h: params[h].detach().float())
        tl_hits = match_pattern(p, list(tl))
        for h in tl_hits:
            out[h] = tl[h]
        if not hits and not tl_hits:
            import difflib

            close = difflib.get_close_matches(p, list(params) + list(tl), n=5, cutoff=0.5)
            raise HookError(f"--weights {p!r} matches no parameter or weight alias"
                            + (f"; closest: {', '.join(close)}" if close else ""))
    return out


def export_arrays(model: torch.nn.Module, patterns: list[str]) -> tuple[dict[str, np.ndarray], dict[str, dict]]:
    """The arrays to store (float32, on the host) and per-name metadata (source parameter, layout)."""
    arrays, meta = {}, {}
    for name, (src, thunk) in resolve_weights(model, patterns).items():
        arrays[name] = thunk().cpu().numpy()  # type: ignore[operator]
        meta[name] = {"source": src, "layout": "transformerlens" if src != name else "module"}
    return arrays, meta
