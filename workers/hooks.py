"""Resolve hook patterns against a model's module tree and capture them in one forward pass.

Hooks are found by name (``named_modules``), never by attribute paths, because libraries rename
their internals (transformers 5 moved ViT's ``encoder.layer`` to ``encoder.layers``)."""
from __future__ import annotations

import difflib
import fnmatch
import re
from dataclasses import dataclass

import torch

from actlake.schemas.errors import ActlakeError
from actlake.schemas.hooks import HookSpec


@dataclass(frozen=True)
class ResolvedHook:
    name: str
    module_name: str
    io: str


def _natural_key(name: str) -> list:
    return [int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name)]


def resolve_hooks(model: torch.nn.Module, specs: list[HookSpec]) -> list[ResolvedHook]:
    """Expand wildcards (``*`` matches one path component); unknown names list the closest ones."""
    names = [n for n, _ in model.named_modules() if n]
    out: list[ResolvedHook] = []
    for spec in specs:
        if "*" in spec.module:
            rx = re.compile("^" + re.escape(spec.module).replace(r"\*", r"[^.]+") + "$")
            hits = sorted((n for n in names if rx.match(n)), key=_natural_key)
        else:
            hits = [spec.module] if spec.module in set(names) else []
        if not hits:
            close = difflib.get_close_matches(spec.module, names, n=5, cutoff=0.5)
            if not close and "*" in spec.module:
                close = [n for n in names if fnmatch.fnmatch(n, spec.module.split("*")[0] + "*")][:5]
            hint = f"; closest: {', '.join(close)}" if close else ""
            raise ActlakeError(f"unknown hook {spec.name!r}: no module named {spec.module!r} in the model{hint}")
        for h in hits:
            r = ResolvedHook(h if spec.io == "output" else f"{h}:input", h, spec.io)
            if r not in out:
                out.append(r)
    return out


class StopForward(Exception):
    """Raised once every hook has fired, so layers after the deepest hook never run."""


def _first_tensor(x):
    if isinstance(x, torch.Tensor):
        return x
    if isinstance(x, (tuple, list)) and x and isinstance(x[0], torch.Tensor):
        return x[0]
    if hasattr(x, "last_hidden_state"):
        return x.last_hidden_state
    raise ActlakeError(f"hooked value of type {type(x).__name__} holds no tensor")


class Capture:
    """Context manager: register hooks, run ``forward``, return {hook name: tensor}."""

    def __init__(self, model: torch.nn.Module, hooks: list[ResolvedHook], cut: bool = True):
        self.model, self.hooks, self.cut = model, hooks, cut
        self.out: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def __enter__(self) -> "Capture":
        modules = dict(self.model.named_modules())
        for h in self.hooks:
            mod = modules[h.module_name]
            if h.io == "input":
                self._handles.append(mod.register_forward_pre_hook(self._make(h.name, True), with_kwargs=True))
            else:
                self._handles.append(mod.register_forward_hook(self._make(h.name, False), with_kwargs=True))
        return self

    def _make(self, name: str, is_input: bool):
        def hook(_mod, args, kwargs, *maybe_out):
            if name in self.out:
                raise ActlakeError(f"hook {name} fires more than once per forward pass; pick a module used once")
            if is_input:
                val = args[0] if args else next(iter(kwargs.values()), None)
            else:
                val = maybe_out[0]
            self.out[name] = _first_tensor(val).detach()
            if self.cut and len(self.out) == len(self.hooks):
                raise StopForward
        return hook

    def run(self, **inputs) -> dict[str, torch.Tensor]:
        self.out = {}
        try:
            with torch.inference_mode():
                self.model(**inputs)
        except StopForward:
            pass
        missing = [h.name for h in self.hooks if h.name not in self.out]
        if missing:
            raise ActlakeError(f"hooks never fired during the forward pass: {', '.join(missing)}")
        return self.out

    def __exit__(self, *exc) -> None:
        for h in self._handles:
            h.remove()
        self._handles.clear()
