"""``actlake hooks`` (the catalog) on every listed family — Llama, GPT-2, BERT, ViT, DeiT, CLIP-vision,
DINOv2 (with registers), ConvNeXt, ResNet — built from tiny configs: it lists module paths, kinds and
aliases; every listed alias gives the same rows as the module path it names on real inputs; every
listed per-row shape is the shape those rows have; conv blocks list their :pre/:post kinds; aliases
on pooled outputs (CLIP-vision's post_layernorm) are left out instead of failing the listing."""
from __future__ import annotations

import pytest
import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hook_catalog import catalog
from actlake.workers.hooks import Capture, resolve_hooks

VIT_KW = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
              intermediate_size=64)


def build(family: str):
    """(model, vision, forward inputs) of a tiny config-built model of ``family``."""
    import transformers as T

    torch.manual_seed(0)
    ids = torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))
    px = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(2))
    px64 = torch.randn(2, 3, 64, 64, generator=torch.Generator().manual_seed(2))
    if family == "llama":
        m = T.LlamaForCausalLM(T.LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                             num_attention_heads=4, num_key_value_heads=2))
    elif family == "gpt2":
        m = T.GPT2LMHeadModel(T.GPT2Config(vocab_size=100, n_embd=32, n_layer=2, n_head=4, n_positions=16))
    elif family == "bert":
        m = T.BertForMaskedLM(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                           intermediate_size=64))
    elif family == "vit":
        m = T.ViTModel(T.ViTConfig(**VIT_KW))
    elif family == "deit":
        m = T.DeiTModel(T.DeiTConfig(**VIT_KW))
    elif family == "clip":
        m = T.CLIPVisionModel(T.CLIPVisionConfig(**VIT_KW))
    elif family == "dinov2":
        m = T.Dinov2WithRegistersModel(T.Dinov2WithRegistersConfig(
            image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4, mlp_ratio=2,
            num_register_tokens=2))
    elif family == "convnext":
        m = T.ConvNextModel(T.ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=64))
    elif family == "resnet":
        m = T.ResNetModel(T.ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1], image_size=64))
    else:
        raise AssertionError(family)
    vision = family not in ("llama", "gpt2", "bert")
    inputs = {"input_ids": ids} if not vision else {"pixel_values": px64 if family in ("convnext", "resnet") else px}
    return m.eval(), vision, inputs


def capture(model, hooks: list[str], **inputs) -> dict[str, torch.Tensor]:
    key_len = None if "pixel_values" in inputs else inputs["input_ids"].shape[1]
    with Capture(model, resolve_hooks(model, parse_hooks(hooks), key_len=key_len)) as cap:
        cap.run(**inputs)
        return cap.run(**inputs)


@pytest.mark.parametrize("family", ["llama", "gpt2", "bert", "vit", "deit", "clip", "dinov2", "convnext", "resnet"])
def test_listed_aliases_equal_their_module_paths_and_shapes(family):
    m, vision, inputs = build(family)
    rows = catalog(m, vision=vision, key_len=None if vision else 16)
    aliases = {r.name: r for r in rows if r.alias_of}
    if family in ("convnext", "resnet"):  # no blocks with attention: at most hook_embed (ConvNeXt's embeddings)
        assert set(aliases) <= {"hook_embed"}
    else:
        assert {"hook_embed", "blocks.1.hook_resid_post", "blocks.1.attn.hook_q", "blocks.1.attn.hook_pattern",
                "blocks.1.mlp.hook_pre"} <= set(aliases), sorted(aliases)
    if not aliases:
        return
    got = capture(m, list(aliases) + sorted({r.alias_of for r in aliases.values()}), **inputs)
    for name, r in aliases.items():
        assert torch.equal(got[name], got[r.alias_of]), name
    # the per-row shape the catalog lists is the shape of the captured rows (token rows: axes 2..;
    # conv maps (B, C, H, W): rows of width C)
    for name, r in aliases.items():
        t = got[name]
        shape = [t.shape[1]] if r.layout == "spatial" else list(t.shape[2:])
        if name.endswith(("hook_attn_scores", "hook_pattern")) and not vision:
            shape = shape[:-1] + [16]  # text key axis: the catalog lists --context-len keys
        assert r.shape == shape, name
    if not vision:  # a --context-len shorter than the dummy forward still lists every alias
        short = {r.name: r for r in catalog(m, vision=False, key_len=4)}
        assert set(aliases) <= set(short) and short["blocks.0.attn.hook_pattern"].shape[-1] == 4


@pytest.mark.parametrize("family", ["convnext", "resnet"])
def test_conv_blocks_list_their_activation_kinds(family):
    m, vision, inputs = build(family)
    rows = {r.name: r for r in catalog(m, vision=True)}
    kinds = [n for n in rows if n.endswith((":pre", ":post"))]
    assert kinds and all(rows[n].layout == "spatial" for n in kinds)
    got = capture(m, kinds, **inputs)
    for n in kinds:
        assert rows[n].shape == [got[n].shape[1]], n  # (B, C, H, W) → rows of width C
    with pytest.raises(HookError):  # attention kinds are not there on a conv model
        resolve_hooks(m, parse_hooks([kinds[0].rsplit(":", 1)[0] + ":q"]))


def test_clip_vision_catalog_leaves_out_the_pooled_norm():
    m, vision, inputs = build("clip")
    rows = {r.name: r for r in catalog(m, vision=True)}
    assert "blocks.1.attn.hook_pattern" in rows and rows["blocks.1.attn.hook_pattern"].shape == [4, 17]
    assert "ln_final.hook_normalized" not in rows  # post_layernorm acts on the pooled [CLS] vector (B, D)
    assert "pre_layrnorm" in rows and rows["pre_layrnorm"].shape == [32]
