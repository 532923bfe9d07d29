"""Per-context token sampling: N seeded random positions per context, visible in provenance
(context_pos), rows equal a direct forward at those positions."""
from __future__ import annotations

import numpy as np
import torch

import actlake
from actlake.workers.token_sampling import sample_keep
from helpers import reference_activations


def test_sample_keep_is_seeded_uniform_and_respects_the_mask():
    keep = np.ones(128, dtype=bool)
    keep[0] = False
    a = sample_keep(keep, 10, seed=0, context_id=7)
    assert a.sum() == 10 and not a[0]
    assert np.array_equal(a, sample_keep(keep, 10, seed=0, context_id=7))
    assert not np.array_equal(a, sample_keep(keep, 10, seed=1, context_id=7))
    assert not np.array_equal(a, sample_keep(keep, 10, seed=0, context_id=8))
    assert np.array_equal(sample_keep(keep, 500, 0, 0), keep)
    # uniform over kept positions: every position's frequency near 10/127 over many contexts
    freq = np.mean([sample_keep(keep, 10, 0, c) for c in range(4000)], axis=0)[1:]
    assert abs(freq.mean() - 10 / 127) < 1e-9 and freq.min() > 0.05 and freq.max() < 0.11


def test_sampled_rows_equal_direct_forward(ray_local, tmp_path, tiny_gpt2, text_corpus):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    job = {"model": str(tiny_gpt2), "hooks": ["transformer.h.1"], "data": str(text_corpus), "out": str(tmp_path / "s"),
           "dtype": "float32", "progress": False, "context_len": 16, "max_tokens": 320, "fragment_tokens": 64,
           "chunk_rows": 16, "tokens_per_context": 5, "seed": 3}
    ds = actlake.open_dataset(actlake.extract(job))
    assert ds.manifest.job.tokens_per_context == 5
    prov = ds.provenance(np.arange(ds.num_rows))
    ctx, pos = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
    assert ds.num_rows == 5 * 20 and all((ctx == c).sum() == 5 for c in range(20))
    assert len({tuple(sorted(pos[ctx == c])) for c in range(20)}) > 10  # positions differ across contexts
    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    model = AutoModelForCausalLM.from_pretrained(tiny_gpt2).eval()
    docs = [tok(p.read_text(), add_special_tokens=False)["input_ids"] + [tok.eos_token_id]
            for p in sorted(text_corpus.iterdir())]
    stream = [t for d in docs for t in d]
    got = ds.take(np.arange(ds.num_rows))["transformer.h.1"]
    for c in range(20):
        ids = [tok.bos_token_id] + stream[c * 15:(c + 1) * 15]
        ref = reference_activations(model, ["transformer.h.1"], input_ids=torch.tensor(ids)[None])["transformer.h.1"][0]
        sel = np.nonzero(ctx == c)[0]
        assert torch.allclose(got[sel], ref[pos[sel]], atol=1e-5)
