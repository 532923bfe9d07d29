"""Tokenization and packing of documents into fixed-length model contexts.

Documents are concatenated, each followed by EOS, and cut into windows; with ``prepend_bos`` every
window starts with BOS (the SAE-training convention).  Everything is deterministic, so a resumed
job regenerates exactly the same contexts and work units."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from actlake.workers.sources import Doc

NO_DOC = -1


@dataclass
class Context:
    tokens: np.ndarray  # int32 [n]
    doc_id: np.ndarray  # int64 [n]; BOS rows carry the doc id of the token after them
    doc_pos: np.ndarray  # int32 [n]; -1 for BOS
    labels: dict[int, str] | None = None  # doc id -> label, for the labelled docs in this context


def tokenize_docs(docs: Iterable[Doc], tokenizer: Any, batch: int = 64) -> Iterator[tuple[Doc, list[int]]]:
    buf: list[Doc] = []
    for d in docs:
        buf.append(d)
        if len(buf) == batch:
            yield from zip(buf, tokenizer([x.text for x in buf], add_special_tokens=False)["input_ids"])
            buf = []
    if buf:
        yield from zip(buf, tokenizer([x.text for x in buf], add_special_tokens=False)["input_ids"])


def pack_contexts(
    docs: Iterable[Doc], tokenizer: Any, context_len: int, prepend_bos: bool, max_tokens: int | None
) -> Iterator[Context]:
    """Yield contexts of ``context_len`` tokens (the last may be shorter); stop at ``max_tokens``."""
    bos = tokenizer.bos_token_id if tokenizer.bos_token_id is not None else tokenizer.eos_token_id
    eos = tokenizer.eos_token_id
    use_bos = prepend_bos and bos is not None
    body = context_len - 1 if use_bos else context_len
    budget = max_tokens if max_tokens is not None else None
    toks: list[np.ndarray] = []
    dids: list[np.ndarray] = []
    dpos: list[np.ndarray] = []
    pending = 0
    labels: dict[int, str] = {}  # labels of the docs not yet fully emitted

    def emit(n_body: int) -> Context:
        nonlocal toks, dids, dpos, pending
        t, d, p = np.concatenate(toks), np.concatenate(dids), np.concatenate(dpos)
        toks, dids, dpos = [t[n_body:]], [d[n_body:]], [p[n_body:]]
        pending -= n_body
        t, d, p = t[:n_body], d[:n_body], p[:n_body]
        if use_bos:
            t = np.concatenate([[bos], t]).astype(np.int32)
            d = np.concatenate([[d[0]], d]).astype(np.int64)
            p = np.concatenate([[-1], p]).astype(np.int32)
        ctx_labels = None
        if labels:
            ctx_labels = {int(x): labels[int(x)] for x in np.unique(d) if int(x) in labels}
            left = set(np.unique(dids[0]).tolist()) if len(dids[0]) else set()
            for x in [x for x in labels if x not in left]:
                del labels[x]
        return Context(t.astype(np.int32), d.astype(np.int64), p.astype(np.int32), ctx_labels or None)

    for doc, ids in tokenize_docs(docs, tokenizer):
        if eos is not None:
            ids = list(ids) + [eos]
        n = len(ids)
        toks.append(np.asarray(ids, dtype=np.int32))
        dids.append(np.full(n, doc.doc_id, dtype=np.int64))
        dpos.append(np.arange(n, dtype=np.int32))
        if doc.label is not None:
            labels[doc.doc_id] = doc.label
        pending += n
        while pending >= body:
            if budget is not None and budget < context_len:
                break
            yield emit(body)
            if budget is not None:
                budget -= context_len
        if budget is not None and budget < context_len:
            break
    # a final, shorter context from what is left (and fits the budget)
    limit = pending if budget is None else min(pending, budget - (1 if use_bos else 0))
    if limit >= 1 and (budget is None or budget >= (2 if use_bos else 1)):
        yield emit(limit)
