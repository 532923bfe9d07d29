"""Attention kinds on fused q/k/v projections and biased scores, against each model's own attention.

Layouts: GPT-NeoX (Pythia) and BLOOM ``query_key_value`` per head [q|k|v]; Falcon's three (per head,
multi-query, grouped ``new_decoder_architecture``); Phi-3 ``qkv_proj`` and GPT-BigCode multi-query
``c_attn`` with fewer key/value heads; MPT ``Wqkv``.  Score biases: BLOOM's ALiBi and MPT's
``position_bias``, Falcon's ALiBi (passed to the attention and also folded into its float mask, whose
unmasked entries are added like BEiT's relative position bias); QK-norm before rotary (Gemma 3, Qwen3, OLMo 2, Cohere, StableLM, Persimmon), Gemma 2's logit soft-capping and
GPT-OSS's attention sinks.  Each is checked two ways with ``output_attentions`` as the reference:
softmax(:scores) on the keys the model attends to equals its probabilities (q, k, rotary, scale and bias
right), and probabilities × :v per head equals :z, the input of the output projection (v right).
Where the scores cannot be rebuilt (T5's first layer) or the second output is not probabilities (T5),
the kind is a HookError, never stored wrong."""
from __future__ import annotations

import pytest
import torch
from hookutil import capture, direct

from actlake.schemas.errors import HookError

C = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, intermediate_size=64,
         max_position_embeddings=64)
FALCON = dict(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4)


def _model(family: str):
    import transformers as T

    torch.manual_seed(0)
    if family == "neox":
        return T.GPTNeoXModel(T.GPTNeoXConfig(**C, rotary_pct=0.5)), "layers.1.attention", 4
    if family == "phi3":
        return T.Phi3Model(T.Phi3Config(**C, num_key_value_heads=2, pad_token_id=0, bos_token_id=1,
                                        eos_token_id=2)), "layers.1.self_attn", 2
    if family == "bigcode-mqa":
        return T.GPTBigCodeModel(T.GPTBigCodeConfig(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=64,
                                                    multi_query=True)), "h.1.attn", 1
    if family == "bloom":
        return T.BloomModel(T.BloomConfig(vocab_size=100, hidden_size=32, n_layer=2, n_head=4)), "h.1.self_attention", 4
    if family == "mpt":
        return T.MptModel(T.MptConfig(vocab_size=100, d_model=32, n_layers=2, n_heads=4, max_seq_len=64)), \
            "blocks.1.attn", 4
    gqa = dict(C, num_key_value_heads=2, pad_token_id=0, bos_token_id=1, eos_token_id=2)
    if family == "gemma2":  # a small cap and large logits, so that the tanh matters
        m = T.Gemma2Model(T.Gemma2Config(**gqa, head_dim=8, attn_logit_softcapping=2.0))
        with torch.no_grad():
            m.layers[1].self_attn.q_proj.weight.mul_(30)
        return m, "layers.1.self_attn", 2
    if family == "gemma3":
        return T.Gemma3TextModel(T.Gemma3TextConfig(**gqa, head_dim=8)), "layers.1.self_attn", 2
    if family == "qwen3":
        return T.Qwen3Model(T.Qwen3Config(**gqa, head_dim=8)), "layers.1.self_attn", 2
    if family == "olmo2":
        return T.Olmo2Model(T.Olmo2Config(**gqa)), "layers.1.self_attn", 2
    if family == "cohere":
        return T.CohereModel(T.CohereConfig(**gqa, use_qk_norm=True)), "layers.1.self_attn", 2
    if family == "stablelm":  # per-head LayerNorms applied to (B, H, T, hd), partial rotary
        return T.StableLmModel(T.StableLmConfig(**C, num_key_value_heads=2, qk_layernorm=True,
                                                partial_rotary_factor=0.5)), "layers.1.self_attn", 2
    if family == "persimmon":  # fused per-head query_key_value, QK LayerNorm, partial rotary
        return T.PersimmonModel(T.PersimmonConfig(**C, qk_layernorm=True, partial_rotary_factor=0.5)), \
            "layers.1.self_attn", 4
    if family == "modernbert":  # encoder: fused Wqkv, rotary, local and global attention layers
        return T.ModernBertModel(T.ModernBertConfig(**C, pad_token_id=0, bos_token_id=1, eos_token_id=2,
                                                    cls_token_id=1, sep_token_id=2)), "layers.1.attn", 4
    if family == "electra":
        return T.ElectraModel(T.ElectraConfig(vocab_size=100, embedding_size=32, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=64)), "encoder.layer.1.attention", 4
    if family == "gpt-oss":
        m = T.GptOssModel(T.GptOssConfig(**gqa, head_dim=8, num_local_experts=4, num_experts_per_tok=2))
        with torch.no_grad():
            m.layers[1].self_attn.sinks.normal_()
        return m, "layers.1.self_attn", 2
    kw = {"falcon-per-head": dict(multi_query=False, new_decoder_architecture=False),
          "falcon-alibi": dict(alibi=True, multi_query=False, new_decoder_architecture=False),
          "falcon-mqa": dict(multi_query=True, new_decoder_architecture=False),
          "falcon-grouped": dict(num_kv_heads=2, new_decoder_architecture=True)}[family]
    kv = {"falcon-per-head": 4, "falcon-alibi": 4, "falcon-mqa": 1, "falcon-grouped": 2}[family]
    return T.FalconModel(T.FalconConfig(**FALCON, **kw)), "h.1.self_attention", kv


FAMILIES = ["neox", "phi3", "bigcode-mqa", "bloom", "mpt", "falcon-per-head", "falcon-mqa", "falcon-grouped",
            "falcon-alibi",
            "gemma2", "gemma3", "qwen3", "olmo2", "cohere", "stablelm", "persimmon", "gpt-oss", "modernbert", "electra"]


@pytest.mark.parametrize("family", FAMILIES)
def test_fused_qkv_scores_and_values_match_the_models_attention(family):
    m, A, kv = _model(family)
    m.eval()
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    got = capture(m, [f"{A}:q", f"{A}:k", f"{A}:v", f"{A}:z", f"{A}:scores", f"{A}:probs"], key_len=9, input_ids=ids)
    probs = direct(m, [], input_ids=ids)["attentions"][1].transpose(1, 2)  # (B, q, H, k)
    assert got[f"{A}:q"].shape == (2, 9, 4, 8)
    assert got[f"{A}:k"].shape == got[f"{A}:v"].shape == (2, 9, kv, 8)
    assert torch.allclose(got[f"{A}:probs"], probs, atol=1e-6)
    attended = probs > 0
    s = got[f"{A}:scores"].masked_fill(~attended, float("-inf"))
    if family == "gpt-oss":  # an attention sink per head takes a share of each row's softmax
        sink = dict(m.named_modules())[A].sinks.view(1, 1, -1, 1).expand(*s.shape[:3], 1)
        s = torch.cat([s, sink], -1)
        assert torch.allclose(torch.softmax(s, -1)[..., :-1], probs, atol=1e-5)
    else:
        assert torch.allclose(torch.softmax(s, -1), probs, atol=1e-5)
    v = got[f"{A}:v"].repeat_interleave(4 // kv, dim=2)  # (B, k, H, hd)
    z = torch.einsum("bqhk,bkhd->bqhd", probs, v)
    assert torch.allclose(got[f"{A}:z"], z, atol=1e-5)


def test_deberta_and_t5_unrebuildable_scores_and_non_probabilities_are_refused():
    import transformers as T

    torch.manual_seed(0)
    deberta = T.DebertaV2Model(T.DebertaV2Config(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                                 num_attention_heads=4, intermediate_size=64, relative_attention=True,
                                                 position_buckets=8, pos_att_type=["p2c", "c2p"])).eval()
    D = "encoder.layer.1.attention.self"
    ids0 = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    got = capture(deberta, [f"{D}:q"], input_ids=ids0)  # query_proj, split into heads
    ref = direct(deberta, [f"{D}.query_proj"], attentions=False, input_ids=ids0)
    assert torch.equal(got[f"{D}:q"], ref[f"{D}.query_proj"].reshape(2, 7, 4, 8))
    with pytest.raises(HookError, match="disentangled"):  # content-position terms: not q·k
        capture(deberta, [f"{D}:scores"], input_ids=ids0)

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    t5 = T.T5EncoderModel(T.T5Config(vocab_size=100, d_model=32, d_kv=8, d_ff=64, num_layers=2, num_heads=4)).eval()
    first, later = "encoder.block.0.layer.0.SelfAttention", "encoder.block.1.layer.0.SelfAttention"
    with pytest.raises(HookError, match="relative position bias"):
        capture(t5, [f"{first}:scores"], key_len=9, input_ids=ids)
    with pytest.raises(HookError, match="no attention probabilities"):  # T5's second output is its position bias
        capture(t5, [f"{later}:probs"], key_len=9, input_ids=ids)
    got = capture(t5, [f"{later}:scores"], key_len=9, input_ids=ids)  # later layers receive the bias
    ref = direct(t5, [], input_ids=ids)["attentions"][1].transpose(1, 2)
    assert torch.allclose(torch.softmax(got[f"{later}:scores"], -1), ref, atol=1e-5)


def test_aliases_follow_the_block_structure():
    """TransformerLens aliases on BLOOM and Falcon (attention child ``self_attention``); no
    ``hook_attn_out``/``hook_mlp_out`` where the module returns its output already added to the residual
    (BLOOM), and ``hook_resid_mid`` only in sequential blocks, where it is resid_pre + attn_out."""
    import transformers as T

    from actlake.workers.hook_aliases import alias_table

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    bloom = T.BloomModel(T.BloomConfig(vocab_size=100, hidden_size=32, n_layer=2, n_head=4)).eval()
    a = alias_table(bloom)
    assert "blocks.1.hook_attn_out" not in a and "blocks.1.hook_mlp_out" not in a
    got = capture(bloom, ["blocks.1.attn.hook_q", "h.1.self_attention:q"], input_ids=ids)
    assert torch.equal(got["blocks.1.attn.hook_q"], got["h.1.self_attention:q"])
    falcon, _, _ = _model("falcon-grouped")
    assert "blocks.1.attn.hook_pattern" in alias_table(falcon) and "blocks.1.hook_resid_mid" not in alias_table(falcon)
    neox = T.GPTNeoXModel(T.GPTNeoXConfig(**C)).eval()  # use_parallel_residual: True by default
    assert "blocks.1.hook_resid_mid" not in alias_table(neox)
    seq = T.GPTNeoXModel(T.GPTNeoXConfig(**C, use_parallel_residual=False)).eval()
    got = capture(seq, ["blocks.1.hook_resid_pre", "blocks.1.hook_attn_out", "blocks.1.hook_resid_mid"], input_ids=ids)
    assert torch.allclose(got["blocks.1.hook_resid_mid"], got["blocks.1.hook_resid_pre"] + got["blocks.1.hook_attn_out"],
                          atol=1e-6)


@pytest.mark.parametrize("family", ["neox", "phi3", "falcon-grouped", "bigcode-mqa"])
def test_exported_w_q_w_k_split_fused_weights_like_the_activations(family):
    """W_Q / W_K exported from a fused projection (bias zeroed) map the attention's input to :q / :k."""
    from actlake.workers.weights_export import export_arrays

    m, A, kv = _model(family)
    m.eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if n.endswith("bias") and any(f in n for f in ("query_key_value", "qkv", "c_attn")):
                p.zero_()
    ids = torch.randint(0, 100, (1, 6), generator=torch.Generator().manual_seed(2))
    mod = dict(m.named_modules())
    fused = next(n for n in mod if n.startswith(A + ".") and n.rsplit(".", 1)[-1] in ("query_key_value", "qkv_proj",
                                                                                         "c_attn"))
    got = capture(m, [f"{A}:q", f"{A}:k", f"{fused}:input"], input_ids=ids)
    arrays, _ = export_arrays(m, ["blocks.1.attn.W_Q", "blocks.1.attn.W_K"])
    for w, heads in (("Q", 4), ("K", kv)):
        W = torch.from_numpy(arrays[f"blocks.1.attn.W_{w}"]).float()
        assert W.shape == (heads, 32, 8)
        ref = torch.einsum("btd,hde->bthe", got[f"{fused}:input"], W)
        assert torch.allclose(ref, got[f"{A}:{w.lower()}"], atol=1e-5), w


@pytest.mark.parametrize("shared", [False, True])
def test_beit_scores_include_the_relative_position_bias(shared):
    """BEiT passes its relative position bias (per layer or shared) as the attention's float mask."""
    import transformers as T

    torch.manual_seed(0)
    cfg = T.BeitConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                       intermediate_size=64, use_relative_position_bias=not shared,
                       use_shared_relative_position_bias=shared)
    m = T.BeitModel(cfg).eval()
    with torch.no_grad():
        for n, p in m.named_parameters():
            if "relative_position_bias_table" in n:
                p.normal_()
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    got = capture(m, ["layers.1.attention:scores"], pixel_values=px)
    probs = direct(m, [], pixel_values=px)["attentions"][1].transpose(1, 2)
    assert torch.allclose(torch.softmax(got["layers.1.attention:scores"], -1), probs, atol=1e-5)


def test_scores_against_padding_keys_are_zero():
    """A context shorter than its batch is padded: its :scores against the pad keys are 0 like its
    :probs (and, with a store's longer key axis, like the keys past the batch)."""
    import transformers as T

    torch.manual_seed(0)
    m = T.LlamaModel(T.LlamaConfig(**C, num_key_value_heads=2)).eval()
    ids = torch.randint(3, 100, (2, 9), generator=torch.Generator().manual_seed(1))
    mask = torch.ones_like(ids)
    mask[1, 6:] = 0  # the second context has 6 tokens
    A = "layers.1.self_attn"
    got = capture(m, [f"{A}:scores", f"{A}:probs"], key_len=12, input_ids=ids, attention_mask=mask)
    s = got[f"{A}:scores"]
    assert s.shape == (2, 9, 4, 12)
    assert (s[1, :, :, 6:] == 0).all() and (s[:, :, :, 9:] == 0).all()
    assert (s[1, :6, :, :6] != 0).all() and (s[0, :, :, :9] != 0).all()
    assert (got[f"{A}:probs"][1, :, :, 6:] == 0).all()
