"""Feature browser pages loaded in real headless Chromium: element counts, values equal to the query
results, corpus text with <script> / onerror shown as text and never run, no console messages."""
from __future__ import annotations

import os
import subprocess
import sys
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

import actlake
from actlake.browse import build_site

sys.path.insert(0, str(Path(__file__).resolve().parent))
from browse_store import browse_store  # noqa: E402
from chromium import console_lines, find_chromium, run  # noqa: E402

UNITS, K = [0, 1, 3], 10


class DOM(HTMLParser):
    """Elements of a dumped DOM: (tag, attrs, text) with text of leaf spans."""

    def __init__(self, text: str):
        super().__init__()
        self.elems: list[dict] = []
        self._stack: list[dict] = []
        self.feed(text)

    def handle_starttag(self, tag, attrs):
        e = {"tag": tag, **{k: (v or "") for k, v in attrs}, "text": ""}
        self.elems.append(e)
        if tag not in ("img", "meta", "br", "link"):
            self._stack.append(e)

    def handle_endtag(self, tag):
        while self._stack and self._stack.pop()["tag"] != tag:
            pass

    def handle_data(self, data):
        for e in self._stack:
            e["text"] += data

    def find(self, tag: str, cls: str | None = None) -> list[dict]:
        return [e for e in self.elems if e["tag"] == tag and (cls is None or cls in e.get("class", "").split())]


@pytest.fixture(scope="module")
def browser():
    path, reason = find_chromium()
    if path is None:
        pytest.skip(reason)
    return path


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    root = tmp_path_factory.mktemp("browse")
    uri, x, prov, tok = browse_store(str(root / "ds"))
    ds = actlake.open_dataset(uri)
    out = str(root / "report")
    build_site(ds, "h", UNITS, out, k=K, tokenizer=tok)
    return ds, x, tok, out


def _dom(browser, path) -> tuple[DOM, list[str]]:
    html, err = run(browser, "--dump-dom", Path(path).as_uri())
    assert "<html" in html, err[-2000:]
    return DOM(html), console_lines(err)


def test_console_detector_sees_scripts(browser, tmp_path):
    """Control: a page that does run a script is caught by the same checks."""
    p = tmp_path / "control.html"
    p.write_text("<html><body><script>console.error('ran');document.body.setAttribute('data-pwned','1')</script></body></html>")
    dom, console = _dom(browser, p)
    assert console and dom.find("body")[0].get("data-pwned") == "1"


def test_index_page(browser, site):
    ds, x, tok, out = site
    dom, console = _dom(browser, os.path.join(out, "index.html"))
    assert console == []
    rows = dom.find("tr", "feature")
    assert [int(r["data-feature"]) for r in rows] == UNITS
    links = [a["href"] for a in dom.find("a")]
    assert links == [f"feature_{u}.html" for u in UNITS] and all(os.path.exists(os.path.join(out, h)) for h in links)


@pytest.mark.parametrize("unit", UNITS)
def test_feature_page_matches_queries(browser, site, unit):
    ds, x, tok, out = site
    dom, console = _dom(browser, os.path.join(out, f"feature_{unit}.html"))
    assert console == [] and dom.find("script") == []
    q = type(ds.query)(ds, tokenizer=tok)
    top = q.topk("h", unit=unit, k=K, context=-1)
    rows = dom.find("tr", "topk")
    assert len(rows) == K
    assert [int(r["data-row-id"]) for r in rows] == top.column("row_id").to_pylist()
    np.testing.assert_allclose([float(r["data-value"]) for r in rows], top.column("value").to_numpy(), rtol=1e-7)
    np.testing.assert_array_equal(top.column("value").to_numpy(), x[top.column("row_id").to_numpy(), unit])
    # per-token colour: every token of the window is a span with its own value; the centre one is the row's
    spans = [e for e in dom.find("span", "tok")]
    centers = [e for e in spans if "center" in e["class"].split()]
    assert len(centers) == len(rows) + len(dom.find("tr", "sample"))
    np.testing.assert_allclose([float(c["data-value"]) for c in centers[:K]], top.column("value").to_numpy(), rtol=1e-6)
    assert all("background:rgba(255,110,0," in s["style"] for s in spans)
    samp = q.sample_intervals("h", unit=unit, bins=11, per_bin=3, context=-1)
    srows = dom.find("tr", "sample")
    assert [int(r["data-row-id"]) for r in srows] == samp.column("row_id").to_pylist()
    assert {int(r["data-bin"]) for r in srows} <= set(range(11))
    st = ds.query.stats("h", unit=[unit], rows=False)
    dens = [e for e in dom.find("span", "stat") if e["data-stat"] == "density"][0]
    assert float(dens["data-value"]) == pytest.approx(float(st["density"][0]), rel=1e-8)
    corr = ds.query.correlate("h", "h", units_a=[unit])
    c = dom.find("p", "corr")[0]
    assert int(c["data-best-unit"]) == corr.best.column("best_unit")[0].as_py() != unit
    assert float(c["data-corr"]) == pytest.approx(corr.best.column("corr")[0].as_py(), rel=1e-8)
    assert dom.find("img", "hist") and os.path.getsize(os.path.join(out, f"feature_{unit}_hist.svg")) > 1000


def test_hostile_corpus_text_is_shown_not_run(browser, site):
    ds, x, tok, out = site
    dom, console = _dom(browser, os.path.join(out, "feature_0.html"))  # unit 0 fires on tag tokens
    texts = [s["text"] for s in dom.find("span", "tok")]
    assert any(t.startswith("<script>") for t in texts) and any(t.startswith("<img") for t in texts)
    assert dom.find("script") == [] and dom.find("img") == dom.find("img", "hist")
    assert "data-pwned" not in dom.find("body")[0]
    assert dom.find("title")[0]["text"] == "unit 0 — h" and console == []


def test_cli_browse_and_bad_units(site, tmp_path):
    ds, *_ = site
    exe = str(Path(sys.executable).with_name("actlake"))
    r = subprocess.run([exe, "browse", ds.uri, "--hook", "h", "--units", "0,99", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 2 and r.stderr.count("error") == 1 and not (tmp_path / "r").exists()
    r = subprocess.run([exe, "browse", ds.uri, "--hook", "h", "--units", "1", "-k", "5", "--out", str(tmp_path / "r")],
                       capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    assert sorted(os.listdir(tmp_path / "r")) == ["feature_1.html", "feature_1_hist.svg", "index.html"]
