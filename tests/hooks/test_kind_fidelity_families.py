"""Every hook kind against a direct computation on the families test_hook_kind_fidelity.py does not
cover in full: ViT, DeiT, CLIP-vision and DINOv2 (with registers) — q/k/v/z, scores, probs, MLP
pre/post, LayerNorm input/output, each through its module path and its TransformerLens alias —,
BERT scores/LayerNorm/logits, GPT-2 embeddings/logits/final norm, ConvNeXt :post, and the real
SmolLM2 (slow): unrotated q/k/v, z, MLP pre/post, norms and logits.

The references are plain torch hooks on the modules named here per family and
``output_attentions=True``; scores are checked independently through softmax(scores) == probs."""
from __future__ import annotations

import pytest
import torch
from hookutil import capture, direct

KW = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=64)
# per family: block path, attention (kinds), q/k/v/out projections, activation, first norm
VISION = {
    "vit": ("layers.1", "attention", ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp.activation_fn", "layernorm_before"),
    "deit": ("layers.1", "attention", ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp.activation_fn", "layernorm_before"),
    "clip": ("encoder.layers.1", "self_attn", ("q_proj", "k_proj", "v_proj", "out_proj"), "mlp.activation_fn",
             "layer_norm1"),
    "dinov2": ("encoder.layer.1", "attention", ("q_proj", "k_proj", "v_proj", "o_proj"), "mlp.activation_fn", "norm1"),
}


def vision_model(family: str):
    import transformers as T

    torch.manual_seed(0)
    if family == "vit":
        return T.ViTModel(T.ViTConfig(**KW)).eval()
    if family == "deit":
        return T.DeiTModel(T.DeiTConfig(**KW)).eval()
    if family == "clip":
        return T.CLIPVisionModel(T.CLIPVisionConfig(**KW)).eval()
    return T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
        image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
        num_register_tokens=2)).eval()


def heads(t: torch.Tensor, hd: int) -> torch.Tensor:
    return t.reshape(*t.shape[:2], -1, hd)


@pytest.mark.parametrize("family", list(VISION))
def test_vision_every_kind_and_alias(family):
    m = vision_model(family)
    blk, att, (qn, kn, vn, on), act, ln = VISION[family]
    A = f"{blk}.{att}"
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    kinds = ["q", "k", "v", "z", "scores", "probs"]
    tl = {"q": "hook_q", "k": "hook_k", "v": "hook_v", "z": "hook_z", "scores": "hook_attn_scores",
          "probs": "hook_pattern"}
    got = capture(m, [f"{A}:{k}" for k in kinds] + [f"blocks.1.attn.{tl[k]}" for k in kinds]
                  + [f"{blk}.mlp:pre", f"{blk}.mlp:post", "blocks.1.mlp.hook_pre", "blocks.1.mlp.hook_post",
                     f"{blk}.{ln}:input", f"{blk}.{ln}", "blocks.1.ln1.hook_normalized"], pixel_values=px)
    ref = direct(m, [f"{A}.{qn}", f"{A}.{kn}", f"{A}.{vn}", f"{A}.{on}:input", f"{blk}.{act}:input",
                     f"{blk}.{act}", f"{blk}.{ln}:input", f"{blk}.{ln}"], pixel_values=px)
    T = {"vit": 17, "deit": 18, "clip": 17, "dinov2": 19}[family]  # cls (+ distillation / 2 registers) + 16
    q, k = heads(ref[f"{A}.{qn}"], 8), heads(ref[f"{A}.{kn}"], 8)
    assert q.shape == (2, T, 4, 8)
    assert torch.equal(got[f"{A}:q"], q) and torch.equal(got[f"{A}:k"], k)
    assert torch.equal(got[f"{A}:v"], heads(ref[f"{A}.{vn}"], 8))
    assert torch.equal(got[f"{A}:z"], heads(ref[f"{A}.{on}:input"], 8))
    probs = ref["attentions"][1].transpose(1, 2)  # (B, H, q, k) → rows (B, q, H, k)
    assert got[f"{A}:probs"].shape == (2, T, 4, T)
    assert torch.allclose(got[f"{A}:probs"], probs, atol=1e-6)
    scores = torch.einsum("bqhd,bkhd->bqhk", q, k) / 8 ** 0.5
    assert torch.allclose(got[f"{A}:scores"], scores, atol=1e-5)
    assert torch.allclose(torch.softmax(got[f"{A}:scores"], -1), probs, atol=1e-5)  # no mask in vision
    for kd in kinds:
        assert torch.equal(got[f"blocks.1.attn.{tl[kd]}"], got[f"{A}:{kd}"]), kd
    assert torch.equal(got[f"{blk}.mlp:pre"], ref[f"{blk}.{act}:input"])
    assert torch.equal(got[f"{blk}.mlp:post"], ref[f"{blk}.{act}"])
    assert torch.equal(got["blocks.1.mlp.hook_pre"], got[f"{blk}.mlp:pre"])
    assert torch.equal(got["blocks.1.mlp.hook_post"], got[f"{blk}.mlp:post"])
    assert torch.equal(got[f"{blk}.{ln}:input"], ref[f"{blk}.{ln}:input"])
    assert torch.equal(got[f"{blk}.{ln}"], ref[f"{blk}.{ln}"])
    assert torch.equal(got["blocks.1.ln1.hook_normalized"], ref[f"{blk}.{ln}"])


def test_bert_scores_layernorm_logits_embed():
    from transformers import BertConfig, BertForMaskedLM

    torch.manual_seed(0)
    m = BertForMaskedLM(BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=64)).eval()
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    A = "bert.encoder.layer.1.attention"
    LN = "bert.encoder.layer.1.output.LayerNorm"
    got = capture(m, [f"{A}:scores", "blocks.1.attn.hook_attn_scores", f"{A}:probs", f"{LN}:input", LN, "logits",
                      "hook_embed", "blocks.1.hook_resid_post"], key_len=6, input_ids=ids)
    ref = direct(m, [f"{A}.self.query", f"{A}.self.key", f"{LN}:input", LN, "bert.embeddings.word_embeddings",
                     "bert.encoder.layer.1"], input_ids=ids)
    q, k = heads(ref[f"{A}.self.query"], 8), heads(ref[f"{A}.self.key"], 8)
    scores = torch.einsum("bqhd,bkhd->bqhk", q, k) / 8 ** 0.5
    probs = ref["attentions"][1].transpose(1, 2)
    assert torch.allclose(got[f"{A}:scores"], scores, atol=1e-5)
    assert torch.equal(got["blocks.1.attn.hook_attn_scores"], got[f"{A}:scores"])
    assert torch.allclose(torch.softmax(got[f"{A}:scores"], -1), probs, atol=1e-5)  # bidirectional, no padding
    assert torch.allclose(got[f"{A}:probs"], probs, atol=1e-6)
    assert torch.equal(got[f"{LN}:input"], ref[f"{LN}:input"]) and torch.equal(got[LN], ref[LN])
    assert torch.equal(got["blocks.1.hook_resid_post"], got[LN])  # post-LN: the block ends in this norm
    assert torch.equal(got["logits"], ref["result"].logits)
    assert torch.equal(got["hook_embed"], ref["bert.embeddings.word_embeddings"])
    assert torch.equal(got["hook_embed"], m.bert.embeddings.word_embeddings.weight[ids].detach())


def test_gpt2_embed_logits_final_norm():
    from transformers import GPT2Config, GPT2LMHeadModel

    torch.manual_seed(0)
    m = GPT2LMHeadModel(GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16)).eval()
    m.set_attn_implementation("eager")  # the reference runs eager: same numerics in both passes
    ids = torch.randint(0, 100, (2, 6), generator=torch.Generator().manual_seed(3))
    got = capture(m, ["hook_embed", "logits", "ln_final.hook_normalized", "transformer.ln_f:input",
                      "blocks.1.hook_resid_post", "blocks.0.hook_resid_mid", "transformer.h.0.ln_2:input"],
                  input_ids=ids)
    ref = direct(m, ["transformer.h.1"], input_ids=ids)
    assert torch.equal(got["hook_embed"], m.transformer.wte.weight[ids].detach())
    assert torch.equal(got["logits"], ref["result"].logits)
    assert torch.equal(got["transformer.ln_f:input"], ref["transformer.h.1"])
    assert torch.equal(got["blocks.1.hook_resid_post"], ref["transformer.h.1"])
    with torch.no_grad():
        assert torch.allclose(got["ln_final.hook_normalized"], m.transformer.ln_f(ref["transformer.h.1"]), atol=1e-6)
    assert torch.equal(got["blocks.0.hook_resid_mid"], got["transformer.h.0.ln_2:input"])


def test_convnext_post_is_the_activation_output_as_maps():
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    m = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2)).eval()
    px = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(0))
    L = "encoder.stages.1.layers.0"
    got = capture(m, [f"{L}:pre", f"{L}:post"], pixel_values=px)
    ref = direct(m, [f"{L}.act:input", f"{L}.act"], attentions=False, pixel_values=px)
    # the activation runs channels-last (B, H, W, 4C); the kinds hold (B, 4C, H, W) conv maps
    assert got[f"{L}:post"].shape == (2, 64, 8, 8)
    assert torch.equal(got[f"{L}:pre"], ref[f"{L}.act:input"].permute(0, 3, 1, 2))
    assert torch.equal(got[f"{L}:post"], ref[f"{L}.act"].permute(0, 3, 1, 2))


@pytest.mark.slow
def test_smollm2_projections_mlp_norms_logits():
    from actlake.workers.models import load_model

    m = load_model("smollm2-135m", None, "float32", "cpu", vision=False).model
    m.set_attn_implementation("eager")  # the reference runs eager: same numerics in both passes
    ids = torch.tensor([[1, 504, 2365, 6354, 16438, 27003, 690, 260, 23790, 2767, 30]])
    L = "model.layers.7"
    got = capture(m, ["blocks.7.attn.hook_q", "blocks.7.attn.hook_k", "blocks.7.attn.hook_v", "blocks.7.attn.hook_z",
                      f"{L}.self_attn:scores", "blocks.7.mlp.hook_pre", "blocks.7.mlp.hook_post",
                      "blocks.7.ln1.hook_normalized", f"{L}.input_layernorm:input", "ln_final.hook_normalized",
                      "logits"], key_len=11, input_ids=ids)
    ref = direct(m, [f"{L}.self_attn.q_proj", f"{L}.self_attn.k_proj", f"{L}.self_attn.v_proj",
                     f"{L}.self_attn.o_proj:input", f"{L}.mlp.act_fn:input", f"{L}.mlp.act_fn", f"{L}.input_layernorm",
                     f"{L}.input_layernorm:input", "model.norm"], input_ids=ids)
    assert got["blocks.7.attn.hook_q"].shape == (1, 11, 9, 64) and got["blocks.7.attn.hook_k"].shape == (1, 11, 3, 64)
    assert torch.equal(got["blocks.7.attn.hook_q"], heads(ref[f"{L}.self_attn.q_proj"], 64))
    assert torch.equal(got["blocks.7.attn.hook_k"], heads(ref[f"{L}.self_attn.k_proj"], 64))
    assert torch.equal(got["blocks.7.attn.hook_v"], heads(ref[f"{L}.self_attn.v_proj"], 64))
    assert torch.equal(got["blocks.7.attn.hook_z"], heads(ref[f"{L}.self_attn.o_proj:input"], 64))
    causal = torch.triu(torch.full((11, 11), float("-inf")), 1)[None, :, None]
    probs = ref["attentions"][7].transpose(1, 2)
    assert torch.allclose(torch.softmax(got[f"{L}.self_attn:scores"] + causal, -1), probs, atol=1e-4)
    assert torch.equal(got["blocks.7.mlp.hook_pre"], ref[f"{L}.mlp.act_fn:input"])
    assert torch.equal(got["blocks.7.mlp.hook_post"], ref[f"{L}.mlp.act_fn"])
    assert (got["blocks.7.mlp.hook_pre"] < 0).any()  # the negative part (inhibition) is kept
    assert torch.equal(got["blocks.7.ln1.hook_normalized"], ref[f"{L}.input_layernorm"])
    assert torch.equal(got[f"{L}.input_layernorm:input"], ref[f"{L}.input_layernorm:input"])
    assert torch.equal(got["ln_final.hook_normalized"], ref["model.norm"])
    assert torch.allclose(got["logits"], ref["result"].logits, atol=1e-5)


def test_partial_rotary_scores_and_unreproducible_rotary_is_refused():
    """Phi turns only the first partial_rotary_factor · head_dim dims of each head: :scores must match the
    model's own attention; GPT-J's rotary function takes other arguments: its rotary kinds are refused
    with a HookError (never a raw TypeError) and left out of the catalog, while :q / :k still work."""
    from transformers import GPTJConfig, GPTJForCausalLM, PhiConfig, PhiForCausalLM

    from actlake.schemas.errors import HookError
    from actlake.workers.hook_catalog import catalog

    torch.manual_seed(0)
    phi = PhiForCausalLM(PhiConfig(vocab_size=100, hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                                   intermediate_size=128, max_position_embeddings=64,
                                   partial_rotary_factor=0.5)).eval()
    ids = torch.randint(0, 100, (1, 9))
    A = "model.layers.1.self_attn"
    got = capture(phi, [f"{A}:scores", f"{A}:q", f"{A}:q_rot"], key_len=9, input_ids=ids)
    ref = direct(phi, [f"{A}.q_proj"], input_ids=ids)
    causal = torch.triu(torch.full((9, 9), float("-inf")), 1)[None, :, None]
    assert torch.allclose(torch.softmax(got[f"{A}:scores"] + causal, -1), ref["attentions"][1].transpose(1, 2),
                          atol=1e-5)
    assert torch.allclose(got[f"{A}:q"], heads(ref[f"{A}.q_proj"], 16), atol=1e-6)  # sdpa vs eager upstream
    assert torch.equal(got[f"{A}:q_rot"][..., 8:], got[f"{A}:q"][..., 8:])  # the unrotated half passes through
    assert not torch.equal(got[f"{A}:q_rot"][..., :8], got[f"{A}:q"][..., :8])

    gptj = GPTJForCausalLM(GPTJConfig(vocab_size=100, n_embd=64, n_layer=1, n_head=4, n_positions=64,
                                      rotary_dim=8)).eval()
    G = "transformer.h.0.attn"
    with pytest.raises(HookError, match="rotary"):
        capture(gptj, [f"{G}:scores"], key_len=9, input_ids=ids)
    names = {r.name for r in catalog(gptj, vision=False, key_len=9)}
    assert f"{G}:q" in names and f"{G}:scores" not in names and f"{G}:q_rot" not in names


def test_opt_mlp_rows_are_unflattened_tokens():
    """OPT runs its MLP on (batch·position, d): fc1 and the MLP pre/post activations are stored as
    (batch, position, F) token rows equal to the model's own values, and listed by the catalog."""
    from transformers import OPTConfig, OPTForCausalLM

    from actlake.workers.hook_catalog import catalog

    torch.manual_seed(0)
    opt = OPTForCausalLM(OPTConfig(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                                   ffn_dim=48, max_position_embeddings=64, word_embed_proj_dim=32)).eval()
    ids = torch.randint(0, 100, (2, 7))
    L = "model.decoder.layers.0"
    got = capture(opt, ["blocks.0.mlp.hook_pre", "blocks.0.mlp.hook_post", f"{L}.fc1"], input_ids=ids)
    ref = direct(opt, [f"{L}.activation_fn:input", f"{L}.activation_fn", f"{L}.fc1"], attentions=False, input_ids=ids)
    assert got["blocks.0.mlp.hook_pre"].shape == (2, 7, 48)
    assert torch.equal(got["blocks.0.mlp.hook_pre"], ref[f"{L}.activation_fn:input"].reshape(2, 7, 48))
    assert torch.equal(got["blocks.0.mlp.hook_post"], ref[f"{L}.activation_fn"].reshape(2, 7, 48))
    assert torch.equal(got[f"{L}.fc1"][1, 3], ref[f"{L}.fc1"][7 + 3])  # batch 1, position 3
    rows = {r.name: r.shape for r in catalog(opt, vision=False)}
    assert rows[f"{L}.fc1"] == [48] and rows["blocks.0.mlp.hook_post"] == [48]


def test_bloom_activation_found_by_its_class():
    """BLOOM's MLP nonlinearity is ``gelu_impl`` (class ``BloomGelu``): :pre / :post find it by class."""
    from transformers import BloomConfig, BloomForCausalLM

    torch.manual_seed(0)
    bloom = BloomForCausalLM(BloomConfig(vocab_size=100, hidden_size=32, n_layer=1, n_head=4)).eval()
    ids = torch.randint(0, 100, (1, 6))
    M = "transformer.h.0.mlp"
    got = capture(bloom, [f"{M}:pre", f"{M}:post"], input_ids=ids)
    ref = direct(bloom, [f"{M}.gelu_impl:input", f"{M}.gelu_impl"], attentions=False, input_ids=ids)
    assert torch.equal(got[f"{M}:pre"], ref[f"{M}.gelu_impl:input"]) and (got[f"{M}:pre"] < 0).any()
    assert torch.equal(got[f"{M}:post"], ref[f"{M}.gelu_impl"])
