"""Vision token layout comes from the actual forward (processed pixel size / patch size and the real
sequence length), not from config.image_size, for ViT, DeiT (distillation), DINOv2 with registers,
CLIP vision and ConvNeXt — checked against each model's own embeddings with processor sizes that
differ from config.image_size."""
from __future__ import annotations

import numpy as np
import pytest
import torch

from hookutil import run_vision_unit, save_vision, zero_positions


def _embed_rows_match_model(model, arrays, prov, px, hook, token_vectors: dict[str, torch.Tensor], conv):
    """Every cls/distillation/register row equals the model's own token vector; every patch row (r, c)
    equals the patch convolution's output at (r, c) (position embeddings are zero)."""
    emb = torch.from_numpy(arrays[hook])
    with torch.no_grad():
        grid = conv(px)  # (B, D, gh, gw)
    img = prov.column("image_id").to_numpy()
    types = np.asarray(prov.column("token_type").to_pylist())
    r, c = prov.column("patch_row").to_numpy(), prov.column("patch_col").to_numpy()
    for kind, vecs in token_vectors.items():
        sel = np.nonzero(types == kind)[0]
        assert len(sel) == len(vecs) * px.shape[0], kind
        for i in sel:
            k = int(prov.column("context_pos").to_numpy()[i]) - (1 if kind != "cls" and "cls" in token_vectors else 0)
            k -= 1 if kind == "register" and "distillation" in token_vectors else 0
            assert torch.allclose(emb[i], vecs[k], atol=1e-5), (kind, i)
    sel = np.nonzero(types == "patch")[0]
    assert len(sel) == px.shape[0] * grid.shape[2] * grid.shape[3]
    want = grid[img[sel], :, r[sel], c[sel]]
    assert torch.allclose(emb[sel], want, atol=1e-5)


def test_dinov2_registers_processor_size_differs(tmp_path, image_folder):
    from transformers import Dinov2WithRegistersConfig, Dinov2WithRegistersModel

    torch.manual_seed(0)
    cfg = Dinov2WithRegistersConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                    num_attention_heads=4, num_register_tokens=2, mlp_ratio=2)
    m = Dinov2WithRegistersModel(cfg)
    zero_positions(m)
    d = save_vision(m, tmp_path / "m", size=16)  # 2x2 patches, not config's 4x4
    w, arrays, prov, px = run_vision_unit(d, ["embeddings", "encoder.layer.1"], image_folder, tmp_path / "o")
    assert px.shape[-1] == 16
    types = prov.column("token_type").to_pylist()[:7]
    assert types == ["cls", "register", "register", "patch", "patch", "patch", "patch"]
    e = w.lm.model.embeddings
    _embed_rows_match_model(w.lm.model, arrays, prov, px, "embeddings",
                            {"cls": e.cls_token[0], "register": e.register_tokens[0]},
                            e.patch_embeddings.projection)


def test_deit_distillation_token_and_larger_processor(tmp_path, image_folder):
    from transformers import DeiTConfig, DeiTModel

    torch.manual_seed(0)
    m = DeiTModel(DeiTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
                             intermediate_size=64))
    zero_positions(m)
    d = save_vision(m, tmp_path / "m", size=48)  # 6x6 patches (interpolated positions)
    w, arrays, prov, px = run_vision_unit(d, ["embeddings"], image_folder, tmp_path / "o")
    assert prov.column("token_type").to_pylist()[:3] == ["cls", "distillation", "patch"]
    assert max(prov.column("patch_row").to_pylist()) == 5
    e = w.lm.model.embeddings
    _embed_rows_match_model(w.lm.model, arrays, prov, px, "embeddings",
                            {"cls": e.cls_token[0], "distillation": e.distillation_token[0]},
                            e.patch_embeddings.projection)


@pytest.mark.parametrize("family", ["vit", "clip"])
def test_vit_and_clip_processor_size_differs(tmp_path, image_folder, family):
    import transformers as T

    torch.manual_seed(0)
    kw = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1, num_attention_heads=4,
              intermediate_size=64)
    m = T.ViTModel(T.ViTConfig(**kw)) if family == "vit" else T.CLIPVisionModel(T.CLIPVisionConfig(**kw))
    zero_positions(m)
    d = save_vision(m, tmp_path / "m", size=40, processor=family)  # 5x5 patches
    w, arrays, prov, px = run_vision_unit(d, ["embeddings"], image_folder, tmp_path / "o")
    e = w.lm.model.embeddings
    cls = e.cls_token[0] if family == "vit" else e.class_embedding[None]
    conv = e.patch_embeddings.projection if family == "vit" else e.patch_embedding
    assert prov.num_rows == 5 * (1 + 25)
    _embed_rows_match_model(w.lm.model, arrays, prov, px, "embeddings", {"cls": cls}, conv)


@pytest.mark.parametrize("mask_ratio", [0.75, 0.0])  # 0.0 still shuffles the patches
def test_vit_mae_keeps_every_patch_in_order(tmp_path, image_folder, mask_ratio):
    """ViT-MAE keeps a random subset of patches in a random order on each forward (mask_ratio 0.75 by
    default); extraction keeps all of them in the image's order, so patch (r, c) is that patch, and two
    runs store the same values."""
    from transformers import ViTMAEConfig, ViTMAEModel

    torch.manual_seed(0)
    m = ViTMAEModel(ViTMAEConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=1,
                                 num_attention_heads=4, intermediate_size=64, mask_ratio=mask_ratio))
    zero_positions(m)
    d = save_vision(m, tmp_path / "m", size=32)  # 4x4 patches
    w, arrays, prov, px = run_vision_unit(d, ["embeddings", "layers.0"], image_folder, tmp_path / "o")
    assert prov.num_rows == 5 * (1 + 16)
    e = w.lm.model.embeddings
    _embed_rows_match_model(w.lm.model, arrays, prov, px, "embeddings", {"cls": e.cls_token[0]},
                            e.patch_embeddings.projection)
    _, again, _, _ = run_vision_unit(d, ["layers.0"], image_folder, tmp_path / "o2")
    np.testing.assert_array_equal(again["layers.0"], arrays["layers.0"])


def test_convnext_stage_maps_from_the_tensor(tmp_path, image_folder):
    from transformers import ConvNextConfig, ConvNextModel

    torch.manual_seed(0)
    m = ConvNextModel(ConvNextConfig(hidden_sizes=[8, 16], depths=[1, 1], num_stages=2, image_size=224))
    d = save_vision(m, tmp_path / "m", size=64, processor="convnext")
    w, arrays, prov, px = run_vision_unit(d, ["encoder.stages.1", "encoder.stages.1.layers.0:pre"],
                                          image_folder, tmp_path / "o")
    with torch.no_grad():
        want = w.lm.model(pixel_values=px, output_hidden_states=True).hidden_states[2]  # (B, 16, 8, 8)
    assert want.shape[-2:] == (8, 8)
    img, r, c = (prov.column(k).to_numpy() for k in ("image_id", "patch_row", "patch_col"))
    assert torch.allclose(torch.from_numpy(arrays["encoder.stages.1"]), want[img, :, r, c], atol=1e-5)
    # :pre of a ConvNeXt layer is channels-last after pwconv1: stored as rows of width 4*16 per (r, c)
    pre = {}
    layer = dict(w.lm.model.named_modules())["encoder.stages.1.layers.0.act"]
    h = layer.register_forward_pre_hook(lambda mod, a: pre.__setitem__("x", a[0]))
    with torch.no_grad():
        w.lm.model(pixel_values=px)
    h.remove()
    assert torch.allclose(torch.from_numpy(arrays["encoder.stages.1.layers.0:pre"]), pre["x"][img, r, c], atol=1e-5)


@pytest.mark.parametrize("family", ["clip", "siglip"])
def test_dual_encoder_checkpoint_runs_its_vision_tower(tmp_path, image_folder, family):
    """A full CLIPModel / SiglipModel checkpoint (how CLIP is usually published) is an image model: its
    vision tower is loaded alone, hooks take the tower's paths, the full model's ``vision_model.…`` paths
    or the block aliases, and rows equal the full model's own vision hidden states."""
    import transformers as T

    from actlake.workers.models import is_vision_model

    torch.manual_seed(0)
    tower = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                 intermediate_size=64)
    text = dict(vocab_size=100, hidden_size=32, num_hidden_layers=1, num_attention_heads=4, intermediate_size=64)
    if family == "clip":
        m = T.CLIPModel(T.CLIPConfig(text_config=text, vision_config=tower, projection_dim=16))
    else:
        m = T.SiglipModel(T.SiglipConfig(text_config=text, vision_config=tower))
    d = save_vision(m, tmp_path / "m", size=32, processor="clip" if family == "clip" else "vit")
    assert is_vision_model(str(d))
    w, arrays, prov, px = run_vision_unit(d, ["vision_model.encoder.layers.1", "blocks.0.hook_resid_post"],
                                          image_folder, tmp_path / "o")
    assert w.lm.info.architecture.startswith(f"{type(m).__name__[:-5]}VisionModel")
    with torch.no_grad():
        hs = m.eval().vision_model(pixel_values=px, output_hidden_states=True).hidden_states  # (B, T, D) per layer
    img, pos = prov.column("image_id").to_numpy(), prov.column("context_pos").to_numpy()
    assert torch.allclose(torch.from_numpy(arrays["encoder.layers.1"]), hs[2][img, pos], atol=1e-5)
    assert torch.allclose(torch.from_numpy(arrays["blocks.0.hook_resid_post"]), hs[1][img, pos], atol=1e-5)
    from actlake.schemas.errors import HookError
    from actlake.schemas.hooks import parse_hooks
    from actlake.workers.hook_catalog import catalog
    from actlake.workers.hooks import resolve_hooks

    with pytest.raises(HookError, match="only its vision tower"):
        resolve_hooks(w.lm.model, parse_hooks(["text_model.encoder.layers.0"]))
    rows = {r.name: r for r in catalog(w.lm.model, True, w.lm.processor)}
    # SigLIP's attention-pooling head gives one token per image: not listed, not the final norm
    assert not [n for n in rows if n.startswith("head") and n != "head:input"]
    if family == "siglip":  # (CLIP's post_layernorm normalises the pooled CLS only: no rows, not listed)
        assert rows["ln_final.hook_normalized"].alias_of == "post_layernorm"
