"""Wildcards: a component that is exactly ``*`` matches one whole component; inside a component
``*``/``?``/``[..]`` match like fnmatch and never cross a ``.`` (README, docs/hooks.md)."""
from __future__ import annotations

import pytest
import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hooks import match_pattern, resolve_hooks

NAMES = [f"model.layers.{i}" for i in range(21)] + [f"model.layers.{i}.mlp" for i in range(21)] + ["model.norm"]


def test_star_component_matches_one_whole_component():
    assert match_pattern("model.layers.*", NAMES) == [f"model.layers.{i}" for i in range(21)]
    assert match_pattern("model.*.3.mlp", NAMES) == ["model.layers.3.mlp"]
    assert match_pattern("*", NAMES) == []  # one component: no top-level module here


def test_partial_star_is_fnmatch_inside_one_component():
    want = ["model.layers.1"] + [f"model.layers.{i}" for i in range(10, 20)]
    assert match_pattern("model.layers.1*", NAMES) == want
    assert match_pattern("model.layers.?", NAMES) == [f"model.layers.{i}" for i in range(10)]
    assert match_pattern("model.layers.[02]", NAMES) == ["model.layers.0", "model.layers.2"]
    assert match_pattern("model.layers.1*.mlp", NAMES) == [f"{n}.mlp" for n in want]


def test_exact_name_has_no_wildcards():
    assert match_pattern("model.layers.1", NAMES) == ["model.layers.1"]
    assert match_pattern("model.layers", NAMES) == []


def test_resolve_on_a_real_model():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=12, n_head=2, n_positions=16))
    got = [h.name for h in resolve_hooks(m, parse_hooks(["transformer.h.1*"]))]
    assert got == ["transformer.h.1", "transformer.h.10", "transformer.h.11"]
    got = [h.name for h in resolve_hooks(m, parse_hooks(["blocks.1*.hook_resid_post"]))]
    assert got == ["blocks.1.hook_resid_post", "blocks.10.hook_resid_post", "blocks.11.hook_resid_post"]
    with pytest.raises(HookError, match="closest"):
        resolve_hooks(m, parse_hooks(["transformer.h.2*.mlp.actt"]))


def test_every_unknown_hook_is_named_in_one_error():
    from transformers import GPT2Config, GPT2LMHeadModel

    m = GPT2LMHeadModel(GPT2Config(vocab_size=50, n_embd=16, n_layer=2, n_head=2, n_positions=16))
    with pytest.raises(HookError) as e:
        resolve_hooks(m, parse_hooks(["blocks.9.hook_resid_post", "transformer.h.0", "transformer.h.1.mlpp"]))
    msg = str(e.value)
    assert "blocks.9.hook_resid_post" in msg and "transformer.h.1.mlpp" in msg and "transformer.h.1.mlp" in msg
    assert "'transformer.h.0'" not in msg  # the good one is not blamed
