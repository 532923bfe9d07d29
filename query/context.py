"""The ``context`` column: a readable window around each result row (pure: tables in, strings out).

Text: the tokens of the row's model context within ``width`` positions of it, decoded one by one
and joined, the activating token between « and ».  Vision: ``image 12 patch (3, 7)`` (or the token
type for CLS / register tokens)."""
from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import pyarrow as pa

Decode = Callable[[Sequence[int]], str]


def ids_decoder(ids: Sequence[int]) -> str:
    """Fallback when no tokenizer can be loaded offline: ``[id]``."""
    return " ".join(f"[{int(i)}]" for i in ids)


def text_windows(prov: pa.Table, rows: np.ndarray, width: int, decode: Decode | None) -> list[str]:
    """Context strings for local ``rows`` of one fragment.

    Args:
        prov: the fragment's provenance (needs ``context_id``, ``context_pos``, ``token_id``).
        rows: int ``[m]`` local row indices into ``prov``.
        width: tokens shown on each side of the row's token.
        decode: ids → text for one token (None: ``[id]`` per token, space-separated).
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
        pieces = []
        for t, q in zip(tok_s[a:b].tolist(), pos_s[a:b].tolist()):
            s = dec([t])
            pieces.append(f"«{s}»" if q == p else s)
        out.append(sep.join(pieces))
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
