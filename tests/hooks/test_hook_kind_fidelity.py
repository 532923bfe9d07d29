"""Every hook kind equals a direct computation (plain torch hooks and formulas written here) on tiny
config-built Llama, GPT-2, BERT, ViT and ConvNeXt, and on the real SmolLM2 (slow); TransformerLens
aliases resolve to the same rows as the module paths they name."""
from __future__ import annotations

import pytest
import torch
from hookutil import capture, direct

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hooks import resolve_hooks


def rotate_half(x):
    x1, x2 = x[..., : x.shape[-1] // 2], x[..., x.shape[-1] // 2:]
    return torch.cat((-x2, x1), dim=-1)


def heads(t, hd):
    return t.reshape(*t.shape[:2], -1, hd)


@pytest.fixture(scope="module")
def llama():
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    return LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                        num_attention_heads=4, num_key_value_heads=2)).eval()


def _ids(T=6):
    return torch.randint(0, 100, (2, T), generator=torch.Generator().manual_seed(3))


def test_llama_every_kind(llama):
    ids = _ids()
    L = "model.layers.1"
    kinds = ["q", "k", "v", "q_rot", "k_rot", "scores", "probs", "z"]
    got = capture(llama, [f"{L}.self_attn:{k}" for k in kinds] + [f"{L}.mlp:pre", f"{L}.mlp:post",
                  f"{L}.input_layernorm:input", f"{L}.input_layernorm", "lm_head"], key_len=8, input_ids=ids)
    ref = direct(llama, [f"{L}.self_attn.q_proj", f"{L}.self_attn.k_proj", f"{L}.self_attn.v_proj",
                         f"{L}.self_attn.o_proj:input", f"{L}.mlp.act_fn:input", f"{L}.mlp.act_fn",
                         f"{L}.input_layernorm:input", f"{L}.input_layernorm", "lm_head"], input_ids=ids)
    hd = 8
    q, k = heads(ref[f"{L}.self_attn.q_proj"], hd), heads(ref[f"{L}.self_attn.k_proj"], hd)
    assert torch.equal(got[f"{L}.self_attn:q"], q) and got[f"{L}.self_attn:q"].shape == (2, 6, 4, 8)
    assert torch.equal(got[f"{L}.self_attn:k"], k) and k.shape == (2, 6, 2, 8)
    assert torch.equal(got[f"{L}.self_attn:v"], heads(ref[f"{L}.self_attn.v_proj"], hd))
    assert torch.equal(got[f"{L}.self_attn:z"], heads(ref[f"{L}.self_attn.o_proj:input"], hd))
    # rotary, written out here: theta_i = base^(-2i/hd), angle = pos * theta, rotate-half convention
    inv = 1.0 / (llama.config.rope_parameters["rope_theta"] ** (torch.arange(0, hd, 2).float() / hd))
    ang = torch.arange(6).float()[:, None] * inv[None]
    cos, sin = torch.cat([ang, ang], -1).cos()[None, :, None], torch.cat([ang, ang], -1).sin()[None, :, None]
    q_rot, k_rot = q * cos + rotate_half(q) * sin, k * cos + rotate_half(k) * sin
    assert torch.allclose(got[f"{L}.self_attn:q_rot"], q_rot, atol=1e-5)
    assert torch.allclose(got[f"{L}.self_attn:k_rot"], k_rot, atol=1e-5)
    scores = torch.einsum("bqhd,bkhd->bqhk", q_rot, k_rot.repeat_interleave(2, dim=2)) * hd ** -0.5
    assert got[f"{L}.self_attn:scores"].shape == (2, 6, 4, 8)  # key axis padded to key_len
    assert torch.allclose(got[f"{L}.self_attn:scores"][..., :6], scores, atol=1e-5)
    assert torch.equal(got[f"{L}.self_attn:scores"][..., 6:], torch.zeros(2, 6, 4, 2))
    probs = ref["attentions"][1].transpose(1, 2)  # output_attentions (B, H, q, k) → rows (B, q, H, k)
    assert torch.allclose(got[f"{L}.self_attn:probs"][..., :6], probs, atol=1e-6)
    causal = torch.triu(torch.full((6, 6), float("-inf")), 1)[None, :, None]
    assert torch.allclose(torch.softmax(scores + causal, -1), probs, atol=1e-5)
    assert torch.equal(got[f"{L}.mlp:pre"], ref[f"{L}.mlp.act_fn:input"])
    assert torch.equal(got[f"{L}.mlp:post"], ref[f"{L}.mlp.act_fn"])
    assert torch.equal(got[f"{L}.input_layernorm:input"], ref[f"{L}.input_layernorm:input"])
    assert torch.equal(got[f"{L}.input_layernorm"], ref[f"{L}.input_layernorm"])
    assert torch.equal(got["lm_head"], ref["lm_head"])


ALIASES = {
    "hook_embed": "model.embed_tokens", "blocks.1.hook_resid_pre": "model.layers.1:input",
    "blocks.1.hook_resid_post": "model.layers.1", "blocks.1.hook_resid_mid": "model.layers.1.post_attention_layernorm:input",
    "blocks.1.hook_attn_out": "model.layers.1.self_attn", "blocks.1.hook_mlp_out": "model.layers.1.mlp",
    "blocks.1.ln1.hook_normalized": "model.layers.1.input_layernorm",
    "blocks.1.ln2.hook_normalized": "model.layers.1.post_attention_layernorm",
    "ln_final.hook_normalized": "model.norm", "logits": "lm_head",
    "blocks.1.attn.hook_q": "model.layers.1.self_attn:q", "blocks.1.attn.hook_k": "model.layers.1.self_attn:k",
    "blocks.1.attn.hook_v": "model.layers.1.self_attn:v", "blocks.1.attn.hook_z": "model.layers.1.self_attn:z",
    "blocks.1.attn.hook_rot_q": "model.layers.1.self_attn:q_rot",
    "blocks.1.attn.hook_rot_k": "model.layers.1.self_attn:k_rot",
    "blocks.1.attn.hook_attn_scores": "model.layers.1.self_attn:scores",
    "blocks.1.attn.hook_pattern": "model.layers.1.self_attn:probs",
    "blocks.1.mlp.hook_pre": "model.layers.1.mlp:pre", "blocks.1.mlp.hook_post": "model.layers.1.mlp:post",
}


def test_llama_aliases_equal_module_paths(llama):
    ids = _ids()
    a = capture(llama, list(ALIASES), input_ids=ids)
    b = capture(llama, list(ALIASES.values()), input_ids=ids)
    for alias, path in ALIASES.items():
        assert torch.equal(a[alias], b[path]), alias
    hs = {h.name: h.module_name for h in resolve_hooks(llama, parse_hooks(list(ALIASES)))}
    assert hs["blocks.1.attn.hook_q"] == "model.layers.1.self_attn"


def test_gpt2_fused_qkv_and_kinds():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16)).eval()
    ids = _ids()
    got = capture(m, ["blocks.1.attn.hook_q", "blocks.1.attn.hook_k", "blocks.1.attn.hook_v", "blocks.1.attn.hook_z",
                      "blocks.1.attn.hook_pattern", "blocks.1.attn.hook_attn_scores", "blocks.1.mlp.hook_pre",
                      "blocks.1.mlp.hook_post", "blocks.0.ln1.hook_normalized"], input_ids=ids)
    ref = direct(m, ["transformer.h.1.attn.c_attn", "transformer.h.1.attn.c_proj:input", "transformer.h.1.mlp.act:input",
                     "transformer.h.1.mlp.act", "transformer.h.0.ln_1"], input_ids=ids)
    q, k, v = (heads(t, 8) for t in ref["transformer.h.1.attn.c_attn"].split(32, dim=-1))
    assert torch.equal(got["blocks.1.attn.hook_q"], q) and torch.equal(got["blocks.1.attn.hook_k"], k)
    assert torch.equal(got["blocks.1.attn.hook_v"], v)
    assert torch.equal(got["blocks.1.attn.hook_z"], heads(ref["transformer.h.1.attn.c_proj:input"], 8))
    assert torch.allclose(got["blocks.1.attn.hook_pattern"], ref["attentions"][1].transpose(1, 2), atol=1e-6)
    assert torch.allclose(got["blocks.1.attn.hook_attn_scores"], torch.einsum("bqhd,bkhd->bqhk", q, k) / 8 ** 0.5,
                          atol=1e-5)
    assert torch.equal(got["blocks.1.mlp.hook_pre"], ref["transformer.h.1.mlp.act:input"])
    assert torch.equal(got["blocks.1.mlp.hook_post"], ref["transformer.h.1.mlp.act"])
    assert torch.equal(got["blocks.0.ln1.hook_normalized"], ref["transformer.h.0.ln_1"])
    with pytest.raises(HookError, match="rotary"):
        resolve_hooks(m, parse_hooks(["transformer.h.0.attn:q_rot"]))


def test_bert_kinds_on_attention_and_block():
    from transformers import BertConfig, BertModel

    torch.manual_seed(0)
    m = BertModel(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                             intermediate_size=64)).eval()
    ids = _ids()
    A = "encoder.layer.1.attention"
    got = capture(m, [f"{A}:q", f"{A}.self:k", f"{A}:v", f"{A}:z", f"{A}:probs", "encoder.layer.1:pre",
                      "blocks.1.mlp.hook_post", "blocks.1.attn.hook_q"], input_ids=ids)
    ref = direct(m, [f"{A}.self.query", f"{A}.self.key", f"{A}.self.value", f"{A}.output.dense:input",
                     "encoder.layer.1.intermediate.intermediate_act_fn:input",
                     "encoder.layer.1.intermediate.intermediate_act_fn"], input_ids=ids)
    assert torch.equal(got[f"{A}:q"], heads(ref[f"{A}.self.query"], 8))
    assert torch.equal(got["blocks.1.attn.hook_q"], got[f"{A}:q"])
    assert torch.equal(got[f"{A}.self:k"], heads(ref[f"{A}.self.key"], 8))
    assert torch.equal(got[f"{A}:v"], heads(ref[f"{A}.self.value"], 8))
    assert torch.equal(got[f"{A}:z"], heads(ref[f"{A}.output.dense:input"], 8))
    assert torch.allclose(got[f"{A}:probs"], ref["attentions"][1].transpose(1, 2), atol=1e-6)
    assert torch.equal(got["encoder.layer.1:pre"], ref["encoder.layer.1.intermediate.intermediate_act_fn:input"])
    assert torch.equal(got["blocks.1.mlp.hook_post"], ref["encoder.layer.1.intermediate.intermediate_act_fn"])


def test_vit_kinds():
    from transformers import ViTConfig, ViTModel

    torch.manual_seed(0)
    m = ViTModel(ViTConfig(image_size=16, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64)).eval()
    px = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    got = capture(m, ["layers.0.attention:q", "layers.0.attention:z", "layers.0.attention:probs", "blocks.0.mlp.hook_pre",
                      "blocks.1.hook_resid_post"], pixel_values=px)
    ref = direct(m, ["layers.0.attention.q_proj", "layers.0.attention.o_proj:input", "layers.0.mlp.activation_fn:input",
                     "layers.1"], pixel_values=px)
    assert torch.equal(got["layers.0.attention:q"], heads(ref["layers.0.attention.q_proj"], 8))
    assert torch.equal(got["layers.0.attention:z"], heads(ref["layers.0.attention.o_proj:input"], 8))
    assert torch.allclose(got["layers.0.attention:probs"], ref["attentions"][0].transpose(1, 2), atol=1e-6)
    assert got["layers.0.attention:probs"].shape == (2, 5, 4, 5)
    assert torch.equal(got["blocks.0.mlp.hook_pre"], ref["layers.0.mlp.activation_fn:input"])
    assert torch.equal(got["blocks.1.hook_resid_post"], ref["layers.1"])


def test_convnext_has_no_attention_kinds():
    from transformers import ConvNextConfig, ConvNextModel

    m = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).eval()
    with pytest.raises(HookError):
        resolve_hooks(m, parse_hooks(["encoder.stages.0.layers.0:q"]))
    with pytest.raises(HookError):
        resolve_hooks(m, parse_hooks(["blocks.0.hook_resid_post"]))


@pytest.mark.slow
def test_smollm2_rotary_q_and_probs():
    from actlake.workers.models import load_model

    lm = load_model("smollm2-135m", None, "float32", "cpu", vision=False)
    m = lm.model
    ids = torch.tensor([lm.tokenizer("The quick brown fox jumps over the lazy dog.")["input_ids"]])
    T = ids.shape[1]
    got = capture(m, ["blocks.4.attn.hook_rot_q", "blocks.4.attn.hook_rot_k", "blocks.4.attn.hook_pattern"],
                  input_ids=ids)
    ref = direct(m, [], input_ids=ids)
    q, k = got["blocks.4.attn.hook_rot_q"], got["blocks.4.attn.hook_rot_k"]
    assert q.shape == (1, T, 9, 64) and k.shape == (1, T, 3, 64)
    scores = torch.einsum("bqhd,bkhd->bqhk", q, k.repeat_interleave(3, dim=2)) / 8.0
    causal = torch.triu(torch.full((T, T), float("-inf")), 1)[None, :, None]
    probs = ref["attentions"][4].transpose(1, 2)
    assert torch.allclose(torch.softmax(scores + causal, -1), probs, atol=1e-4)
    assert torch.allclose(got["blocks.4.attn.hook_pattern"], probs, atol=1e-6)
