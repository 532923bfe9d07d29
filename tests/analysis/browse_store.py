"""A small text store with real words (Python's own docstrings) and a hostile document, written
through DatasetWriter, plus the word-level tokenizer that decodes its token ids."""
from __future__ import annotations

import inspect
import json
import re

import numpy as np
import pyarrow as pa
from actlake.store.writer import DatasetWriter

HOSTILE = "Watch out: <script>document.title='pwned';document.body.setAttribute('data-pwned','1')</script> " \
          "and <img src=x onerror=\"document.body.setAttribute('data-pwned','2')\"> end."
COLS = ["row_id", "doc_id", "context_id", "context_pos", "doc_pos", "token_id"]


class WordTokenizer:
    """ids → text for the words and separators of the corpus (``decode`` like a HF tokenizer)."""

    def __init__(self, vocab: list[str]):
        self.vocab = vocab

    def decode(self, ids) -> str:
        return "".join(self.vocab[int(i)] for i in ids)


def corpus() -> list[str]:
    docs = [inspect.getdoc(m) or "" for m in (json, re, inspect, np.linalg)]
    return [HOSTILE] + [d[:600] for d in docs if d]


def browse_store(uri: str, ctx_len: int = 32, d: int = 6, seed: int = 0):
    """Returns (uri, X float32 [N, d], provenance [N], tokenizer).  Unit 0 fires on '<', '>' and
    tag tokens (``<script>``, ``<img …>``) (so the hostile document is in its top-k), unit 1 on capitalised words."""
    rng = np.random.default_rng(seed)
    pieces = [re.findall(r"<[^>]*>|\w+|\s+|[^\w\s]", t) for t in corpus()]  # a tag is one token
    vocab = sorted({p for ps in pieces for p in ps})
    ids = {w: i for i, w in enumerate(vocab)}
    tok, doc, dpos = [], [], []
    for di, ps in enumerate(pieces):
        tok += [ids[p] for p in ps]
        doc += [di] * len(ps)
        dpos += list(range(len(ps)))
    tok, doc, dpos = np.array(tok), np.array(doc), np.array(dpos)
    n = len(tok)
    ctx = np.arange(n) // ctx_len
    pos = np.arange(n) % ctx_len
    words = np.array(vocab, dtype=object)[tok]
    x = rng.standard_normal((n, d)).astype(np.float32) * 0.2
    x[:, 0] += np.array([3.0 if w.startswith("<") or w in ("script", "title") else 0.0 for w in words], np.float32)
    x[:, 1] += np.array([2.0 if w[:1].isupper() else 0.0 for w in words], np.float32)
    x[:, 2] = 0.8 * x[:, 0] + 0.1 * rng.standard_normal(n).astype(np.float32)
    w = DatasetWriter(uri, {"h": ((d,), "float32")}, chunk_rows=64, provenance_columns=COLS)
    provs = []
    for lo in range(0, n, 256):  # fragments of 8 whole contexts, rows permuted inside
        sl = np.arange(lo, min(n, lo + 256))
        sl = sl[rng.permutation(len(sl))]
        prov = pa.table({"doc_id": doc[sl], "context_id": ctx[sl], "context_pos": pos[sl].astype(np.int32),
                         "doc_pos": dpos[sl].astype(np.int32), "token_id": tok[sl].astype(np.int32)})
        w.add({"h": x[sl]}, prov)
        provs.append((sl, prov))
    w.close()
    order = np.concatenate([s for s, _ in provs])
    return uri, x[order], pa.concat_tables([p for _, p in provs]), WordTokenizer(vocab)
