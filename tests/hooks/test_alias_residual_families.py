"""TransformerLens residual-stream aliases add up on every block layout: resid_mid = resid_pre + attn_out
and resid_post = resid_mid + mlp_out (sequential blocks), resid_post = resid_pre + attn_out + mlp_out
(parallel blocks) — for pre-norm (Llama, GPT-2), sandwich-norm (Gemma 2 and 3: the sublayers' outputs
pass a norm before they join the stream), post-norm (OLMo 2: no norm before the sublayers), parallel
(GPT-NeoX, Falcon) and Falcon's sequential layout (its attention norm registered second).  Falcon adds
the attention output into the MLP's output tensor in place: captured values are copies, so mlp_out is
the MLP's own output."""
from __future__ import annotations

import pytest
import torch
from hookutil import capture

from actlake.workers.hook_aliases import alias_table

C = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
         max_position_embeddings=64)
GQA = dict(C, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
FALCON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def _model(family: str):
    import transformers as T

    torch.manual_seed(0)
    return {
        "llama": lambda: T.LlamaModel(T.LlamaConfig(**GQA)),
        "gpt2": lambda: T.GPT2Model(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4)),
        "gemma2": lambda: T.Gemma2Model(T.Gemma2Config(**GQA, head_dim=8)),
        "gemma3": lambda: T.Gemma3TextModel(T.Gemma3TextConfig(**GQA, head_dim=8)),
        "olmo2": lambda: T.Olmo2Model(T.Olmo2Config(**GQA)),
        "neox-parallel": lambda: T.GPTNeoXModel(T.GPTNeoXConfig(**C)),
        "falcon-sequential": lambda: T.FalconModel(T.FalconConfig(**FALCON, parallel_attn=False)),
        "falcon-parallel": lambda: T.FalconModel(T.FalconConfig(**FALCON, num_kv_heads=2,
                                                                new_decoder_architecture=True)),
    }[family]().eval()


SEQUENTIAL = ["llama", "gpt2", "gemma2", "gemma3", "olmo2", "falcon-sequential"]


@pytest.mark.parametrize("family", SEQUENTIAL + ["neox-parallel", "falcon-parallel"])
def test_residual_aliases_add_up(family):
    m = _model(family)
    names = ["hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"]
    if family in SEQUENTIAL:
        names.append("hook_resid_mid")
    else:
        assert "blocks.1.hook_resid_mid" not in alias_table(m)  # parallel blocks have no mid-block residual
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    g = {n: v for n, v in capture(m, [f"blocks.1.{n}" for n in names], input_ids=ids).items()}
    g = {k.split(".")[-1]: v for k, v in g.items()}
    assert torch.allclose(g["hook_resid_post"], g["hook_resid_pre"] + g["hook_attn_out"] + g["hook_mlp_out"], atol=1e-5)
    if family in SEQUENTIAL:
        assert torch.allclose(g["hook_resid_mid"], g["hook_resid_pre"] + g["hook_attn_out"], atol=1e-5)
        assert torch.allclose(g["hook_resid_post"], g["hook_resid_mid"] + g["hook_mlp_out"], atol=1e-5)
    assert not torch.allclose(g["hook_attn_out"], torch.zeros_like(g["hook_attn_out"]))


def test_layer_norm_aliases_name_the_norm_each_sublayer_reads():
    ln = {f: {k: v[0].rsplit(".", 1)[-1] for k, v in alias_table(_model(f)).items() if k.startswith("blocks.1.ln")}
          for f in ("gemma2", "olmo2", "falcon-sequential")}
    assert ln["gemma2"] == {"blocks.1.ln1.hook_normalized": "input_layernorm",
                            "blocks.1.ln2.hook_normalized": "pre_feedforward_layernorm"}
    assert ln["olmo2"] == {}  # post-norm: no norm before its sublayers
    assert ln["falcon-sequential"] == {"blocks.1.ln1.hook_normalized": "input_layernorm",
                                       "blocks.1.ln2.hook_normalized": "post_attention_layernorm"}


@pytest.mark.parametrize("top_k", [1, 2])
def test_mixture_of_experts_mlp(top_k):
    """Mixtral: hook_mlp_out is the MoE block's output (the residual sums hold); the experts' activation
    runs on tokens routed to each expert, in expert order — :pre/:post and the expert modules' own
    values are refused, never stored as token rows (with one expert per token their row count is the
    batch's token count, which made them look like token rows)."""
    import transformers as T

    from actlake.schemas.errors import HookError
    from actlake.schemas.hooks import parse_hooks
    from actlake.workers.hook_catalog import catalog
    from actlake.workers.hooks import resolve_hooks, row_layout

    torch.manual_seed(0)
    m = T.MixtralModel(T.MixtralConfig(**GQA, num_local_experts=4, num_experts_per_tok=top_k)).eval()
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    names = ["hook_resid_pre", "hook_attn_out", "hook_mlp_out", "hook_resid_post"]
    g = {k.split(".")[-1]: v for k, v in capture(m, [f"blocks.1.{n}" for n in names], input_ids=ids).items()}
    assert torch.allclose(g["hook_resid_post"], g["hook_resid_pre"] + g["hook_attn_out"] + g["hook_mlp_out"], atol=1e-5)
    with pytest.raises(HookError, match="mixture of experts"):
        resolve_hooks(m, parse_hooks(["blocks.1.mlp.hook_pre"]))
    expert_act = resolve_hooks(m, parse_hooks(["layers.1.mlp.experts.act_fn"]))[0]
    got = capture(m, ["layers.1.mlp.experts.act_fn"], input_ids=ids)["layers.1.mlp.experts.act_fn"]
    assert got.dim() == 2  # (routed tokens, F): not reshaped into (batch, position, F)
    with pytest.raises(HookError):
        row_layout(expert_act, got, vision=False)
    assert not [r.name for r in catalog(m, vision=False, key_len=8) if "experts" in r.name]


@pytest.mark.parametrize("family", ["bert", "electra", "deberta"])
def test_post_layernorm_encoders(family):
    """BERT-style blocks return LayerNorm(residual + sublayer): attn_out / mlp_out are the sublayers' own
    dense outputs, so LN1(resid_pre + attn_out) is the attention module's output and
    LN2(that + mlp_out) is resid_post."""
    import transformers as T

    torch.manual_seed(0)
    enc = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64)
    m = {"bert": lambda: T.BertModel(T.BertConfig(**enc)),
         "electra": lambda: T.ElectraModel(T.ElectraConfig(**enc, embedding_size=32)),
         "deberta": lambda: T.DebertaV2Model(T.DebertaV2Config(**enc))}[family]().eval()
    mods = dict(m.named_modules())
    blk = alias_table(m)["blocks.1.hook_resid_pre"][0]
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(3))
    names = ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_mlp_out", "blocks.1.hook_resid_post"]
    g = capture(m, names + [f"{blk}.attention"], input_ids=ids)
    with torch.no_grad():
        mid = mods[f"{blk}.attention.output.LayerNorm"](g["blocks.1.hook_resid_pre"] + g["blocks.1.hook_attn_out"])
        post = mods[f"{blk}.output.LayerNorm"](mid + g["blocks.1.hook_mlp_out"])
    assert torch.allclose(mid, g[f"{blk}.attention"], atol=1e-5)
    assert torch.allclose(post, g["blocks.1.hook_resid_post"], atol=1e-5)


def test_post_norm_blocks_with_norm_children_have_no_mid_or_ln_aliases():
    import transformers as T

    d = T.DistilBertModel(T.DistilBertConfig(vocab_size=100, dim=32, n_layers=2, n_heads=4, hidden_dim=64))
    opt = T.OPTModel(T.OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                 ffn_dim=64, word_embed_proj_dim=32, do_layer_norm_before=False))
    for m in (d, opt):
        a = alias_table(m)
        assert "blocks.1.hook_resid_pre" in a and "blocks.1.hook_attn_out" in a
        assert not [k for k in a if k.startswith("blocks.1.ln") or k == "blocks.1.hook_resid_mid"], sorted(a)
