"""Resolve hook patterns against a model's module tree and capture them in one forward pass.

Hooks are found by name (``named_modules``), never by attribute paths, because libraries rename
their internals (transformers 5 moved ViT's ``encoder.layer`` to ``encoder.layers``).  Named kinds
(``:q``, ``:probs``, ``:pre`` ...) are planned in ``hook_kinds`` as taps on real modules; standard
TransformerLens names are aliases from ``hook_aliases``.

Modules that run several times per forward (ALBERT's shared layer) are always detected: the first
forward of a model runs uncut and counts every tapped module's calls; a hook without ``:call=N`` /
``:call=all`` on such a module is refused with a HookError naming the hook and the count."""
from __future__ import annotations

import difflib
import fnmatch
import logging
import os
import re
import weakref
from dataclasses import dataclass, field

import torch

from actlake.schemas.errors import ActlakeError, HookError, ModelError
from actlake.schemas.hooks import HookSpec, hook_suffix
from actlake.workers.hook_aliases import alias_table
from actlake.workers.hook_kinds import (Plan, Tap, first_tensor, forward_signature, is_key_axis, is_routed,
                                        pad_keys, plan_kind)

log = logging.getLogger("actlake")

# Per-model call counts of tapped modules, measured by the first (uncut) forward pass.
_CALLS: "weakref.WeakKeyDictionary[torch.nn.Module, dict[str, int]]" = weakref.WeakKeyDictionary()


@dataclass(frozen=True)
class ResolvedHook:
    name: str
    module_name: str
    io: str
    kind: str | None = None
    call: int | str | None = None
    plan: Plan | None = field(default=None, compare=False, hash=False)

    @property
    def taps(self) -> list[Tap]:
        if self.plan is not None:
            return self.plan.taps
        return [Tap(self.module_name, "in" if self.io == "input" else "out")]


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def match_pattern(pattern: str, names: list[str]) -> list[str]:
    """Names matching a dotted pattern, in natural order.

    Components are matched one to one: a component that is exactly ``*`` matches any one whole
    component; inside a component ``*``, ``?`` and ``[..]`` behave as in ``fnmatch`` (``1*`` matches
    ``1`` and ``10``-``19``), never crossing a ``.``.  A pattern without wildcards matches itself."""
    parts = pattern.split(".")
    if not any(ch in pattern for ch in "*?["):
        return [pattern] if pattern in set(names) else []
    hits = []
    for n in names:
        comps = n.split(".")
        if len(comps) == len(parts) and all(fnmatch.fnmatchcase(c, p) for c, p in zip(comps, parts)):
            hits.append(n)
    return sorted(hits, key=_natural_key)


# a dual encoder's loaded tower (its full model's path prefix) → (tower, data, other prefix, other data)
TOWERS = {"vision_model.": ("vision", "images", "text_model.", "text"),
          "text_model.": ("text", "text", "vision_model.", "images")}


def resolve_hooks(model: torch.nn.Module, specs: list[HookSpec], key_len: int | None = None) -> list[ResolvedHook]:
    """Expand wildcards and aliases into concrete hooks; unknown names list the closest ones.

    ``key_len``: the key axis of ``:scores``/``:probs`` rows (the context length for text; None for
    vision, where every image has the same token count).  A model whose attention implementation does
    not materialise probabilities is switched to ``eager`` (logged) when ``:probs`` is asked for.
    Raises HookError."""
    modules = dict(model.named_modules())
    names = [n for n in modules if n]
    aliases = alias_table(model)
    out: list[ResolvedHook] = []
    unknown: list[str] = []
    tower = getattr(model, "actlake_tower_prefix", None)  # "vision_model."/"text_model." of a dual encoder's paths
    for spec in specs:
        module = spec.module
        if tower and module.startswith(tower) and not match_pattern(module, names):
            module = module[len(tower):]  # CLIPModel's vision_model.encoder.layers.1 → the tower's encoder.layers.1
        hits = [(h, h, spec.io, spec.kind) for h in match_pattern(module, names)]
        for a in match_pattern(module, list(aliases)):
            mod, io, kind = aliases[a]
            if spec.kind and kind:
                raise HookError(f"hook {spec.name!r}: alias {a} already names a kind (:{kind})")
            if spec.io == "input" and (kind or io == "input"):
                raise HookError(f"hook {spec.name!r}: ':input' does not apply to alias {a}")
            hits.append((a, mod, "input" if spec.io == "input" else io, spec.kind or kind))
        if not hits and tower in TOWERS:
            runs, data, other, other_data = TOWERS[tower]
            if module.startswith(other):
                raise HookError(f"hook {spec.name!r}: on {data} this dual-encoder checkpoint runs only its {runs} "
                                f"tower ({other}* is not loaded); hook the {runs} tower (`actlake hooks MODEL` lists "
                                f"the vision tower), or give it {other_data}")
        if not hits:
            pool = names + list(aliases)
            close = difflib.get_close_matches(spec.module, pool, n=5, cutoff=0.5)
            if not close and "*" in spec.module:
                close = [n for n in pool if fnmatch.fnmatch(n, spec.module.split("*")[0] + "*")][:5]
            hint = f" (closest: {', '.join(close)})" if close else ""
            unknown.append(f"{spec.name!r}{hint}")
            continue
        for shown, mod, io, kind in hits:
            name = shown + hook_suffix(spec.io, spec.kind, spec.call)
            plan = plan_kind(model, modules, mod, kind) if kind else None
            r = ResolvedHook(name, mod, io, kind, spec.call, plan)
            if r not in out:
                out.append(r)
    if unknown:  # every bad name at once, so one corrected command works
        raise HookError(f"unknown hook{'s' if len(unknown) > 1 else ''} {'; '.join(unknown)}: no module or alias of "
                        "that name in the model (`actlake hooks MODEL` lists them)")
    if any(r.plan is not None and r.plan.needs_eager for r in out):
        impl = getattr(model.config, "_attn_implementation", None)
        if impl != "eager":
            log.warning("actlake: attention implementation %r does not materialise probabilities; "
                        "switching the model to 'eager' for :probs hooks", impl)
            try:
                model.set_attn_implementation("eager")
                if getattr(model.config, "_attn_implementation", None) != "eager":
                    # models that pick the implementation per forward from the config but refuse the
                    # dynamic switch (Falcon: it only warns); a model that still returns no
                    # probabilities is a HookError at capture
                    model.config._attn_implementation = "eager"
            except Exception as e:
                raise HookError(f"attention probabilities need the eager attention implementation, which "
                                f"{type(model).__name__} refuses ({e})") from None
    for r in out:
        if is_key_axis(r.kind) and key_len is not None:
            r.plan.meta["key_len"] = key_len  # type: ignore[union-attr]
    return out


def _argument(mod: torch.nn.Module, name: str, args: tuple, kwargs: dict):
    """The value of ``mod.forward``'s parameter ``name`` in this call, passed by keyword or by position
    (BLOOM passes ``alibi`` by keyword, older code by position); None when not passed."""
    if name in kwargs:
        return kwargs[name]
    sig = forward_signature(mod) if args else None
    if sig is None:
        return None
    try:
        bound = sig.bind_partial(mod, *args)
    except TypeError:
        return None
    return bound.arguments.get(name)


def _own(x):
    """A copy of a tensor seen by a hook: the model may change it in place later in the same forward
    (Falcon adds the attention output into the MLP's output tensor, ``mlp_output += attention_output``),
    and a reference would then hold the changed values."""
    return x.detach().clone() if isinstance(x, torch.Tensor) else x


def check_probabilities(mod_name: str, w: torch.Tensor, out: torch.Tensor) -> None:
    """Refuse a second output that is not attention probabilities of this batch: (B, H, Tq, Tk) of
    values in [0, 1] whose rows sum to at most 1 (less where every key is masked, or where an
    attention sink takes a share: GPT-OSS).  T5 returns its position bias there; without this check it
    would be stored as ``:probs``."""
    ok = isinstance(w, torch.Tensor) and w.dim() == 4 and w.shape[0] == out.shape[0]
    if ok:
        x = w.detach().float()
        ok = bool((x >= -1e-6).all()) and bool((x.sum(-1) <= 1 + 1e-2).all())
    if not ok:
        raise HookError(f"module {mod_name} returns no attention probabilities as its second output "
                        f"({type(w).__name__} {tuple(getattr(w, 'shape', ()))}); :probs is not available there")


MAX_FRAGMENT_BYTES = int(os.environ.get("ACTLAKE_MAX_FRAGMENT_BYTES", str(8 << 30)))


def check_row_sizes(infos: dict, fragment_rows: int, total_rows: int | None = None) -> None:
    """Refuse hooks whose rows cannot be held: a fragment's arrays live in host memory while it is
    filled.  Raises HookError with the size it would take (attention maps grow with context²)."""
    per_row = sum(i.row_bytes for i in infos.values())
    need = per_row * fragment_rows
    if need > MAX_FRAGMENT_BYTES:
        big = max(infos.values(), key=lambda i: i.row_bytes)
        total = f", {per_row * total_rows / 2**30:.1f} GiB in all" if total_rows else ""
        raise HookError(
            f"hooks need {per_row:,} bytes per row ({big.name}: shape {big.shape}), {need / 2**30:.1f} GiB per "
            f"fragment of {fragment_rows:,} rows{total} (limit {MAX_FRAGMENT_BYTES / 2**30:.0f} GiB, "
            "ACTLAKE_MAX_FRAGMENT_BYTES): use a shorter --context-len, smaller --fragment-tokens or fewer layers")


class StopForward(Exception):
    """Raised once every hook has fired, so layers after the deepest hook never run."""


class Capture:
    """Context manager: register hooks, run ``forward``, return {hook name: tensor}.

    Each hook is a set of taps (module + value); ``run`` returns ``combine(tap values)`` per hook, shape
    ``(B, T, ...)`` for token models or ``(B, C, H, W)`` for conv maps; ``:call=all`` stacks the calls
    on axis 2.  Raises HookError for shared modules without ``:call``, calls out of range, hooks that
    never fire, and attention implementations that return no probabilities."""

    def __init__(self, model: torch.nn.Module, hooks: list[ResolvedHook], cut: bool = True):
        self.model, self.hooks, self.cut = model, hooks, cut
        self.out: dict[str, torch.Tensor] = {}
        self._handles: list = []
        self.taps: list[Tap] = list(dict.fromkeys(t for h in hooks for t in h.taps))
        self._seen: dict[Tap, list] = {}
        self._count: dict[str, int] = {}
        self._need: dict[Tap, int] | None = None

    def __enter__(self) -> "Capture":
        modules = dict(self.model.named_modules())
        for mod_name in dict.fromkeys(t.module for t in self.taps):
            mine = [t for t in self.taps if t.module == mod_name]
            mod = modules[mod_name]
            if any(t.what in ("in",) or t.what.startswith("kw:") for t in mine):
                self._handles.append(mod.register_forward_pre_hook(self._pre(mod_name, mine), with_kwargs=True))
            self._handles.append(mod.register_forward_hook(self._post(mod_name, mine), with_kwargs=True))
        return self

    def _keep(self, tap: Tap) -> bool:
        """Whether the current call of ``tap`` must be kept (only the calls a hook selects)."""
        return True if self._need is None else len(self._seen[tap]) < self._need[tap]

    def _pre(self, mod_name: str, taps: list[Tap]):
        def hook(_mod, args, kwargs):
            for t in taps:
                if t.what == "in" and self._keep(t):
                    self._seen[t].append(_own(args[0] if args else next(iter(kwargs.values()), None)))
                elif t.what.startswith("kw:") and self._keep(t):
                    self._seen[t].append(_argument(_mod, t.what[3:], args, kwargs))
        return hook

    def _post(self, mod_name: str, taps: list[Tap]):
        def hook(_mod, args, kwargs, output):
            self._count[mod_name] = self._count.get(mod_name, 0) + 1
            for t in taps:
                if t.what == "out" and self._keep(t):
                    self._seen[t].append(_own(first_tensor(output)))
                elif t.what == "out1" and self._keep(t):
                    w = output[1] if isinstance(output, (tuple, list)) and len(output) > 1 else None
                    if w is None:
                        impl = getattr(self.model.config, "_attn_implementation", "?")
                        raise HookError(f"module {mod_name} returns no attention probabilities (attention "
                                        f"implementation {impl!r}); :probs needs 'eager'")
                    check_probabilities(mod_name, w, first_tensor(output))
                    self._seen[t].append(w)
            if self.cut and self._need is not None and all(len(self._seen[t]) >= n for t, n in self._need.items()):
                raise StopForward
        return hook

    def _needed(self, counts: dict[str, int]) -> dict[Tap, int]:
        need: dict[Tap, int] = {}
        for h in self.hooks:
            for t in h.taps:
                c = counts.get(t.module, 0)
                if c == 0:
                    raise HookError(f"hook {h.name} never fired during the forward pass")
                if h.call is None and c > 1:
                    raise HookError(f"hook {h.name} fires {c} times per forward pass (module {t.module} runs "
                                    f"{c} times); pick one with '{h.name}:call=N' (N = 0..{c - 1}) or all with "
                                    f"'{h.name}:call=all'")
                if isinstance(h.call, int) and h.call >= c:
                    raise HookError(f"hook {h.name}: module {t.module} runs {c} times per forward pass, "
                                    f"there is no call {h.call} (calls are numbered 0..{c - 1})")
                n = c if h.call == "all" else (h.call + 1 if isinstance(h.call, int) else 1)
                need[t] = max(need.get(t, 0), n)
        return need

    def run(self, **inputs) -> dict[str, torch.Tensor]:
        known = _CALLS.get(self.model, {})
        if self._need is None and all(t.module in known for t in self.taps):
            self._need = self._needed(known)
        self._seen = {t: [] for t in self.taps}
        self._count = {}
        try:
            with torch.inference_mode():
                self.model(**inputs)
        except StopForward:
            pass
        except ActlakeError:
            raise
        except (RuntimeError, TypeError, ValueError, AttributeError, IndexError, KeyError, NotImplementedError) as e:
            raise forward_error(self.model, inputs, e) from e
        if self._need is None:  # first forward of this model: ran uncut, count every call
            _CALLS.setdefault(self.model, {}).update({t.module: self._count.get(t.module, 0) for t in self.taps})
            self._need = self._needed(_CALLS[self.model])
        self.out = {}
        for h in self.hooks:
            calls = [0] if h.call is None else (list(range(self._need[h.taps[0]])) if h.call == "all" else [h.call])
            per_call = []
            for c in calls:
                vals = [self._seen[t][c] for t in h.taps]
                if h.plan is None:
                    if vals[0] is None:
                        raise HookError(f"hook {h.name}: module {h.module_name} got no positional input")
                    t = first_tensor(vals[0])
                else:
                    try:
                        t = h.plan.combine(vals)
                    except HookError:
                        raise
                    except (RuntimeError, TypeError, ValueError, IndexError, AttributeError) as e:
                        # a named kind whose recipe does not fit this architecture (head layout, ...)
                        raise HookError(f"hook {h.name}: :{h.kind} cannot be computed for "
                                        f"{type(self.model).__name__} ({str(e).splitlines()[0][:160]})") from None
                    if is_key_axis(h.kind):
                        t = pad_keys(_zero_padding_keys(t, inputs), h.plan.meta.get("key_len"))
                per_call.append(unflatten_tokens(t, inputs, h.plan.meta.get("module", h.module_name) if h.plan
                                                 else h.module_name).detach())
            self.out[h.name] = per_call[0] if h.call != "all" else torch.stack(per_call, dim=2)
        return self.out

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()


def forward_error(model: torch.nn.Module, inputs: dict, e: BaseException) -> ModelError:
    """One line for a model whose own forward fails on actlake's inputs (instead of an "unexpected"
    error): the model class, the inputs' shapes, the error, and what to try."""
    shapes = ", ".join(f"{k} {tuple(v.shape)}" for k, v in inputs.items() if isinstance(v, torch.Tensor))
    first = (str(e).splitlines() or [""])[0][:200]
    if isinstance(e, torch.OutOfMemoryError):
        hint = "lower --batch-size (or --context-len), or use a larger device"
    else:
        hint = ("this architecture may not run on these inputs alone (docs/hooks.md lists the families tried); "
                "ACTLAKE_DEBUG=1 shows the traceback")
    return ModelError(f"{type(model).__name__}'s forward failed on {shapes}: {type(e).__name__}: {first}; {hint}")


def _zero_padding_keys(t: torch.Tensor, inputs: dict) -> torch.Tensor:
    """(B, T, H, K) scores/probs with the keys the batch's ``attention_mask`` (B, K) marks as padding set
    to 0: a context shorter than the batch's is padded, and its scores against pad tokens are not
    the model's (its probabilities there are 0 already)."""
    mask = inputs.get("attention_mask")
    if not isinstance(mask, torch.Tensor) or mask.dim() != 2 or t.dim() != 4 or mask.shape[0] != t.shape[0] \
            or mask.shape[1] < t.shape[-1] or bool(mask.all()):
        return t
    keep = mask[:, None, None, : t.shape[-1]].to(torch.bool)
    return t.masked_fill(~keep, 0)


def unflatten_tokens(t: torch.Tensor, inputs: dict, module: str = "") -> torch.Tensor:
    """(B·T, F) → (B, T, F) for text models that flatten the token axes inside a block (OPT runs its
    MLP on ``hidden_states.reshape(-1, d)``, row-major over (batch, position)); anything else as is,
    and never a module under MoE ``experts`` (``is_routed``: with one expert per token its row count is
    B·T too, in expert order)."""
    ids = inputs.get("input_ids")
    if is_routed(module):
        return t
    if isinstance(t, torch.Tensor) and t.dim() == 2 and isinstance(ids, torch.Tensor) and ids.dim() == 2:
        b, n = ids.shape
        if b * n == t.shape[0] and n > 1:
            return t.reshape(b, n, t.shape[1])
    return t


HEAD_KINDS = frozenset({"q", "k", "v", "q_rot", "k_rot", "z", "scores", "probs"})


def row_layout(hook: ResolvedHook, t: torch.Tensor, vision: bool) -> tuple[list[int], str]:
    """Per-row shape and layout of a captured tensor: token maps ``(B, T, ...)`` → rows of
    ``t.shape[2:]``; conv maps ``(B, C, H, W)`` (vision, not a per-head kind) → H·W rows of width C.
    Raises HookError for tensors that are not row-shaped."""
    if vision and hook.call == "all" and t.dim() == 5 and hook.kind not in HEAD_KINDS:
        raise HookError(f"hook {hook.name}: ':call=all' stores token maps; for conv maps pick one call (:call=N)")
    if vision and t.dim() == 4 and hook.kind not in HEAD_KINDS and hook.call != "all":
        return [int(t.shape[1])], "spatial"
    if t.dim() < 3:
        raise HookError(f"hook {hook.name} gives shape {tuple(t.shape)}, not (batch, seq, ...): "
                        "it cannot be stored as token rows")
    return [int(x) for x in t.shape[2:]], "tokens"


def hook_meta(hook: ResolvedHook) -> dict:
    """Manifest fields of a resolved hook beyond module/io: kind, call, rotary."""
    return {"kind": hook.kind, "call": hook.call, "rotary": hook.plan.rotary if hook.plan is not None else None}
