"""A full CLIP checkpoint given text runs its text tower (CLIPTextModel) alone: rows equal the full
model's own text hidden states, the full model's ``text_model.…`` paths and the block aliases resolve,
and ``vision_model.…`` hooks say that tower is not loaded.  (Images: tests/hooks/test_vision_layout.py.)"""
from __future__ import annotations

import pytest
import torch
from hookutil import capture

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hooks import resolve_hooks
from actlake.workers.models import load_model


def test_clip_checkpoint_on_text_runs_the_text_tower(tmp_path):
    import transformers as T

    torch.manual_seed(0)
    cfg = T.CLIPConfig(text_config=dict(vocab_size=300, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                                        intermediate_size=64, max_position_embeddings=32),
                       vision_config=dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                          num_attention_heads=4, intermediate_size=64), projection_dim=16)
    full = T.CLIPModel(cfg).eval()
    full.save_pretrained(tmp_path / "clip")
    net = load_model(str(tmp_path / "clip"), None, "float32", "cpu", vision=False)
    assert type(net.model).__name__ == "CLIPTextModel"
    assert net.info.architecture == "CLIPTextModel (text tower of CLIPModel)"
    ids = torch.randint(0, 300, (2, 9), generator=torch.Generator().manual_seed(1))
    got = capture(net.model, ["text_model.encoder.layers.0", "blocks.1.hook_resid_post"], input_ids=ids)
    with torch.no_grad():
        hs = full.text_model(input_ids=ids, output_hidden_states=True).hidden_states
    assert torch.allclose(got["encoder.layers.0"], hs[1], atol=1e-5)
    assert torch.allclose(got["blocks.1.hook_resid_post"], hs[2], atol=1e-5)
    with pytest.raises(HookError, match="only its text tower"):
        resolve_hooks(net.model, parse_hooks(["vision_model.encoder.layers.0"]))


def test_a_failing_model_forward_is_one_model_error():
    """A model whose own forward fails on the inputs (here: token ids beyond its vocabulary) is a
    ModelError naming the model class, the input shapes and the error — not an "unexpected" error."""
    import transformers as T

    from actlake.schemas.errors import ModelError

    m = T.GPT2Model(T.GPT2Config(vocab_size=50, n_embd=32, n_layer=1, n_head=4, n_positions=32)).eval()
    with pytest.raises(ModelError, match=r"GPT2Model's forward failed on input_ids \(1, 4\): IndexError"):
        capture(m, ["h.0"], input_ids=torch.tensor([[1, 2, 3, 99]]))
