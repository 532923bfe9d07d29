"""docs/workflows.md shows figures of every workflow script, and the README shows one from each; every
image they reference is a PNG in the repository (fast: no script is run)."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPTS = ["monosemanticity", "null_codes", "qk_modes", "tense_inputs"]
PNG = b"\x89PNG\r\n\x1a\n"


def images(md: str) -> list[str]:
    """Image paths of markdown ``![alt](path)`` and HTML ``<img src="path">``."""
    return re.findall(r"!\[[^\]]*\]\(([^)\s]+)\)", md) + re.findall(r'<img src="([^"]+)"', md)


def test_each_workflow_section_has_a_figure():
    md = (ROOT / "docs" / "workflows.md").read_text()
    sections = re.split(r"\n## ", md)[1:]
    for name in SCRIPTS:
        sec = [s for s in sections if f"examples/{name}.py" in s.split("\n", 1)[0]]
        assert len(sec) == 1, name
        figs = images(sec[0])
        assert figs, f"no figure in the {name} section"
        for f in figs:
            assert (ROOT / "docs" / f).read_bytes()[:8] == PNG, f


def test_readme_links_workflows_with_one_figure_each():
    md = (ROOT / "README.md").read_text()
    assert "(docs/workflows.md)" in md
    figs = [f for f in images(md) if f.startswith("docs/workflows/")]
    for name in SCRIPTS:
        assert [f for f in figs if Path(f).name.startswith(name)], name
    for f in figs:
        assert (ROOT / f).read_bytes()[:8] == PNG, f
