"""The ``context`` column: a readable window around each result row (pure: tables in, strings out).

Text: the tokens of the row's model context within ``width`` positions of it, decoded together
(so byte-level BPE pieces of one character merge into it), the piece holding the activating token
between « and ».  Vision: ``image 12 patch (3, 7)`` (or the token
type for CLS / register tokens)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

Decode = Callable[[Sequence[int]], str]


def ids_decoder(ids: Sequence[int]) -> str:
    """Fallback when no tokenizer can be loaded offline: ``[id]``."""
    return " ".join(f"[{int(i)}]" for i in ids)


def token_pieces(ids: Sequence[int], decode: Decode) -> list[tuple[int, int, str]]:
    """Split a decoded token window into pieces that each decode to whole characters.

    With byte-level BPE (GPT-2, Llama 3, SmolLM2) one character may span several tokens, and a token
    decoded alone gives U+FFFD.  Tokens are decoded cumulatively; a token whose prefix decodes to an
    unfinished character (trailing U+FFFD) joins the next one.

    Args:
        ids: token ids ``[n]`` in context order.
        decode: ids → text (a tokenizer's ``decode``).
    Returns: ``[(start, end, text)]``: tokens ``ids[start:end]`` render as ``text``; the pieces
        cover 0..n in order and their texts concatenate to ``decode(ids)`` (up to the tokenizer's
        own clean-up of spaces)."""
    out: list[tuple[int, int, str]] = []
    prev, start, n = "", 0, len(ids)
    for i in range(n):
        text = decode(list(ids[:i + 1]))
        if text.endswith("\ufffd") and i < n - 1:
            continue  # an unfinished character: take the next token with it
        piece = text[len(prev):] if text.startswith(prev) else decode(list(ids[start:i + 1]))
        out.append((start, i + 1, piece))
        prev, start = text, i + 1
    return out


def text_windows(prov: pa.Table, rows: np.ndarray, width: int, decode: Decode | None) -> list[str]:
    """Context strings for local ``rows`` of one fragment.

    Args:
        prov: the fragment's provenance (needs ``context_id``, ``context_pos``, ``token_id``).
        rows: int ``[m]`` local row indices into ``prov``.
        width: tokens shown on each side of the row's token.
        decode: ids → text (None: ``[id]`` per token, space-separated).
    Returns: m strings."""
    ctx = prov.column("context_id").to_numpy()
    pos = prov.column("context_pos").to_numpy()
    tok = prov.column("token_id").to_numpy()
    order = np.lexsort((pos, ctx))
    ctx_s, pos_s, tok_s = ctx[order], pos[order], tok[order]
    sep = "" if decode is not None else " "
    dec = decode or ids_decoder
    out = []
    for r in np.asarray(rows, dtype=np.int64):
        c, p = ctx[r], pos[r]
        lo = np.searchsorted(ctx_s, c, "left")
        hi = np.searchsorted(ctx_s, c, "right")
        a = lo + np.searchsorted(pos_s[lo:hi], p - width, "left")
        b = lo + np.searchsorted(pos_s[lo:hi], p + width, "right")
        toks, poss = tok_s[a:b].tolist(), pos_s[a:b].tolist()
        if decode is None:
            out.append(sep.join(f"«{dec([t])}»" if q == p else dec([t]) for t, q in zip(toks, poss, strict=True)))
            continue
        pieces = []
        for i0, i1, text in token_pieces(toks, decode):
            if p in poss[i0:i1]:
                # bytes of a character cut by the window's left edge decode to U+FFFD: not shown
                text = text.strip("\ufffd") or text
                pieces.append(f"«{text}»")
            else:
                pieces.append(text)
        # a window edge that cuts a character leaves U+FFFD outside the marked piece: drop it
        out.append("".join(pieces).strip("\ufffd"))
    return out


def vision_labels(prov: pa.Table, rows: np.ndarray) -> list[str]:
    """``image I patch (r, c)`` per local row (``image I <token_type>`` where patch_row is -1)."""
    img_col = "image_id" if "image_id" in prov.column_names else "doc_id"
    img = prov.column(img_col).to_numpy()
    pr = prov.column("patch_row").to_numpy() if "patch_row" in prov.column_names else None
    pc = prov.column("patch_col").to_numpy() if "patch_col" in prov.column_names else None
    tt = prov.column("token_type").cast(pa.string()).to_pylist() if "token_type" in prov.column_names else None
    out = []
    for r in np.asarray(rows, dtype=np.int64).tolist():
        if pr is not None and pc is not None and pr[r] >= 0:
            out.append(f"image {int(img[r])} patch ({int(pr[r])}, {int(pc[r])})")
        else:
            out.append(f"image {int(img[r])} {tt[r] if tt else 'token'}")
    return out
