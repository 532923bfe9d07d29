"""``--weights`` stores named parameters next to the activations; ``ds.weights(name)`` returns them
exactly (TransformerLens layouts checked against the module weights), with the model revision/digests
in the index; a name the model lacks fails before anything is written."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

import actlake
from actlake.schemas.errors import HookError


def test_weights_round_trip_through_a_job(ray_local, tmp_path, tiny_gpt2, text_corpus):
    from transformers import AutoModelForCausalLM

    out = str(tmp_path / "ds")
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "extract", "--model", str(tiny_gpt2), "--hooks",
                        "transformer.h.0", "--data", str(text_corpus), "--out", out, "--max-tokens", "64",
                        "--context-len", "16", "--fragment-tokens", "32", "--chunk-rows", "16", "--no-progress",
                        "--weights", "blocks.*.attn.W_Q,blocks.1.attn.W_O,blocks.2.mlp.W_in,W_E,transformer.h.0.ln_1.*"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    ds = actlake.open_dataset(out)
    m = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    assert "blocks.2.attn.W_Q" in ds.weights() and "transformer.h.0.ln_1.bias" in ds.weights()
    c_attn = m.transformer.h[2].attn.c_attn.weight  # Conv1D: (in, out) = (64, 3*64)
    want_q = c_attn[:, :64].reshape(64, 4, 16).permute(1, 0, 2)
    assert torch.equal(ds.weights("blocks.2.attn.W_Q"), want_q)
    assert torch.equal(ds.weights("blocks.1.attn.W_O"), m.transformer.h[1].attn.c_proj.weight.reshape(4, 16, 64))
    assert torch.equal(ds.weights("blocks.2.mlp.W_in"), m.transformer.h[2].mlp.c_fc.weight)
    assert torch.equal(ds.weights("W_E"), m.transformer.wte.weight)
    assert torch.equal(ds.weights("transformer.h.0.ln_1.weight"), m.transformer.h[0].ln_1.weight)
    index = json.loads((tmp_path / "ds" / "weights" / "index.json").read_text())
    assert index["model"]["weights_sha256"] == ds.manifest.model.weights_sha256
    assert "revision" in index["model"]
    with pytest.raises(HookError):
        ds.weights("blocks.9.attn.W_Q")


def test_llama_tl_layouts():
    from transformers import LlamaConfig, LlamaForCausalLM

    from actlake.workers.weights_export import export_arrays

    torch.manual_seed(0)
    m = LlamaForCausalLM(LlamaConfig(vocab_size=100, hidden_size=32, intermediate_size=48, num_hidden_layers=2,
                                     num_attention_heads=4, num_key_value_heads=2))
    a, meta = export_arrays(m, ["blocks.1.attn.W_*", "blocks.1.mlp.W_*", "W_U"])
    at = m.model.layers[1].self_attn
    x = torch.randn(5, 32)
    # x @ W_Q[h] equals the q_proj output of head h
    q = at.q_proj(x).reshape(5, 4, 8)
    assert torch.allclose(torch.einsum("td,hdk->thk", x, torch.from_numpy(a["blocks.1.attn.W_Q"])), q, atol=1e-5)
    k = at.k_proj(x).reshape(5, 2, 8)
    assert torch.allclose(torch.einsum("td,hdk->thk", x, torch.from_numpy(a["blocks.1.attn.W_K"])), k, atol=1e-5)
    z = torch.randn(5, 4, 8)
    assert torch.allclose(torch.einsum("thk,hkd->td", z, torch.from_numpy(a["blocks.1.attn.W_O"])),
                          at.o_proj(z.reshape(5, 32)), atol=1e-5)
    mlp = m.model.layers[1].mlp
    assert torch.allclose(x @ torch.from_numpy(a["blocks.1.mlp.W_in"]), mlp.up_proj(x), atol=1e-5)
    assert torch.allclose(x @ torch.from_numpy(a["blocks.1.mlp.W_gate"]), mlp.gate_proj(x), atol=1e-5)
    assert torch.equal(torch.from_numpy(a["W_U"]), m.lm_head.weight.detach().T)
    assert meta["blocks.1.attn.W_Q"]["source"] == "model.layers.1.self_attn.q_proj.weight"


def test_unknown_weight_is_refused(ray_local, tmp_path, tiny_gpt2, text_corpus):
    job = {"model": str(tiny_gpt2), "hooks": ["transformer.h.0"], "data": str(text_corpus), "out": str(tmp_path / "x"),
           "progress": False, "max_tokens": 64, "context_len": 16, "weights": ["blocks.0.attn.W_QQ"]}
    with pytest.raises(HookError, match="closest"):
        actlake.extract(job)
    assert not (tmp_path / "x" / "weights").exists() and not (tmp_path / "x" / "fragments").exists()
