"""Attention probabilities on a model loaded with sdpa: the model is switched to eager with a logged
notice and the rows equal ``output_attentions=True``; an attention that returns no probabilities
when the forward runs (switched back to sdpa behind actlake's back) is one clear HookError."""
from __future__ import annotations

import logging

import pytest
import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hooks import Capture, resolve_hooks


def gpt2():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    return GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16,
                                      attn_implementation="sdpa")).eval()


def test_probs_switch_sdpa_to_eager_with_a_notice(caplog):
    m = gpt2()
    assert m.config._attn_implementation == "sdpa"
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    with caplog.at_level(logging.WARNING, logger="actlake"):
        hooks = resolve_hooks(m, parse_hooks(["blocks.1.attn.hook_pattern"]), key_len=6)
    assert m.config._attn_implementation == "eager"
    assert any("switching the model to 'eager'" in r.getMessage() for r in caplog.records)
    with Capture(m, hooks) as cap:
        cap.run(input_ids=ids)
        got = cap.run(input_ids=ids)["blocks.1.attn.hook_pattern"]
    with torch.no_grad():
        want = m(input_ids=ids, output_attentions=True).attentions[1].transpose(1, 2)
    assert torch.allclose(got, want, atol=1e-6)


def test_attention_without_probabilities_is_a_hook_error():
    m = gpt2()
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(0))
    hooks = resolve_hooks(m, parse_hooks(["transformer.h.0.attn:probs"]), key_len=6)
    m.set_attn_implementation("sdpa")
    with pytest.raises(HookError, match="no attention probabilities"), Capture(m, hooks) as cap:
        cap.run(input_ids=ids)
