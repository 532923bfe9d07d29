"""Rows read back through the client equal a direct forward hook on the same inputs."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import actlake
from helpers import contexts_from_provenance, reference_activations

GPT2_HOOKS = ["transformer.h.*.mlp.act", "transformer.h.2", "transformer.h.1.attn.c_proj:input"]


def _extract(tmp_path, model_dir, data, dtype, hooks, **kw):
    job = {"model": str(model_dir), "hooks": hooks, "data": data, "out": str(tmp_path / f"ds-{dtype}"),
           "dtype": dtype, "batch_size": 1, "progress": False, **kw}
    return actlake.open_dataset(actlake.extract(job))


def _cast(t: torch.Tensor, dtype: str) -> torch.Tensor:
    return t.to({"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}[dtype])


@pytest.mark.parametrize("dtype", ["float32", "float16", "bfloat16"])
def test_gpt2_rows_equal_direct_forward(ray_local, tmp_path, tiny_gpt2, text_corpus, dtype):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    ds = _extract(tmp_path, tiny_gpt2, str(text_corpus), dtype, GPT2_HOOKS, context_len=32, max_tokens=1000,
                  fragment_tokens=256, chunk_rows=64)
    names = ["transformer.h.0.mlp.act", "transformer.h.1.mlp.act", "transformer.h.2.mlp.act", "transformer.h.2",
             "transformer.h.1.attn.c_proj:input"]
    assert sorted(ds.hooks) == sorted(names)
    assert ds.num_rows == 1000 - 1000 // 32 - 1  # one BOS dropped per context (31 full + 1 of 8 tokens)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    prov = ds.provenance(np.arange(ds.num_rows))
    got = ds.take(np.arange(ds.num_rows))
    ctxs = contexts_from_provenance(prov, tok.bos_token_id)
    ctx_col, pos_col = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
    for c, ids in ctxs.items():
        ref = reference_activations(model, names, input_ids=torch.tensor(ids)[None])
        sel = np.nonzero(ctx_col == c)[0]
        for n in names:
            want = _cast(ref[n][0, pos_col[sel]], dtype)
            assert got[n].dtype == want.dtype
            assert torch.equal(got[n][sel], want), f"{n} differs in context {c}"


def test_gpt2_provenance_points_at_source_tokens(ray_local, tmp_path, tiny_gpt2, text_corpus):
    from transformers import AutoTokenizer

    ds = _extract(tmp_path, tiny_gpt2, str(text_corpus), "float16", ["transformer.h.0"], context_len=16,
                  max_tokens=600, fragment_tokens=128, chunk_rows=32)
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    docs = sorted(text_corpus.iterdir())
    doc_tokens = [tok(p.read_text(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id] for p in docs]
    prov = ds.provenance(np.arange(ds.num_rows))
    d = prov.to_pydict()
    for doc_id, doc_pos, token_id in zip(d["doc_id"], d["doc_pos"], d["token_id"]):
        assert doc_tokens[doc_id][doc_pos] == token_id
    # every source position up to the budget exactly once, in stream order across contexts
    pairs = sorted(zip(d["doc_id"], d["doc_pos"]))
    assert len(pairs) == len(set(pairs))
    stream = [(i, p) for i, toks in enumerate(doc_tokens) for p in range(len(toks))]
    assert pairs == stream[: len(pairs)]
    assert set(prov.column_names) >= {"row_id", "doc_id", "context_id", "context_pos", "token_id"}


def test_vit_rows_and_patch_provenance(ray_local, tmp_path, tiny_vit, image_folder):
    from PIL import Image
    from transformers import ViTImageProcessor, ViTModel

    hooks = ["layers.*", "embeddings"]
    ds = _extract(tmp_path, tiny_vit, str(image_folder), "float32", hooks, fragment_tokens=400, chunk_rows=16)
    model = ViTModel.from_pretrained(tiny_vit).eval()
    proc = ViTImageProcessor.from_pretrained(tiny_vit)
    names = ["layers.0", "layers.1", "embeddings"]
    assert sorted(ds.hooks) == sorted(names)
    paths = sorted(image_folder.rglob("*.png"), key=lambda p: str(p.relative_to(image_folder)))
    n_tok = 1 + (32 // 8) ** 2
    assert ds.num_rows == len(paths) * n_tok
    prov = ds.provenance(np.arange(ds.num_rows)).to_pydict()
    got = ds.take(np.arange(ds.num_rows))
    px = proc(images=[Image.open(p).convert("RGB") for p in paths], return_tensors="pt")["pixel_values"]
    refs = [reference_activations(model, names, pixel_values=px[i:i + 1]) for i in range(len(paths))]
    for r in range(ds.num_rows):
        img, pos = prov["image_id"][r], prov["context_pos"][r]
        assert prov["label"][r] == paths[img].parent.name
        if pos == 0:
            assert prov["token_type"][r] == "cls" and prov["patch_row"][r] == -1
        else:
            assert prov["token_type"][r] == "patch"
            assert (prov["patch_row"][r], prov["patch_col"][r]) == divmod(pos - 1, 4)
        for n in names:
            assert torch.equal(got[n][r], refs[img][n][0, pos]), (n, r)


@pytest.mark.slow
def test_smollm2_rows_equal_direct_forward(ray_local, tmp_path, text_corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from actlake.workers.smollm2 import converted_dir

    hooks = ["model.layers.3.mlp.down_proj:input", "model.layers.5"]
    ds = _extract(tmp_path, "smollm2-135m", str(text_corpus), "bfloat16", hooks, context_len=24, max_tokens=72,
                  fragment_tokens=48, chunk_rows=16)
    assert ds.manifest.model.id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    d = converted_dir()
    tok = AutoTokenizer.from_pretrained(d)
    model = AutoModelForCausalLM.from_pretrained(d).eval()
    prov = ds.provenance(np.arange(ds.num_rows))
    got = ds.take(np.arange(ds.num_rows))
    ctx_col, pos_col = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
    for c, ids in contexts_from_provenance(prov, tok.bos_token_id).items():
        ref = reference_activations(model, hooks, input_ids=torch.tensor(ids)[None])
        sel = np.nonzero(ctx_col == c)[0]
        for n in hooks:
            assert torch.equal(got[n][sel], ref[n][0, pos_col[sel]].to(torch.bfloat16)), (n, c)


def test_convnext_spatial_maps_become_rows(ray_local, tmp_path, image_folder):
    """A conv stage's C×H×W map is stored as H·W rows of width C with patch row/col provenance."""
    from PIL import Image
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    torch.manual_seed(0)
    cfg = ConvNextConfig(image_size=64, num_channels=3, patch_size=4, hidden_sizes=[8, 16], depths=[1, 1],
                         num_stages=2)
    d = tmp_path / "convnext"
    model = ConvNextModel(cfg).eval()
    model.save_pretrained(d)
    ConvNextImageProcessor(size={"shortest_edge": 64}, crop_pct=1.0).save_pretrained(d)
    names = [n for n, _ in model.named_modules() if n.endswith("stages.1")]
    assert names, [n for n, _ in model.named_modules()][:20]
    ds = _extract(tmp_path, d, str(image_folder), "float32", names, fragment_tokens=200, chunk_rows=16)
    paths = sorted(image_folder.rglob("*.png"), key=lambda p: str(p.relative_to(image_folder)))
    proc = ConvNextImageProcessor.from_pretrained(d)
    prov = ds.provenance(np.arange(ds.num_rows)).to_pydict()
    got = ds.take(np.arange(ds.num_rows))[names[0]]
    assert got.shape[1] == 16
    for img, p in enumerate(paths):
        px = proc(images=[Image.open(p).convert("RGB")], return_tensors="pt")["pixel_values"]
        ref = reference_activations(model, names, pixel_values=px)[names[0]][0]  # (C, H, W)
        rows = [r for r in range(ds.num_rows) if prov["image_id"][r] == img]
        assert len(rows) == ref.shape[1] * ref.shape[2]
        for r in rows:
            assert prov["token_type"][r] == "patch"
            assert torch.equal(got[r], ref[:, prov["patch_row"][r], prov["patch_col"][r]])


def test_text_labels_reach_provenance_and_filters(ray_local, tmp_path, tiny_gpt2, text_corpus):
    """A jsonl source with a label field: every row carries its document's label (docs span
    contexts and contexts span docs), unlabelled docs give nulls, and a label filter keeps exactly
    the rows of those documents."""
    import json

    words = " ".join(p.read_text() for p in sorted(text_corpus.iterdir())).split()
    docs = [" ".join(words[i:i + 9]) for i in range(0, 900, 9)]  # short docs: several per context
    labels = ["pos" if i % 3 == 0 else None if i % 3 == 1 else "neg" for i in range(len(docs))]
    src = tmp_path / "docs.jsonl"
    src.write_text("\n".join(json.dumps({"text": t, **({"y": y} if y else {})}) for t, y in zip(docs, labels)))
    ds = _extract(tmp_path, tiny_gpt2, {"type": "jsonl", "path": str(src), "label_field": "y"}, "float16",
                  ["transformer.h.0"], context_len=16, max_tokens=600, fragment_tokens=128, chunk_rows=32)
    assert "label" in ds.manifest.provenance_columns
    d = ds.provenance(np.arange(ds.num_rows)).to_pydict()
    assert [labels[i] for i in d["doc_id"]] == d["label"]
    assert {"pos", "neg", None} <= set(d["label"])
    want = sorted(r for r, y in zip(d["row_id"], d["label"]) if y == "pos")
    got = np.concatenate([b["row_id"].numpy() for b in
                          ds.batches(7, with_provenance=True, drop_last=False, filter={"labels": ["pos"]})])
    assert sorted(got.tolist()) == want
