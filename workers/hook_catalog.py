"""Every hook point of a model with its per-row shape, from one dummy forward (no data read).

Used by ``actlake hooks MODEL``.  Rows: module paths (output and ``:input``), named kinds on
attention/MLP modules, and TransformerLens aliases, each with the per-row shape it would store,
its layout (tokens / spatial) and how many times the module runs per forward."""
from __future__ import annotations

from dataclasses import dataclass

import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import HookSpec
from actlake.workers.hook_aliases import alias_table
from actlake.workers.hook_kinds import ATTN_MARKERS, is_activation
from actlake.workers.hooks import Capture, resolve_hooks, row_layout, unflatten_tokens


@dataclass
class HookRow:
    name: str
    module: str
    shape: list[int]
    layout: str
    alias_of: str | None = None  # the module path (with suffix) an alias stands for
    calls: int = 1


def _dummy_inputs(model: torch.nn.Module, vision: bool, processor, T: int = 8) -> dict:
    from actlake.workers.capture_vision import _vision_config, forward_inputs

    dev = next(model.parameters()).device
    if vision:
        size = None
        if processor is not None:
            s = getattr(processor, "crop_size", None) or getattr(processor, "size", None) or {}
            size = s.get("height") or s.get("shortest_edge") if isinstance(s, dict) else None
        size = size or getattr(_vision_config(model.config), "image_size", None) or 224
        size = size[0] if isinstance(size, (list, tuple)) else size
        return forward_inputs(model, torch.zeros(2, 3, int(size), int(size), device=dev,
                                                 dtype=next(model.parameters()).dtype))
    ids = torch.ones(2, T, dtype=torch.long, device=dev)
    return {"input_ids": ids, "attention_mask": torch.ones_like(ids)}


def _module_rows(model: torch.nn.Module, inputs: dict, vision: bool) -> list[HookRow]:
    """Outputs and inputs of every module that fires, kept when they are row-shaped."""
    seen: dict[str, list] = {}
    handles = []
    for name, mod in model.named_modules():
        if not name:
            continue

        def hook(_m, args, out, name=name):
            rec = seen.setdefault(name, [0, None, None])
            rec[0] += 1
            rec[1] = args[0] if args and isinstance(args[0], torch.Tensor) else None
            o = out[0] if isinstance(out, (tuple, list)) and out else out
            rec[2] = getattr(o, "last_hidden_state", o)
        handles.append(mod.register_forward_hook(hook))
    try:
        with torch.inference_mode():
            model(**inputs)
    finally:
        for h in handles:
            h.remove()
    B = 2
    T = inputs["input_ids"].shape[1] if "input_ids" in inputs else None
    rows = []
    for name, (calls, x, y) in seen.items():
        for suffix, t in (("", y), (":input", x)):
            t = unflatten_tokens(t, inputs, name)
            if not isinstance(t, torch.Tensor) or t.dim() < 3 or t.shape[0] != B or (T and t.shape[1] != T):
                continue
            if vision and t.dim() == 4:
                shape, layout = [int(t.shape[1])], "spatial"
            else:
                shape, layout = [int(s) for s in t.shape[2:]], "tokens"
                if vision and not _holds_image_tokens(model, t, inputs):
                    continue
            rows.append(HookRow(name + suffix, name, shape, layout, calls=calls))
    return rows


def _holds_image_tokens(model: torch.nn.Module, t: torch.Tensor, inputs: dict) -> bool:
    """Whether a vision (B, T, ...) map has the image's tokens (patch grid plus cls/distillation/register
    tokens), as extraction requires; pooled heads (SigLIP's attention-pooling ``head``: one token) do not."""
    from actlake.workers.capture_vision import patch_size, token_layout

    p, px = patch_size(model), inputs.get("pixel_values")
    if p is None or not isinstance(px, torch.Tensor):
        return True
    try:
        token_layout(model, int(t.shape[1]), (int(px.shape[-2]) // p, int(px.shape[-1]) // p))
    except HookError:
        return False
    return True


def _activation_kinds(model: torch.nn.Module, calls: dict[str, int]) -> list[str]:
    """``PARENT:pre`` / ``PARENT:post`` for the parent of every activation module outside attention
    that runs once per forward (``calls``: module → calls); conv blocks of ConvNeXt/ResNet have no
    aliases, so their kinds are listed from here."""
    out = []
    for name, mod in model.named_modules():
        if ("." in name and is_activation(name, mod) and not any(k in name for k in ATTN_MARKERS)
                and calls.get(name) == 1):
            parent = name.rsplit(".", 1)[0]
            out += [f"{parent}:pre", f"{parent}:post"]
    return out


def catalog(model: torch.nn.Module, vision: bool, processor=None, key_len: int | None = None) -> list[HookRow]:
    """All hook points of ``model`` with per-row shapes (``key_len``: key axis of scores/probs rows).

    Hooks that resolve but do not give rows (an alias on a pooled output, such as CLIP-vision's
    ``post_layernorm`` behind ``ln_final.hook_normalized``) are left out, as are module outputs that
    are not (batch, seq, ...) or conv maps, and vision token maps that do not hold the image's tokens
    (SigLIP's one-token pooling ``head``): what is listed can be extracted."""
    inputs = _dummy_inputs(model, vision, processor, T=min(8, key_len or 8))
    rows = _module_rows(model, inputs, vision)
    aliases = alias_table(model)
    calls = {r.module: r.calls for r in rows}
    specs: list[tuple[str, str | None]] = [(k, None) for k in _activation_kinds(model, calls)]  # (text, alias of)
    for a, (mod, io, kind) in aliases.items():
        path = mod + (":input" if io == "input" else "") + (f":{kind}" if kind else "")
        if kind:
            specs.append((path, None))
        specs.append((a, path))
    resolved = []
    for text, alias_of in specs:
        try:
            resolved += [(h, alias_of) for h in resolve_hooks(model, [HookSpec.parse(text)], key_len=key_len)]
        except HookError:
            continue
    out: dict[str, torch.Tensor] = {}
    if resolved:
        try:
            with Capture(model, [h for h, _ in resolved], cut=False) as cap:
                out = cap.run(**inputs)
        except HookError:  # one hook that cannot be captured must not hide the others
            for h, _ in resolved:
                try:
                    with Capture(model, [h], cut=False) as cap:
                        out.update(cap.run(**inputs))
                except HookError:
                    continue
        for h, alias_of in resolved:
            if h.name in out:
                try:
                    shape, layout = row_layout(h, out[h.name], vision)
                except HookError:
                    continue
                if vision and layout == "tokens" and not _holds_image_tokens(model, out[h.name], inputs):
                    continue
                rows.append(HookRow(h.name, h.module_name, shape, layout, alias_of=alias_of))
    uniq = {r.name: r for r in rows}
    return list(uniq.values())
