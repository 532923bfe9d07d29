"""Readable contexts for byte-level BPE text, browse pages for vision datasets, and a relative ``out``
and ``data`` resolved where the user typed them (not in the Ray workers' working directory)."""
from __future__ import annotations

import os
import re

import numpy as np
import pyarrow as pa

import actlake
from actlake.query.context import text_windows, token_pieces

TEXT = "Hello 日本語のテキスト café «x» 🙂 done"


def _byte_bpe():
    from tokenizers import ByteLevelBPETokenizer

    tok = ByteLevelBPETokenizer()
    tok.train_from_iterator(["Hello world, plain ascii text only."] * 20, vocab_size=300, min_frequency=1)
    return tok


def test_token_pieces_merge_split_characters():
    tok = _byte_bpe()  # trained on ASCII only: every CJK char / emoji is 3-4 byte tokens
    ids = tok.encode(TEXT).ids
    assert len(ids) > len(TEXT.split())
    pieces = token_pieces(ids, tok.decode)
    assert "".join(p for _, _, p in pieces) == TEXT
    assert not any("\ufffd" in p for _, _, p in pieces)
    assert [a for a, _, _ in pieces] == [0] + [b for _, b, _ in pieces[:-1]] and pieces[-1][1] == len(ids)
    assert any(p == "本" and b - a == 3 for a, b, p in pieces)  # one character, three tokens


def test_text_window_marks_the_whole_character():
    tok = _byte_bpe()
    ids = tok.encode(TEXT).ids
    n = len(ids)
    prov = pa.table({"context_id": np.zeros(n, np.int64), "context_pos": np.arange(n), "token_id": np.array(ids)})
    pieces = token_pieces(ids, tok.decode)
    a, b, _ = next(p for p in pieces if p[2] == "本")
    for r in range(a, b):  # any of the character's byte tokens marks the character
        s = text_windows(prov, np.array([r]), width=n, decode=tok.decode)[0]
        assert s == TEXT.replace("本", "«本»"), s
    # a window edge that cuts a character drops the partial bytes instead of showing U+FFFD
    for r in range(n):
        s = text_windows(prov, np.array([r]), width=2, decode=tok.decode)[0]
        assert "\ufffd" not in s.replace("«\ufffd»", ""), (r, s)


def test_relative_out_is_resolved_in_the_callers_directory(ray_local, tmp_path, tiny_gpt2, text_corpus,
                                                           monkeypatch):
    before = set(os.listdir(os.getcwd()))
    work = tmp_path / "here"
    work.mkdir()
    monkeypatch.chdir(work)  # the Ray workers keep the directory Ray was started in
    data = os.path.relpath(text_corpus, work)  # a relative --data too
    out = actlake.extract({"model": str(tiny_gpt2), "hooks": ["transformer.h.0"], "data": data,
                           "out": "./rel", "max_tokens": 200, "context_len": 16, "progress": False})
    assert os.path.isabs(out) and out == str(work / "rel")
    ds = actlake.open_dataset(out)
    # the stored sources lead back to the files from any directory
    assert ds.manifest.job.data.path == str(text_corpus)
    sources = set(ds.documents([0]).column("source").to_pylist())
    assert sources and all(os.path.isabs(s) and os.path.isfile(s) for s in sources), sources
    assert (work / "rel" / "_commits").is_dir() and any((work / "rel" / "fragments").iterdir())
    assert actlake.open_dataset(str(work / "rel")).num_rows > 0
    monkeypatch.undo()
    assert set(os.listdir(os.getcwd())) - before == set()  # nothing written where Ray was started


def test_browse_vision_dataset(ray_local, tmp_path, tiny_vit, image_folder):
    from actlake.browse import build_site

    out = tmp_path / "vit"
    actlake.extract({"model": str(tiny_vit), "hooks": ["layers.1"], "data": str(image_folder),
                     "out": str(out), "progress": False})
    ds = actlake.open_dataset(str(out))
    feats = build_site(ds, "layers.1", [0, 3], str(tmp_path / "site"), k=4, per_bin=1)
    top = ds.query.topk("layers.1", unit=0, k=4)
    page = (tmp_path / "site" / "feature_0.html").read_text()
    assert [r["row_id"] for r in feats[0].top] == top.column("row_id").to_pylist()
    labels = re.findall(r'class="tok center"[^>]*>([^<]*)<', page)
    assert labels[:4] == top.column("context").to_pylist() and all(s.startswith("image ") for s in labels)
