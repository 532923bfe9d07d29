"""Tokenization and packing of documents into fixed-length model contexts.

Document text is tokenized *as text* (``split_special_tokens=True``, no special tokens added): a
literal ``"<|endoftext|>"``, ``"<s>"`` or ``"[CLS]"`` inside a document becomes ordinary text
tokens, never a control id.  Only the packer inserts control tokens:

* a separator (EOS, or ``[SEP]`` for BERT-style tokenizers) after every document, and
* with ``prepend_bos``, a BOS (or ``[CLS]``) at the start of every context (the SAE-training
  convention; an encoder expects its ``[CLS]`` at position 0).

Every row records whether it came from the document or was inserted (``Context.inserted``), so
``drop_tokens`` removes exactly the inserted tokens and never a document token.  Everything is
deterministic, so a resumed job regenerates exactly the same contexts and work units."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Iterable, Iterator

import numpy as np

from actlake.schemas.errors import JobSpecError
from actlake.schemas.manifest import PackingInfo
from actlake.workers.sources import Doc

NO_DOC = -1
TEXT, BOS, EOS = 0, 1, 2  # values of Context.inserted
KIND = {"bos": BOS, "eos": EOS}


@dataclass
class Context:
    tokens: np.ndarray  # int32 [n]
    doc_id: np.ndarray  # int64 [n]; BOS rows carry the doc id of the token after them
    doc_pos: np.ndarray  # int32 [n]; -1 for BOS, len(doc) for the separator after a doc
    labels: dict[int, str] | None = None  # doc id -> label, for the labelled docs in this context
    inserted: np.ndarray | None = None  # uint8 [n]: TEXT (0) document token, BOS (1), EOS (2) inserted
    docs: dict[int, Doc] | None = None  # doc id -> its Doc (text dropped): source file and index


def _special_id(tokenizer: Any, attr: str) -> int | None:
    v = getattr(tokenizer, attr, None)
    return int(v) if v is not None else None


def resolve_packing(tokenizer: Any, prepend_bos: bool | None, drop_tokens: Iterable[str] = ("bos", "pad")) -> PackingInfo:
    """Decide which control tokens the packer inserts, per tokenizer.

    * BOS role: the tokenizer's ``bos_token``; for BERT-style tokenizers (no BOS, a ``cls_token``)
      ``[CLS]``.  ``prepend_bos=None`` (auto) prepends it when one exists (decoders: the usual
      SAE convention; encoders: the position-0 token they were trained with), else not.  An
      explicit ``True`` with neither falls back to EOS (GPT-2 style); with no EOS either it raises.
    * Separator after each document: ``eos_token``, else ``sep_token`` (BERT), else none.

    Raises JobSpecError when BOS is requested and the tokenizer has no token for it."""
    bos = _special_id(tokenizer, "bos_token_id")
    bos_kind = "bos"
    if bos is None and _special_id(tokenizer, "cls_token_id") is not None:
        bos, bos_kind = _special_id(tokenizer, "cls_token_id"), "cls"
    sep = _special_id(tokenizer, "eos_token_id")
    sep_kind = "eos"
    if sep is None and _special_id(tokenizer, "sep_token_id") is not None:
        sep, sep_kind = _special_id(tokenizer, "sep_token_id"), "sep"
    if prepend_bos is None:
        use_bos = bos is not None
    else:
        use_bos = bool(prepend_bos)
        if use_bos and bos is None:
            if sep is None:
                raise JobSpecError("prepend_bos: the tokenizer has no BOS, CLS or EOS token; use --no-prepend-bos")
            bos, bos_kind = sep, sep_kind
    return PackingInfo(
        prepend_bos=use_bos, bos_token_id=bos if use_bos else None, bos_token=bos_kind if use_bos else None,
        separator_token_id=sep, separator_token=sep_kind if sep is not None else None,
        drop_tokens=sorted(set(drop_tokens)), prepend_bos_requested=prepend_bos,
    )


def tokenize_docs(docs: Iterable[Doc], tokenizer: Any, batch: int = 64) -> Iterator[tuple[Doc, list[int]]]:
    """Token ids of each document's text, special-token strings split as plain text."""
    buf: list[Doc] = []

    def run(b: list[Doc]) -> list[list[int]]:
        return tokenizer([x.text for x in b], add_special_tokens=False, split_special_tokens=True)["input_ids"]

    for d in docs:
        buf.append(d)
        if len(buf) == batch:
            yield from zip(buf, run(buf))
            buf = []
    if buf:
        yield from zip(buf, run(buf))


def pack_contexts(
    docs: Iterable[Doc], tokenizer: Any, context_len: int, prepend_bos: bool | None, max_tokens: int | None,
) -> Iterator[Context]:
    """Yield contexts of ``context_len`` tokens (the last may be shorter); stop at ``max_tokens``.

    ``prepend_bos`` None resolves per tokenizer (see resolve_packing)."""
    packing = resolve_packing(tokenizer, prepend_bos)
    bos, eos = packing.bos_token_id, packing.separator_token_id
    use_bos = packing.prepend_bos
    body = context_len - 1 if use_bos else context_len
    budget = max_tokens if max_tokens is not None else None
    toks: list[np.ndarray] = []
    dids: list[np.ndarray] = []
    dpos: list[np.ndarray] = []
    kinds: list[np.ndarray] = []
    pending = 0
    meta: dict[int, Doc] = {}  # docs not yet fully emitted

    def emit(n_body: int) -> Context:
        nonlocal toks, dids, dpos, kinds, pending
        t, d, p, k = np.concatenate(toks), np.concatenate(dids), np.concatenate(dpos), np.concatenate(kinds)
        toks, dids, dpos, kinds = [t[n_body:]], [d[n_body:]], [p[n_body:]], [k[n_body:]]
        pending -= n_body
        t, d, p, k = t[:n_body], d[:n_body], p[:n_body], k[:n_body]
        if use_bos:
            t = np.concatenate([[bos], t])
            d = np.concatenate([[d[0]], d])
            p = np.concatenate([[-1], p])
            k = np.concatenate([[BOS], k])
        here = {int(x) for x in np.unique(d)}
        ctx_docs = {x: meta[x] for x in here if x in meta}
        ctx_labels = {x: doc.label for x, doc in ctx_docs.items() if doc.label is not None}
        left = set(np.unique(dids[0]).tolist()) if len(dids[0]) else set()
        for x in [x for x in meta if x not in left and x in here]:
            del meta[x]
        return Context(t.astype(np.int32), d.astype(np.int64), p.astype(np.int32), ctx_labels or None,
                       k.astype(np.uint8), ctx_docs)

    for doc, ids in tokenize_docs(docs, tokenizer):
        kind = np.zeros(len(ids) + (eos is not None), dtype=np.uint8)
        if eos is not None:
            ids = list(ids) + [eos]
            kind[-1] = EOS
        n = len(ids)
        toks.append(np.asarray(ids, dtype=np.int32))
        dids.append(np.full(n, doc.doc_id, dtype=np.int64))
        dpos.append(np.arange(n, dtype=np.int32))
        kinds.append(kind)
        meta[doc.doc_id] = Doc(doc.doc_id, "", doc.label, doc.source, doc.index)
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


def keep_mask(ctx: Context, drop_tokens: Iterable[str]) -> np.ndarray:
    """Rows of ``ctx`` to store: all but the *inserted* tokens named in ``drop_tokens`` ('bos', 'eos';
    'pad' never reaches a row).  Document tokens are always kept, whatever their id."""
    kinds = ctx.inserted if ctx.inserted is not None else np.zeros(len(ctx.tokens), np.uint8)
    drop = [KIND[x] for x in drop_tokens if x in KIND]
    return ~np.isin(kinds, drop) if drop else np.ones(len(kinds), dtype=bool)
