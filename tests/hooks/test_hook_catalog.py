"""The hook catalog (``actlake hooks``) on vision and conv models: per-row shapes equal what an
extraction stores, without reading data."""
from __future__ import annotations

import torch

from actlake.workers.hook_catalog import catalog


def test_vit_catalog_shapes():
    from transformers import ViTConfig, ViTModel

    m = ViTModel(ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                           intermediate_size=64)).eval()
    rows = {r.name: r for r in catalog(m, vision=True)}
    assert rows["layers.1"].shape == [32] and rows["layers.1"].layout == "tokens"
    assert rows["blocks.0.attn.hook_pattern"].shape == [4, 17]  # 1 cls + 16 patches as keys
    assert rows["blocks.0.attn.hook_q"].alias_of == "layers.0.attention:q"
    assert rows["layers.0.mlp:pre"].shape == [64]
    assert "pooler" not in rows  # (B, D): not row-shaped


def test_convnext_catalog_spatial():
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    m = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=64)).eval()
    rows = {r.name: r for r in catalog(m, vision=True)}
    assert rows["encoder.stages.1"].shape == [16] and rows["encoder.stages.1"].layout == "spatial"
    assert not any(n.startswith("blocks.") for n in rows)


def test_resnet_stage_maps_and_activation_kinds():
    from transformers import ResNetConfig, ResNetModel

    from actlake.schemas.hooks import parse_hooks
    from actlake.workers.hooks import Capture, resolve_hooks

    torch.manual_seed(0)
    m = ResNetModel(ResNetConfig(embedding_size=8, hidden_sizes=[8, 16], depths=[1, 1])).eval()
    rows = {r.name: r for r in catalog(m, vision=True)}
    assert rows["encoder.stages.1"].shape == [16] and rows["encoder.stages.1"].layout == "spatial"
    conv = "encoder.stages.1.layers.0.layer.0"
    px = torch.randn(1, 3, 64, 64)
    got = {}
    act = dict(m.named_modules())[f"{conv}.activation"]
    h = act.register_forward_hook(lambda mod, a, o: got.update(pre=a[0], post=o))
    with torch.no_grad():
        m(pixel_values=px)
    h.remove()
    with Capture(m, resolve_hooks(m, parse_hooks([f"{conv}:pre", f"{conv}:post"]))) as cap:
        out = cap.run(pixel_values=px)
    assert torch.equal(out[f"{conv}:pre"], got["pre"]) and torch.equal(out[f"{conv}:post"], got["post"])
