"""Static HTML feature browser: one page per feature (unit or SAE latent) and an index page.

Per feature: the top-k contexts with every token coloured by the feature's value on it, interval
samples (``bins`` equal intervals of (0, max], Bricken et al. 2023 "Towards Monosemanticity"
style), an activation histogram (SVG, matplotlib), density / max / mean, and the correlation with
the best-matching neuron of the hook.  Every number comes from ``ds.query`` (top-k, interval
samples, stats, correlate); pages carry it in ``data-*`` attributes so tests can compare.

No script at all is emitted and every piece of corpus text goes through ``html.escape``, so a corpus
containing ``<script>`` shows it as text; a strict Content-Security-Policy (``default-src 'none'``)
forbids scripts even if one slipped in."""
from __future__ import annotations

import html
import os
import shutil
import tempfile
from dataclasses import dataclass
from typing import Any

import numpy as np

from actlake.query.context import token_pieces
from actlake.query.validate import parse_spec, projection_for
from actlake.schemas.errors import QueryError

CSS = """body{font:14px/1.45 system-ui,sans-serif;margin:24px;max-width:1100px;color:#222}
h1{font-size:20px}h2{font-size:16px;margin-top:28px}table{border-collapse:collapse}
td,th{padding:3px 8px;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
td.num,th.num{text-align:right;font-variant-numeric:tabular-nums}.ctx{font-family:ui-monospace,monospace;white-space:pre-wrap}
.tok{border-radius:2px}.tok.center{outline:1px solid #333}.meta span{margin-right:18px}a{color:#0645ad}"""
CSP = "default-src 'none'; img-src 'self' data:; style-src 'unsafe-inline'"


@dataclass
class Feature:
    """What one page shows (values float; rows are global row ids)."""

    id: int
    stats: dict[str, float]
    top: list[dict[str, Any]]  # rank, row_id, value, tokens: [(text, value, center)]
    samples: list[dict[str, Any]]  # bin, lo, hi, row_id, value, tokens
    best_unit: int
    best_corr: float


def _esc(v: Any) -> str:
    return html.escape(str(v), quote=True)


def _colour(v: float, vmax: float) -> str:
    a = 0.0 if not vmax > 0 or not v > 0 else min(1.0, v / vmax)
    return f"background:rgba(255,110,0,{a:.3f})"


def _tokens_html(tokens: list[tuple[str, float, bool]], vmax: float) -> str:
    return "".join(f'<span class="tok{" center" if c else ""}" style="{_colour(v, vmax)}" data-value="{v:.9g}" '
                   f'title="{v:.4g}">{_esc(t)}</span>' for t, v, c in tokens)


class _Values:
    """The feature's value on arbitrary rows (windows around result rows)."""

    def __init__(self, ds: Any, hook: str, units: list[int] | None, encoder: dict | None):
        self.ds, self.hook = ds, hook
        spec = parse_spec(kind="stats", hook=hook, unit=units, encoder=encoder)
        self.proj = projection_for(spec, ds.manifest.hooks[hook])

    def of(self, row_ids: np.ndarray) -> np.ndarray:
        """float32 ``[n, F]``."""
        x = self.ds.take(row_ids, hooks=self.hook)[self.hook].float().reshape(len(row_ids), -1).numpy()
        return self.proj(x)


def _windows(ds: Any, rows: np.ndarray, width: int) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Per row: (global row ids of its context within ``width`` positions, token ids, is-center).
    Vision rows (no token ids): the row alone, its token id -1."""
    out: list = [None] * len(rows)
    frag, local = ds.snapshot.locate(rows)
    for f in np.unique(frag):
        prov = ds.access.provenance_of(int(f))
        if "token_id" not in prov.column_names or "context_id" not in prov.column_names:
            for i in np.flatnonzero(frag == f):
                out[i] = (np.array([rows[i]], np.int64), np.array([-1]), np.array([True]))
            continue
        ctx, pos = prov.column("context_id").to_numpy(), prov.column("context_pos").to_numpy()
        tok = prov.column("token_id").to_numpy()
        for i in np.flatnonzero(frag == f):
            r = local[i]
            sel = np.flatnonzero((ctx == ctx[r]) & (np.abs(pos - pos[r]) <= width))
            sel = sel[np.argsort(pos[sel], kind="stable")]
            out[i] = (sel + int(ds.snapshot.offsets[f]), tok[sel], sel == r)
    return out


def _pieces(ds: Any, q: Any, win: tuple[np.ndarray, np.ndarray, np.ndarray], lookup: dict[int, float]
            ) -> list[tuple[str, float, bool]]:
    """(text, value, is-center) per displayed piece of one window: tokens that only decode together
    (one character split over byte-level BPE tokens) form one piece with the largest value; a vision
    row is one piece labelled ``image I patch (r, c)``."""
    rows, toks, center = win
    if len(toks) == 1 and toks[0] == -1:
        return [(q.contexts(rows, width=0)[0], lookup[int(rows[0])], True)]
    decode = q._decoder()
    if decode is None:
        return [(f"[{int(t)}]", lookup[int(r)], bool(c)) for r, t, c in zip(rows, toks, center, strict=True)]
    return [(text, max(lookup[int(r)] for r in rows[a:b]), bool(center[a:b].any()))
            for a, b, text in token_pieces([int(t) for t in toks], decode)]


def collect(ds: Any, hook: str, units: list[int], encoder: dict | None = None, k: int = 20, context: int = 8,
            bins: int = 11, per_bin: int = 3, tokenizer: Any = None) -> list[Feature]:
    """Query everything the pages show.  ``units`` are neuron indices, or latent indices of ``encoder``
    (an SAE with ReLU activation).  Raises QueryError (unknown hook, units out of range, TopK SAE)."""
    if encoder is not None:
        if encoder.get("activation", "relu") != "relu":
            raise QueryError("sae: the browser supports ReLU SAEs (TopK latents depend on all latents)")
        w = np.asarray(encoder["W_enc"], dtype=np.float32)
        d = int(np.prod(ds.manifest.hooks[hook].shape)) if hook in ds.manifest.hooks else -1
        w = w.T if w.shape[0] != d and w.shape[1] == d else w
        bad = [u for u in units if not 0 <= u < w.shape[1]]
        if bad:
            raise QueryError(f"units: latent {bad[0]} is out of range [0, {w.shape[1]})")
        b = encoder.get("b_enc")
        sub = {"W_enc": w[:, units], "b_enc": None if b is None else np.asarray(b, np.float32)[units],
               "b_dec": encoder.get("b_dec"), "activation": "relu"}
        sel: dict[str, Any] = {"encoder": sub}
        one = [{"encoder": {**sub, "W_enc": sub["W_enc"][:, [i]],
                            "b_enc": None if sub["b_enc"] is None else sub["b_enc"][[i]]}} for i in range(len(units))]
    else:
        sel = {"unit": units}
        one = [{"unit": u} for u in units]
    q = ds.query if tokenizer is None else type(ds.query)(ds, tokenizer=tokenizer)
    st = q.stats(hook, rows=False, **sel)
    top = q.topk(hook, k=k, context=-1, **sel)
    corr = q.correlate(hook, hook, **({"encoder_a": sel["encoder"]} if encoder is not None else {"units_a": units}))
    values = _Values(ds, hook, None if encoder is not None else units, sel.get("encoder"))
    label = top.column_names[0]
    feats = []
    for i, u in enumerate(units):
        t = top.filter(np.asarray(top.column(label).to_numpy() == (i if encoder is not None else u)))
        s = q.sample_intervals(hook, bins=bins, per_bin=per_bin, context=-1, **one[i])
        rows = np.concatenate([t.column("row_id").to_numpy(), s.column("row_id").to_numpy()]).astype(np.int64)
        wins = _windows(ds, rows, context)
        allrows = np.unique(np.concatenate([w[0] for w in wins])) if wins else np.empty(0, np.int64)
        vals = values.of(allrows)[:, i] if len(allrows) else np.empty(0, np.float32)
        lookup = dict(zip(allrows.tolist(), vals.tolist()))
        toks = [_pieces(ds, q, w, lookup) for w in wins]
        nt = t.num_rows
        feats.append(Feature(
            id=int(u),
            stats={key: float(st[key][i]) for key in ("density", "mean", "var", "max", "min", "kurtosis")},
            top=[{"rank": int(a), "row_id": int(r), "value": float(v), "tokens": toks[j]} for j, (a, r, v) in
                 enumerate(zip(t.column("rank").to_pylist(), t.column("row_id").to_pylist(), t.column("value").to_pylist()))],
            samples=[{"bin": int(b), "lo": float(lo), "hi": float(hi), "row_id": int(r), "value": float(v),
                      "tokens": toks[nt + j]} for j, (b, lo, hi, r, v) in
                     enumerate(zip(*(s.column(c).to_pylist() for c in ("bin", "lo", "hi", "row_id", "value"))))],
            best_unit=int(corr.best.column("best_unit")[i].as_py()), best_corr=float(corr.best.column("corr")[i].as_py())))
    return feats


def _hist_svg(ds: Any, hook: str, f: Feature, sel: dict[str, Any], path: str) -> None:
    from actlake.client.plots import _figure

    st = ds.query.stats(hook, rows=False, histogram_bins=40, **sel)
    fig = _figure(5.6, 2.6)
    ax = fig.add_subplot()
    ax.stairs(st["hist"][0], st["hist_edges"], fill=True, color="#f08a24")
    ax.set_yscale("symlog", linthresh=1)
    ax.set_xlabel("activation")
    ax.set_ylabel("rows")
    ax.set_title(f"feature {f.id}: density {f.stats['density']:.3g}")
    fig.savefig(path, format="svg")


def _page(title: str, body: str) -> str:
    return (f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8">'
            f'<meta http-equiv="Content-Security-Policy" content="{_esc(CSP)}">'
            f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>{body}</body></html>\n")


def _feature_html(hook: str, kind: str, f: Feature) -> str:
    vmax = max([r["value"] for r in f.top] + [f.stats["max"], 0.0])
    meta = "".join(f'<span class="stat" data-stat="{_esc(k)}" data-value="{v:.9g}">{_esc(k)} {v:.4g}</span>'
                   for k, v in f.stats.items())
    corr = (f'<p class="corr" data-best-unit="{f.best_unit}" data-corr="{f.best_corr:.9g}">best-matching neuron: '
            f'unit {f.best_unit} (Pearson r = {f.best_corr:.4f})</p>')
    top = "".join(f'<tr class="topk" data-row-id="{r["row_id"]}" data-value="{r["value"]:.9g}"><td class="num">'
                  f'{r["rank"] + 1}</td><td class="num">{r["value"]:.4g}</td><td class="num">{r["row_id"]}</td>'
                  f'<td class="ctx">{_tokens_html(r["tokens"], vmax)}</td></tr>' for r in f.top)
    samp = "".join(f'<tr class="sample" data-bin="{r["bin"]}" data-row-id="{r["row_id"]}" data-value="{r["value"]:.9g}">'
                   f'<td class="num">{r["bin"]}</td><td class="num">{r["lo"]:.3g}–{r["hi"]:.3g}</td>'
                   f'<td class="num">{r["value"]:.4g}</td><td class="ctx">{_tokens_html(r["tokens"], vmax)}</td></tr>'
                   for r in f.samples)
    body = (f'<p><a href="index.html">← all features</a></p><h1>{_esc(kind)} {f.id} of {_esc(hook)}</h1>'
            f'<p class="meta">{meta}</p>{corr}<img class="hist" alt="activation histogram" '
            f'src="feature_{f.id}_hist.svg" width="560">'
            f'<h2>Top activations</h2><table class="top"><tr><th class="num">#</th><th class="num">value</th>'
            f'<th class="num">row</th><th>context</th></tr>{top}</table>'
            f'<h2>Interval samples</h2><table class="samples"><tr><th class="num">interval</th><th class="num">range</th>'
            f'<th class="num">value</th><th>context</th></tr>{samp}</table>')
    return _page(f"{kind} {f.id} — {hook}", body)


def _index_html(uri: str, hook: str, kind: str, feats: list[Feature]) -> str:
    rows = "".join(f'<tr class="feature" data-feature="{f.id}"><td><a href="feature_{f.id}.html">{_esc(kind)} {f.id}</a></td>'
                   f'<td class="num">{f.stats["density"]:.4g}</td><td class="num">{f.stats["max"]:.4g}</td>'
                   f'<td class="num">{f.best_unit}</td><td class="num">{f.best_corr:.4f}</td>'
                   f'<td class="ctx">{_tokens_html(f.top[0]["tokens"], f.top[0]["value"]) if f.top else ""}</td></tr>'
                   for f in feats)
    body = (f"<h1>Features of {_esc(hook)}</h1><p>dataset {_esc(uri)}</p><table class=\"index\"><tr><th>feature</th>"
            f'<th class="num">density</th><th class="num">max</th><th class="num">best neuron</th>'
            f'<th class="num">corr</th><th>top context</th></tr>{rows}</table>')
    return _page(f"actlake features — {hook}", body)


def build_site(ds: Any, hook: str, units: list[int], out: str, encoder: dict | None = None, k: int = 20,
               context: int = 8, bins: int = 11, per_bin: int = 3, tokenizer: Any = None) -> list[Feature]:
    """Write ``index.html`` and per feature ``feature_<id>.html`` + ``feature_<id>_hist.svg`` under
    ``out`` (written to a temporary folder first, then moved into place: a failure leaves nothing).
    Returns the features shown.  Raises QueryError (bad hook / units / SAE, ``out`` is a file)."""
    if not units:
        raise QueryError("units: give at least one unit")
    if os.path.exists(out) and not os.path.isdir(out):
        raise QueryError(f"out: {out!r} exists and is not a folder")
    feats = collect(ds, hook, units, encoder, k, context, bins, per_bin, tokenizer)
    kind = "latent" if encoder is not None else "unit"
    parent = os.path.dirname(os.path.abspath(out))
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=".browse-", dir=parent)
    try:
        for f in feats:
            if encoder is None:
                sel: dict[str, Any] = {"unit": [f.id]}
            else:
                w1, b1 = _col(encoder, hook, ds, f.id)
                sel = {"encoder": {**encoder, "W_enc": w1, "b_enc": b1}}
            _hist_svg(ds, hook, f, sel, os.path.join(tmp, f"feature_{f.id}_hist.svg"))
            with open(os.path.join(tmp, f"feature_{f.id}.html"), "w", encoding="utf-8") as fh:
                fh.write(_feature_html(hook, kind, f))
        with open(os.path.join(tmp, "index.html"), "w", encoding="utf-8") as fh:
            fh.write(_index_html(ds.uri, hook, kind, feats))
        os.makedirs(out, exist_ok=True)
        for name in os.listdir(tmp):
            os.replace(os.path.join(tmp, name), os.path.join(out, name))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return feats


def _col(encoder: dict, hook: str, ds: Any, latent: int) -> tuple[np.ndarray, np.ndarray | None]:
    w = np.asarray(encoder["W_enc"], dtype=np.float32)
    d = int(np.prod(ds.manifest.hooks[hook].shape))
    w = w.T if w.shape[0] != d and w.shape[1] == d else w
    b = encoder.get("b_enc")
    return w[:, [latent]], None if b is None else np.asarray(b, np.float32)[[latent]]
