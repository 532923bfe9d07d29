"""Named kinds and aliases through a real extraction job (embedded Ray, real store): rows read back
equal a direct computation, the manifest records kind and rotary, attention rows are padded to the
context length; ``actlake hooks`` lists hooks with per-row shapes; oversize attention is refused."""
from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pytest
import torch

import actlake
from actlake.schemas.errors import HookError
from helpers import contexts_from_provenance


def test_gpt2_kinds_rows_equal_direct(ray_local, tmp_path, tiny_gpt2, text_corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    hooks = ["blocks.*.attn.hook_q", "transformer.h.1.attn:probs", "blocks.2.mlp.hook_pre"]
    job = {"model": str(tiny_gpt2), "hooks": hooks, "data": str(text_corpus), "out": str(tmp_path / "ds"),
           "dtype": "float32", "batch_size": 2, "progress": False, "context_len": 16, "max_tokens": 200,
           "fragment_tokens": 64, "chunk_rows": 16}
    ds = actlake.open_dataset(actlake.extract(job))
    assert ds.hooks["blocks.0.attn.hook_q"]["shape"] == (4, 16)
    assert ds.hooks["transformer.h.1.attn:probs"]["shape"] == (4, 16)
    info = ds.manifest.hooks["blocks.0.attn.hook_q"]
    assert (info.kind, info.rotary, info.module) == ("q", False, "transformer.h.0.attn")
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2, attn_implementation="eager").eval()
    prov = ds.provenance(np.arange(ds.num_rows))
    got = ds.take(np.arange(ds.num_rows))
    ctx, pos = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
    for c, ids in contexts_from_provenance(prov, tok.bos_token_id).items():
        seen = {}
        hs = [model.transformer.h[i].attn.c_attn.register_forward_hook(
            lambda m, a, o, i=i: seen.__setitem__(i, o)) for i in range(3)]
        hs.append(model.transformer.h[2].mlp.act.register_forward_pre_hook(lambda m, a: seen.__setitem__("pre", a[0])))
        with torch.no_grad():
            att = model(input_ids=torch.tensor(ids)[None], output_attentions=True).attentions
        for h in hs:
            h.remove()
        sel = np.nonzero(ctx == c)[0]
        T = len(ids)
        for i in range(3):
            q = seen[i][0, :, :64].reshape(T, 4, 16)
            assert torch.allclose(got[f"blocks.{i}.attn.hook_q"][sel], q[pos[sel]], atol=1e-5)
        p = torch.zeros(T, 4, 16)
        p[:, :, :T] = att[1][0].transpose(0, 1)
        assert torch.allclose(got["transformer.h.1.attn:probs"][sel], p[pos[sel]], atol=1e-5)
        assert torch.allclose(got["blocks.2.mlp.hook_pre"][sel], seen["pre"][0, pos[sel]], atol=1e-5)


def test_oversize_attention_is_refused_with_size(ray_local, tmp_path, tiny_gpt2, text_corpus, monkeypatch):
    monkeypatch.setenv("ACTLAKE_MAX_FRAGMENT_BYTES", str(1 << 20))
    job = {"model": str(tiny_gpt2), "hooks": ["transformer.h.0.attn:probs"], "data": str(text_corpus),
           "out": str(tmp_path / "big"), "progress": False, "context_len": 128, "fragment_tokens": 65536}
    code = ("import actlake, sys, json\n"
            "try:\n    actlake.extract(json.loads(sys.argv[1]))\n"
            "except actlake.errors.HookError as e:\n    print('HOOKERROR', e); sys.exit(3)\n")
    r = subprocess.run([sys.executable, "-c", code, json.dumps(job)], capture_output=True, text=True, timeout=300)
    assert r.returncode == 3, r.stderr[-2000:]
    assert "GiB per fragment" in r.stdout
    assert not (tmp_path / "big" / "fragments").exists()


def test_cli_hooks_lists_aliases_and_shapes(tiny_gpt2):
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "hooks", str(tiny_gpt2), "--json", "--context-len", "32"],
                       capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-2000:]
    rows = {d["hook"]: d for d in map(json.loads, r.stdout.splitlines())}
    assert rows["blocks.1.attn.hook_q"]["shape"] == [4, 16]
    assert rows["blocks.1.attn.hook_q"]["alias_of"] == "transformer.h.1.attn:q"
    assert rows["transformer.h.1.attn:probs"]["shape"] == [4, 32]
    assert rows["transformer.h.2.mlp.act:input"]["shape"] == [256]
    assert rows["blocks.2.hook_resid_post"]["alias_of"] == "transformer.h.2"
    assert rows["logits"]["shape"][0] > 0


def test_cli_hooks_unknown_model_is_one_line(tmp_path):
    r = subprocess.run([sys.executable, "-m", "actlake.cli", "hooks", str(tmp_path / "nope")],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and "error" in r.stderr and "Traceback" not in r.stderr


def test_unknown_kind_combination_is_hook_error(tiny_gpt2):
    from transformers import AutoModelForCausalLM

    from actlake.schemas.hooks import parse_hooks
    from actlake.workers.hooks import resolve_hooks

    m = AutoModelForCausalLM.from_pretrained(tiny_gpt2)
    with pytest.raises(HookError):
        resolve_hooks(m, parse_hooks(["transformer.h.0.ln_1:q"]))
    with pytest.raises(HookError):
        resolve_hooks(m, parse_hooks(["blocks.0.attn.hook_q:k"]))
