"""Load an examples/ workflow script as a module, and check the report files it wrote."""
from __future__ import annotations

import importlib.util
import json
import re
import sys
from pathlib import Path

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


def load(name: str):
    sys.path.insert(0, str(EXAMPLES))
    spec = importlib.util.spec_from_file_location(f"wf_{name}", EXAMPLES / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod
    spec.loader.exec_module(mod)
    return mod


def check_report(out: Path, figures: dict) -> dict:
    """summary.json holds what main() returned; index.html links every plot, and each is a PNG."""
    summary = json.loads((out / "summary.json").read_text())
    assert summary == json.loads(json.dumps(figures))
    page = (out / "index.html").read_text()
    linked = set(re.findall(r'<img src="([^"]+)"', page))
    assert linked == set(summary["plots"]) and linked
    for p in linked:
        assert (out / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", p
    pages = set(re.findall(r'<li><a href="([^"]+)"', page))
    assert pages == set(summary.get("pages", []))
    for p in pages:
        assert (out / p).read_text().lstrip().lower().startswith("<!doctype html>"), p
    return summary
