"""TransformerLens-style hook names (``blocks.6.hook_resid_post``, ``blocks.3.attn.hook_q``,
``blocks.2.mlp.hook_pre``, ``hook_embed``, ``ln_final.hook_normalized``, ...) as aliases of module
paths, found by name in the real module tree:

- blocks: the ``ModuleList`` with ``num_hidden_layers`` children that hold an attention module;
- attention: the block child named ``self_attn``/``attn``/``attention``/``self_attention``; MLP: the
  child ``mlp``/``ffn``/``feed_forward`` (else the block itself, for BERT-style ``intermediate``/``output`` pairs);
  ``hook_attn_out``/``hook_mlp_out`` only where that module's output is not already added to the
  residual stream (BLOOM's modules take the ``residual`` and return the sum: no alias there); in
  post-LN blocks (BERT, RoBERTa, ELECTRA, DeBERTa: ``attention.output`` = LayerNorm(residual + dense))
  they are the ``dense`` projections before the residual and the LayerNorm;
- ``ln1``/``ln2``: the block's first/second direct ``*Norm`` child (pre-LN models); ``hook_resid_mid``
  (the second norm's input) only for sequential blocks — in parallel-residual blocks (GPT-NeoX
  ``use_parallel_residual``, Falcon ``parallel_attn``) that input is ``hook_resid_pre`` and there is no
  mid-block residual; post-norm blocks whose norms are direct children (DistilBERT, OPT with
  ``do_layer_norm_before: false``) have no ``ln1``/``ln2``/``hook_resid_mid``: no sublayer reads a norm;
- ``hook_embed``: ``get_input_embeddings()`` (vision: the top-level ``embeddings`` module);
- ``ln_final``: the last ``*Norm`` module outside the blocks and embeddings;
- ``logits``: ``get_output_embeddings()``.

``alias_table(model)`` returns ``{alias: (module, io, kind)}``; families without blocks (ConvNeXt,
ResNet) get only the aliases that exist.
"""
from __future__ import annotations

import torch

from actlake.workers.hook_kinds import has_rotary, takes

ATTN_CHILD = ("self_attn", "attn", "attention", "self_attention")
MLP_CHILD = ("mlp", "ffn", "feed_forward")  # MPT: ffn; InternLM2, Jamba: feed_forward
# TransformerLens attention hook → our kind
ATTN_KINDS = {"hook_q": "q", "hook_k": "k", "hook_v": "v", "hook_rot_q": "q_rot", "hook_rot_k": "k_rot",
              "hook_z": "z", "hook_attn_scores": "scores", "hook_pattern": "probs"}


def _is_norm(m: torch.nn.Module) -> bool:
    return "Norm" in type(m).__name__


def _adds_residual(m: torch.nn.Module) -> bool:
    """Whether the module's forward takes the residual and returns it plus its own output (BLOOM)."""
    return takes(m, "residual")


def _parallel_residual(cfg) -> bool:
    return bool(getattr(cfg, "use_parallel_residual", False) or getattr(cfg, "parallel_attn", False)
                or getattr(cfg, "new_decoder_architecture", False))


def find_blocks(model: torch.nn.Module) -> str | None:
    """Path of the ModuleList of transformer blocks, or None."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or getattr(cfg, "vision_config", None) or cfg
    n = getattr(cfg, "num_hidden_layers", None) or getattr(cfg, "n_layer", None)
    for name, m in model.named_modules():
        if isinstance(m, torch.nn.ModuleList) and n and len(m) == n:
            first = dict(m[0].named_children())
            if any(c in first for c in ATTN_CHILD):
                return name
    return None


def alias_table(model: torch.nn.Module) -> dict[str, tuple[str, str, str | None]]:
    """``{alias: (module path, io, kind)}`` for every alias the model supports."""
    modules = dict(model.named_modules())
    ids = {id(m): n for n, m in modules.items()}
    out: dict[str, tuple[str, str, str | None]] = {}
    vision = getattr(model, "main_input_name", "") == "pixel_values"
    emb = None
    try:
        e = model.get_input_embeddings()
        emb = ids.get(id(e))
    except (NotImplementedError, AttributeError):
        pass
    if vision and "embeddings" in modules:
        emb = "embeddings"
    if emb:
        out["hook_embed"] = (emb, "output", None)
    try:
        head = ids.get(id(model.get_output_embeddings()))
    except (NotImplementedError, AttributeError):
        head = None
    if head:
        out["logits"] = (head, "output", None)
    blocks = find_blocks(model)
    if blocks is None:
        return out
    rotary = has_rotary(modules)
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    parallel = _parallel_residual(cfg)
    for i in range(len(modules[blocks])):
        b = f"{blocks}.{i}"
        kids = dict(modules[b].named_children())
        attn = next((f"{b}.{c}" for c in ATTN_CHILD if c in kids), None)
        mlp_child = next((c for c in MLP_CHILD if c in kids), None)
        mlp = f"{b}.{mlp_child}" if mlp_child else b
        norms = [c for c, m in kids.items() if _is_norm(m)]
        # sandwich / post-norm blocks (Gemma 2 and 3, OLMo 2) normalise each sublayer's output before it
        # joins the residual stream: that norm's output is what the sublayer adds
        sandwich = any(c.startswith("post_feedforward") for c in norms)
        p = f"blocks.{i}"
        post_norm_block = ({"sa_layer_norm", "output_layer_norm"} <= set(norms)
                           or getattr(cfg, "do_layer_norm_before", True) is False)
        out[f"{p}.hook_resid_pre"] = (b, "input", None)
        out[f"{p}.hook_resid_post"] = (b, "output", None)
        post_ln = attn is not None and f"{attn}.output.LayerNorm" in modules  # BERT-style: sublayer + residual + LN
        if attn:
            if post_ln and f"{attn}.output.dense" in modules:
                # the module returns LayerNorm(residual + its output): its contribution is the O projection
                out[f"{p}.hook_attn_out"] = (f"{attn}.output.dense", "output", None)
            elif sandwich and "post_attention_layernorm" in kids:
                out[f"{p}.hook_attn_out"] = (f"{b}.post_attention_layernorm", "output", None)
            elif not _adds_residual(modules[attn]):
                out[f"{p}.hook_attn_out"] = (attn, "output", None)
            for tl, kind in ATTN_KINDS.items():
                if kind in ("q_rot", "k_rot") and not rotary:
                    continue
                out[f"{p}.attn.{tl}"] = (attn, "output", kind)
        if post_ln and f"{b}.output.dense" in modules and f"{b}.output.LayerNorm" in modules:
            out[f"{p}.hook_mlp_out"] = (f"{b}.output.dense", "output", None)  # before its residual + LayerNorm
        elif sandwich:
            out[f"{p}.hook_mlp_out"] = (f"{b}.{next(c for c in norms if c.startswith('post_feedforward'))}", "output", None)
        elif mlp_child and not _adds_residual(modules[mlp]):
            out[f"{p}.hook_mlp_out"] = (mlp, "output", None)
        out[f"{p}.mlp.hook_pre"] = (mlp, "output", "pre")
        out[f"{p}.mlp.hook_post"] = (mlp, "output", "post")
        pre = [c for c in norms if not c.startswith("post_")] if sandwich else norms  # the norms sublayers read
        if post_norm_block:  # DistilBERT, OPT-350m: each norm follows its sublayer; none is read by one
            pre = []
        if "input_layernorm" in pre:  # the attention's norm, wherever it was registered (Falcon: second)
            pre = ["input_layernorm"] + [c for c in pre if c != "input_layernorm"]
        if sandwich and mlp_child and len(pre) < 2 and not parallel:  # OLMo 2: no norm before the MLP
            out[f"{p}.hook_resid_mid"] = (mlp, "input", None)
        if len(pre) >= 2:  # (pre is all of a pre-LN block's norms, Gemma's two input norms, or empty)
            out[f"{p}.ln1.hook_normalized"] = (f"{b}.{pre[0]}", "output", None)
            out[f"{p}.ln2.hook_normalized"] = (f"{b}.{pre[1]}", "output", None)
            if not parallel:
                out[f"{p}.hook_resid_mid"] = (f"{b}.{pre[1]}", "input", None)
    finals = [n for n, m in modules.items() if _is_norm(m) and not n.startswith(blocks + ".")
              and "embeddings" not in n and n.count(".") <= 1
              and not any(p in n.split(".")[0] for p in ("head", "pooler"))]  # SigLIP's pooling head
    if finals:
        out["ln_final.hook_normalized"] = (finals[-1], "output", None)
    return out
