"""Named hook kinds (per-head q/k/v, attention scores/probabilities, head outputs, MLP pre/post
activation) as *taps* on real modules plus a pure function that combines what the taps saw.

Everything is found by name among the named module's descendants (``q_proj``/``query``/``c_attn``,
``o_proj``/``out_proj``/``c_proj``/``dense``, the activation module), never by attribute chains, so
Llama/SmolLM2, GPT-2, BERT/ALBERT, ViT/DeiT/DINOv2/CLIP-vision and ConvNeXt/ResNet module layouts of
transformers 5 all resolve through the same rules.  Per-head splits use the attention module's own
``head_dim``/``attention_head_size``; rotary embeddings use the modeling module's own
``apply_rotary_pos_emb`` on the ``position_embeddings`` (cos, sin) the attention module receives.
"""
from __future__ import annotations

import inspect
import re
import sys
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Callable

import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import KEY_AXIS_KINDS

Q_NAMES = ("q_proj", "query", "q", "self.query", "query_proj")  # query_proj: DeBERTa
K_NAMES = ("k_proj", "key", "k", "self.key", "key_proj")
V_NAMES = ("v_proj", "value", "v", "self.value", "value_proj")
# one projection holding q, k and v along the last axis (layouts: ``fused_part``)
FUSED_NAMES = ("c_attn", "qkv", "qkv_proj", "query_key_value", "Wqkv", "in_proj")
OUT_NAMES = ("o_proj", "out_proj", "c_proj", "output.dense", "dense", "Wo")  # Wo: ModernBERT
ACT_NAMES = ("act_fn", "act", "activation_fn", "intermediate_act_fn", "activation")
ATTN_MARKERS = ("attn", "attention")


@dataclass(frozen=True)
class Tap:
    """One value seen at a module per call: ``out`` (first output tensor), ``in`` (first input),
    ``out1`` (second output: attention weights), ``kw:NAME`` (a keyword argument)."""

    module: str
    what: str


@dataclass
class Plan:
    """How to compute one hook: the taps to record and ``combine(values) -> (B, T, ...)``."""

    taps: list[Tap]
    combine: Callable[[list], torch.Tensor]
    rotary: bool | None = None
    needs_eager: bool = False
    meta: dict = field(default_factory=dict)


def first_tensor(x) -> torch.Tensor:
    """The first tensor of a module's output (tensor, tuple, or a ModelOutput)."""
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    if hasattr(x, "logits"):
        return x.logits
    raise HookError(f"hooked value of type {type(x).__name__} holds no tensor")


def _children(modules: dict[str, torch.nn.Module], root: str) -> dict[str, torch.nn.Module]:
    """Descendants of ``root`` by path relative to it."""
    p = root + "."
    return {n[len(p):]: m for n, m in modules.items() if n.startswith(p)}


def _find(modules: dict, root: str, names: tuple[str, ...], also_parent: bool = True) -> str | None:
    """Path of the first descendant of ``root`` (then of its parent) whose relative path is one of
    ``names`` (tried in order)."""
    roots = [root]
    if also_parent and "." in root:
        roots.append(root.rsplit(".", 1)[0])
    for r in roots:
        rel = _children(modules, r)
        for nm in names:
            if nm in rel:
                return f"{r}.{nm}"
    return None


def head_dim(attn: torch.nn.Module, cfg) -> int:
    """Head size from the attention module's own attributes, else ``hidden_size / heads`` of the config."""
    for a in ("head_dim", "attention_head_size"):
        v = getattr(attn, a, None)
        if isinstance(v, int) and v > 0:
            return v
    heads = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    hidden = getattr(cfg, "hidden_size", None) or getattr(cfg, "n_embd", None)
    if not heads or not hidden:
        raise HookError(f"cannot tell the head size of {type(attn).__name__}")
    return hidden // heads


_ACT_CLASS = re.compile(r"(gelu|relu|silu|swish|mish|tanh|sigmoid|softplus|elu|activation)$", re.IGNORECASE)


def is_activation(name: str, mod: torch.nn.Module) -> bool:
    """A leaf module that is a nonlinearity: named like one (``act_fn``, ``act``, ...) or of a class
    named like one (``GELUActivation``, ``nn.SiLU``, BLOOM's ``BloomGelu`` behind ``gelu_impl``)."""
    leaf = name.rsplit(".", 1)[-1]
    cls = type(mod).__name__
    return (leaf in ACT_NAMES or bool(_ACT_CLASS.search(cls))) and not list(mod.children())


@lru_cache(maxsize=None)
def _signature(cls: type) -> inspect.Signature | None:
    try:
        return inspect.signature(cls.forward)
    except (TypeError, ValueError):
        return None


def forward_signature(mod: torch.nn.Module) -> inspect.Signature | None:
    """The signature of the module class's ``forward`` (``self`` first), cached per class: read at
    plan time and, for arguments passed by position, on every call of a hooked module."""
    return _signature(type(mod))


def takes(mod: torch.nn.Module, name: str) -> bool:
    """Whether the module's ``forward`` has a parameter ``name``."""
    sig = forward_signature(mod)
    return sig is not None and name in sig.parameters


def is_routed(module: str) -> bool:
    """Whether a module runs on tokens routed to mixture-of-experts experts (a path through ``experts``):
    its rows are (token, expert) pairs grouped by expert, not the batch's tokens in order."""
    return any(seg in ("experts", "expert") for seg in module.split("."))


def find_activation(modules: dict, root: str) -> str:
    """The one nonlinearity under ``root`` outside attention (MLP pre/post activation)."""
    rel = _children(modules, root)
    hits = [n for n, m in rel.items() if is_activation(n, m) and not any(k in n for k in ATTN_MARKERS)
            and "pooler" not in n]
    if not hits and is_activation(root, modules[root]):
        return root
    routed = [h for h in hits if is_routed(h)]
    if routed:
        raise HookError(f"module {root!r} is a mixture of experts: {root}.{routed[0]} runs on the tokens routed to "
                        "each expert, not on token rows; hook the MoE output (blocks.L.hook_mlp_out) or a shared "
                        "expert's MLP")
    if len(hits) != 1:
        what = "no activation module" if not hits else f"{len(hits)} activation modules ({', '.join(hits)})"
        raise HookError(f"module {root!r} has {what}; name the MLP (or the activation itself) for :pre/:post")
    return f"{root}.{hits[0]}"


def _split_heads(t: torch.Tensor, hd: int) -> torch.Tensor:
    return t.reshape(*t.shape[:-1], t.shape[-1] // hd, hd)


QK_NORMS = {"q": ("q_norm", "q_layernorm", "query_layernorm"), "k": ("k_norm", "k_layernorm", "key_layernorm")}


def _qk_used(modules: dict, root: str, which: str, heads: int, hd: int, cfg
             ) -> tuple[list[Tap], Callable[[list], torch.Tensor]]:
    """q or k as the attention uses them, (B, T, heads, hd): after the module's QK-norm where it has one
    (Qwen3, Gemma 3, OLMo 2, Cohere, Persimmon/StableLM: ``q_norm``/``q_layernorm``), else the projection.
    Taps: [projection, norm?]; the norm's output may be flat (B, T, H·hd), per head (B, T, H, hd) or
    heads first (B, H, T, hd) — told apart by the projection's T."""
    tap, pick = _qkv_taps(modules, root, which, heads, hd, cfg)
    norm = _find(modules, root, QK_NORMS[which], also_parent=False)
    if norm is None:
        return [tap], lambda vals: _split_heads(pick(vals[0]), hd)

    def normed(vals):
        t, n = vals[1], vals[0].shape[1]
        if t.dim() == 3:
            return _split_heads(t, hd)
        return t.transpose(1, 2) if t.shape[1] != n and t.shape[2] == n else t
    return [tap, Tap(norm, "out")], normed


def num_heads(attn: torch.nn.Module, cfg) -> int:
    """Query heads, from the attention module's own attributes, else the config."""
    for a in ("num_heads", "num_attention_heads", "n_head"):
        v = getattr(attn, a, None)
        if isinstance(v, int) and v > 0:
            return v
    v = getattr(cfg, "num_attention_heads", None) or getattr(cfg, "n_head", None)
    if not v:
        raise HookError(f"cannot tell the number of heads of {type(attn).__name__}")
    return int(v)


def fused_part(t: torch.Tensor, which: str, heads: int, hd: int, per_head: bool, grouped: bool) -> torch.Tensor:
    """q, k or v out of a fused projection's output ``t`` (…, W), flattened to (…, heads_of_it · hd).

    Layouts (W = (heads + 2·kv_heads) · hd; kv_heads from W):
      sequential (GPT-2 ``c_attn``, GPT-BigCode multi-query, Phi-3 ``qkv_proj``, Falcon multi-query,
        ``Wqkv``, ``in_proj``): [q (heads·hd) | k (kv·hd) | v (kv·hd)];
      ``per_head`` (GPT-NeoX/Pythia, BLOOM, Falcon-7B-style ``query_key_value``): per head [q | k | v];
      ``grouped`` (Falcon ``new_decoder_architecture``): per kv head [q … q (heads/kv) | k | v].
    Raises HookError when W does not split into whole heads this way."""
    lead, n = t.shape[:-1], t.shape[-1] // hd
    kv = (n - heads) // 2
    if t.shape[-1] % hd or kv < 1 or heads + 2 * kv != n or heads % kv:
        raise HookError(f"a fused q/k/v projection of width {t.shape[-1]} does not split into {heads} query "
                        f"heads of size {hd} plus whole key/value heads")
    i = "qkv".index(which)
    if grouped or (per_head and kv == heads):
        x = t.reshape(*lead, kv, heads // kv + 2, hd)
        part = x[..., : heads // kv, :] if i == 0 else x[..., heads // kv + i - 1, :]
        return part.reshape(*lead, -1)
    return torch.split(t, [heads * hd, kv * hd, kv * hd], dim=-1)[i]


def _qkv_taps(modules: dict, root: str, which: str, heads: int, hd: int, cfg
              ) -> tuple[Tap, Callable[[torch.Tensor], torch.Tensor]]:
    names = {"q": Q_NAMES, "k": K_NAMES, "v": V_NAMES}[which]
    m = _find(modules, root, names)
    if m is not None:
        return Tap(m, "out"), lambda t: t
    fused = _find(modules, root, FUSED_NAMES)
    if fused is not None:
        per_head = fused.rsplit(".", 1)[-1] == "query_key_value"
        grouped = per_head and bool(getattr(cfg, "new_decoder_architecture", False))
        return Tap(fused, "out"), lambda t: fused_part(t, which, heads, hd, per_head, grouped)
    raise HookError(f"module {root!r} has no {which} projection (looked for {', '.join(names + FUSED_NAMES)}); "
                    "name an attention module")


BIAS_ARGS = ("alibi", "position_bias")  # per-head biases added to the scores, passed to the attention


def score_bias_arg(attn: torch.nn.Module, cfg) -> str | None:
    """The keyword by which the attention receives biases added to its scores (ALiBi, Press et al.
    2022: BLOOM and Falcon ``alibi``, MPT ``position_bias``), or None; Falcon's config can turn ALiBi off."""
    if not getattr(cfg, "alibi", True) and takes(attn, "alibi"):
        return None
    return next((a for a in BIAS_ARGS if takes(attn, a)), None)


def _apply_rotary(attn: torch.nn.Module, q: torch.Tensor, k: torch.Tensor, pe) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, T, H, hd) q/k → rotated, with the modeling module's own ``apply_rotary_pos_emb``.

    The whole head is passed first (functions that slice a partial rotary themselves, GPT-NeoX, or
    take a half-width ``cos``, GPT-OSS); where that fails on shapes and ``cos`` is narrower than a head
    (Phi's partial rotary), only the first ``cos.shape[-1]`` dims are turned and the rest pass through,
    as the model does.
    Raises HookError when the module's rotary function cannot be applied this way (GPT-J's takes
    other arguments): the kinds before rotary (``:q``, ``:k``) still work there."""
    fn = getattr(sys.modules[type(attn).__module__], "apply_rotary_pos_emb", None)
    if fn is None or not isinstance(pe, (tuple, list)) or len(pe) != 2:
        raise HookError(f"{type(attn).__name__} applies no rotary embedding actlake can reproduce; "
                        "use :q / :k (before rotary)")
    cos, sin = pe
    qt, kt = q.transpose(1, 2), k.transpose(1, 2)
    rd = int(cos.shape[-1])
    try:
        try:  # the whole head: also functions that take a half-width cos (GPT-OSS) or slice it themselves
            qr, kr = fn(qt, kt, cos, sin)
        except RuntimeError:
            if rd >= qt.shape[-1]:
                raise
            qr, kr = fn(qt[..., :rd], kt[..., :rd], cos, sin)  # partial rotary the function leaves to the caller
            qr, kr = torch.cat([qr, qt[..., rd:]], dim=-1), torch.cat([kr, kt[..., rd:]], dim=-1)
    except (TypeError, RuntimeError, ValueError) as e:
        raise HookError(f"{type(attn).__name__}: its rotary embedding cannot be applied outside the model "
                        f"({str(e).splitlines()[0][:120]}); use :q / :k (before rotary)") from None
    return qr.transpose(1, 2), kr.transpose(1, 2)


def mask_bias(mask, s: torch.Tensor) -> torch.Tensor | float:
    """The biases an additive float attention mask carries on the keys it does not mask, as
    (B | 1, Tq, H | 1, Tk) to add to scores ``s`` (B, Tq, H, Tk): 0 for plain causal/padding masks;
    BEiT's relative position bias and Falcon's folded ALiBi.  Masked entries (below half the dtype's
    minimum, or -inf) add nothing: ``:scores`` are before the mask.  Boolean masks carry no bias.
    Raises HookError when the mask's shape does not match the scores'."""
    if not isinstance(mask, torch.Tensor) or not mask.is_floating_point() or mask.dim() != 4:
        return 0.0
    m = mask[..., -s.shape[1]:, -s.shape[-1]:]
    if m.shape[-2:] != (s.shape[1], s.shape[-1]) or m.shape[1] not in (1, s.shape[2]):
        raise HookError(f"attention mask {tuple(mask.shape)} does not match scores {tuple(s.shape)}")
    kept = m > torch.finfo(m.dtype).min / 2
    return torch.where(kept, m, torch.zeros((), dtype=m.dtype, device=m.device)).float().transpose(1, 2)


def has_rotary(modules: dict) -> bool:
    return any(type(m).__name__.endswith("RotaryEmbedding") for m in modules.values())


def plan_kind(model: torch.nn.Module, modules: dict, module: str, kind: str) -> Plan:
    """Taps and combine function for ``module:kind``; HookError when the architecture lacks it."""
    cfg = getattr(model, "config", None)
    cfg = getattr(cfg, "text_config", None) or cfg
    if kind in ("pre", "post"):
        act = find_activation(modules, module)
        parent = modules[act.rsplit(".", 1)[0]] if "." in act else model

        def combine(vals, _parent=parent):
            t = vals[0]
            if t.dim() == 4 and any(isinstance(c, torch.nn.Linear) and c.out_features == t.shape[-1]
                                    for c in _parent.children()):
                t = t.permute(0, 3, 1, 2)  # channels-last after a Linear (ConvNeXt) → (B, C, H, W)
            return t
        return Plan([Tap(act, "in" if kind == "pre" else "out")], combine, meta={"module": act})
    attn = modules[module]
    bias_arg = score_bias_arg(attn, cfg)
    rotary = has_rotary(modules) and bias_arg != "alibi"  # Falcon with ALiBi keeps its unused rotary module
    if kind in ("q_rot", "k_rot") and not rotary:
        raise HookError(f"hook kind :{kind} needs a rotary model; {type(model).__name__} has none (use :{kind[0]})")
    hd = head_dim(attn, cfg)
    nh = num_heads(attn, cfg) if kind != "probs" else 0
    if kind in ("q", "k", "v"):
        tap, pick = _qkv_taps(modules, module, kind, nh, hd, cfg)
        return Plan([tap], lambda vals: _split_heads(pick(vals[0]), hd),
                    rotary=False if kind != "v" else None, meta={"module": tap.module})
    if kind == "z":
        out = _find(modules, module, OUT_NAMES)
        if out is None:
            raise HookError(f"module {module!r} has no output projection (looked for {', '.join(OUT_NAMES)})")
        return Plan([Tap(out, "in")], lambda vals: _split_heads(vals[0], hd), meta={"module": out})
    if kind in ("q_rot", "k_rot", "scores"):
        (tq, pq), (tk, pk) = (_qk_used(modules, module, w, nh, hd, cfg) for w in "qk")
        nq, nk = len(tq), len(tk)
        taps = tq + tk + ([Tap(module, "kw:position_embeddings")] if rotary else [])
        scale = next((float(v) for a in ("scaling", "scale", "softmax_scale", "inv_norm_factor")
                      if isinstance(v := getattr(attn, a, None), (int, float)) and v), hd ** -0.5)
        if kind == "scores" and getattr(attn, "relative_attention", False):
            raise HookError(f"{type(attn).__name__} adds disentangled content-position terms (DeBERTa) to its "
                            "scores: :scores cannot be rebuilt from q and k; use :q / :k / :v")
        biased = kind == "scores" and bias_arg is not None
        beta = float(getattr(attn, "beta", 1.0)) if biased else 0.0  # BLOOM, MPT: 1; Falcon: 1/sqrt(hd)
        at_bias = len(taps)
        if biased:
            taps.append(Tap(module, f"kw:{bias_arg}"))
        at_mask = len(taps)
        if kind == "scores":  # an additive float mask may carry biases too (BEiT's relative positions)
            taps.append(Tap(module, "kw:attention_mask"))

        softcap = getattr(attn, "attn_logit_softcapping", None) if kind == "scores" else None  # Gemma 2

        def qk(vals):
            q, k = pq(vals[:nq]), pk(vals[nq:nq + nk])
            return _apply_rotary(attn, q, k, vals[nq + nk]) if rotary else (q, k)

        if kind == "q_rot":
            return Plan(taps, lambda vals: qk(vals)[0], rotary=True)
        if kind == "k_rot":
            return Plan(taps, lambda vals: qk(vals)[1], rotary=True)

        def scores(vals):
            q, k = qk(vals)  # (B, T, H, hd), (B, T, Hkv, hd)
            k = k.repeat_interleave(q.shape[2] // k.shape[2], dim=2)
            s = torch.einsum("bqhd,bkhd->bqhk", q.float(), k.float()) * scale
            if softcap:  # Gemma 2: cap·tanh(s / cap), before the biases and the mask
                s = torch.tanh(s / softcap) * softcap
            bias = vals[at_bias] if biased else None
            if biased and bias is None and getattr(attn, "has_relative_attention_bias", False):
                raise HookError(f"{type(attn).__name__} computes its relative position bias inside the module "
                                "(T5's first layer): its :scores cannot be rebuilt; use :probs or a later layer")
            if bias is not None:  # (B·H | H, 1 | Tq, Tk) → (B | 1, Tq | 1, H, Tk)
                b = bias.float()
                b = b.reshape(-1, q.shape[2], *b.shape[-2:])[..., -s.shape[1]:, -s.shape[-1]:].transpose(1, 2)
                s = s + beta * b
            return s + mask_bias(vals[at_mask], s)
        return Plan(taps, scores, rotary=rotary)
    if kind == "probs":
        if not any(m in module.rsplit(".", 1)[-1].lower() for m in ATTN_MARKERS + ("self",)):
            raise HookError(f"hook kind :probs needs an attention module, not {module!r}")
        return Plan([Tap(module, "out1")], lambda vals: vals[0].transpose(1, 2), needs_eager=True)
    raise HookError(f"unknown hook kind {kind!r}")


def pad_keys(t: torch.Tensor, key_len: int | None) -> torch.Tensor:
    """(B, T, H, K) → (B, T, H, key_len), zero-padded (contexts shorter than the store's key axis)."""
    if key_len is None or t.shape[-1] == key_len:
        return t
    if t.shape[-1] > key_len:
        raise HookError(f"attention over {t.shape[-1]} keys exceeds the store's key axis of {key_len}")
    return torch.nn.functional.pad(t, (0, key_len - t.shape[-1]))


def is_key_axis(kind: str | None) -> bool:
    return kind in KEY_AXIS_KINDS
