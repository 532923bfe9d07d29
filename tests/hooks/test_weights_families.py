"""TransformerLens-named weights (``--weights``) on BERT and the vision transformers (ViT, CLIP-vision,
DINOv2): ``x @ W_Q[h]`` is head h of the query projection, ``z @ W_O`` the output projection,
``x @ W_in`` the MLP's first projection (BERT: ``intermediate.dense``) and ``h @ W_out`` its second
(BERT: ``output.dense``), all without biases, checked against the modules named here per family."""
from __future__ import annotations

import pytest
import torch

from actlake.workers.weights_export import export_arrays

KW = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
          intermediate_size=64)
# attention, q/k/v/out projection names, MLP in/out projections (relative to the block)
LAYOUT = {
    "bert": ("bert.encoder.layer.1", "attention", ("self.query", "self.key", "self.value", "output.dense"),
             ("intermediate.dense", "output.dense")),
    "vit": ("layers.1", "attention", ("q_proj", "k_proj", "v_proj", "o_proj"), ("mlp.fc1", "mlp.fc2")),
    "clip": ("encoder.layers.1", "self_attn", ("q_proj", "k_proj", "v_proj", "out_proj"), ("mlp.fc1", "mlp.fc2")),
    "dinov2": ("encoder.layer.1", "attention", ("q_proj", "k_proj", "v_proj", "o_proj"), ("mlp.fc1", "mlp.fc2")),
}


def model(family: str):
    import transformers as T

    torch.manual_seed(0)
    if family == "bert":
        return T.BertForMaskedLM(T.BertConfig(vocab_size=100, hidden_size=32, num_hidden_layers=2,
                                              num_attention_heads=4, intermediate_size=64))
    if family == "vit":
        return T.ViTModel(T.ViTConfig(**KW))
    if family == "clip":
        return T.CLIPVisionModel(T.CLIPVisionConfig(**KW))
    return T.Dinov2Model(T.Dinov2Config(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                        num_attention_heads=4, mlp_ratio=2))


def no_bias(mod: torch.nn.Module, x: torch.Tensor) -> torch.Tensor:
    with torch.no_grad():
        return mod(x) - (mod.bias if mod.bias is not None else 0)


@pytest.mark.parametrize("family", list(LAYOUT))
def test_tl_weights_equal_the_modules(family):
    m = model(family)
    blk, att, (qn, kn, vn, on), (inn, outn) = LAYOUT[family]
    mods = dict(m.named_modules())
    a, meta = export_arrays(m, ["blocks.1.attn.W_*", "blocks.1.mlp.W_*"])
    assert {"blocks.1.attn.W_Q", "blocks.1.attn.W_K", "blocks.1.attn.W_V", "blocks.1.attn.W_O",
            "blocks.1.mlp.W_in", "blocks.1.mlp.W_out"} <= set(a), sorted(a)
    x = torch.randn(5, 32, generator=torch.Generator().manual_seed(1))
    for w, n in (("W_Q", qn), ("W_K", kn), ("W_V", vn)):
        assert a[f"blocks.1.attn.{w}"].shape == (4, 32, 8)
        got = torch.einsum("td,hdk->thk", x, torch.from_numpy(a[f"blocks.1.attn.{w}"]))
        assert torch.allclose(got, no_bias(mods[f"{blk}.{att}.{n}"], x).reshape(5, 4, 8), atol=1e-5), w
    z = torch.randn(5, 4, 8, generator=torch.Generator().manual_seed(2))
    got = torch.einsum("thk,hkd->td", z, torch.from_numpy(a["blocks.1.attn.W_O"]))
    assert torch.allclose(got, no_bias(mods[f"{blk}.{att}.{on}"], z.reshape(5, 32)), atol=1e-5)
    assert a["blocks.1.mlp.W_in"].shape == (32, 64) and a["blocks.1.mlp.W_out"].shape == (64, 32)
    assert torch.allclose(x @ torch.from_numpy(a["blocks.1.mlp.W_in"]), no_bias(mods[f"{blk}.{inn}"], x), atol=1e-5)
    h = torch.randn(5, 64, generator=torch.Generator().manual_seed(3))
    assert torch.allclose(h @ torch.from_numpy(a["blocks.1.mlp.W_out"]), no_bias(mods[f"{blk}.{outn}"], h), atol=1e-5)
    assert meta["blocks.1.mlp.W_in"]["source"] == f"{blk}.{inn}.weight"
