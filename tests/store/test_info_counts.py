"""Issue 7 A7 / A3: ``actlake info`` shows what the manifest and the commits record — inf/NaN counts
per hook (text and ``--json``) and the packing rules of the tokenizer (prepend BOS, separator,
dropped inserted tokens)."""
from __future__ import annotations

import json
import warnings

import numpy as np
import pyarrow as pa
from typer.testing import CliRunner

from actlake.cli import app
from actlake.schemas.manifest import PackingInfo, TokenizerInfo
from actlake.store.fs import open_store
from actlake.store.manifest_io import read_manifest, write_manifest
from actlake.store.writer import DatasetWriter


def _store(path, rows: list[np.ndarray]) -> str:
    w = DatasetWriter(str(path), {"h": ((4,), "float16"), "g": ((2,), "float32")}, chunk_rows=8)
    for a in rows:
        n = len(a)
        prov = pa.table({"doc_id": np.zeros(n, np.int64), "context_id": np.zeros(n, np.int64),
                         "context_pos": np.arange(n, dtype=np.int32), "token_id": np.zeros(n, np.int32)})
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the write-time warning is tested in test_disk_use
            w.add({"h": a, "g": np.ones((n, 2), np.float32)}, prov, nonfinite="warn")
    return w.close()


def test_info_counts_nonfinite_values_in_text_and_json(tmp_path):
    a = np.array([[1, np.inf, 2, 3], [np.nan, 1, 1, 1], [0, 0, 0, -np.inf]], np.float16)
    uri = _store(tmp_path / "d", [a, a[:1], np.zeros((2, 4), np.float16)])
    res = CliRunner().invoke(app, ["info", uri])
    assert res.exit_code == 0, res.output
    line = next(x for x in res.output.splitlines() if x.startswith("non-finite"))
    assert "h 4" in line and " g " not in line + " " and "policy error" not in line  # 3 + 1
    assert "warn or clamp" in line  # the only policies that commit them (a rerun may differ from the manifest's job)
    res = CliRunner().invoke(app, ["info", "--json", uri])
    assert res.exit_code == 0 and json.loads(res.output)["nonfinite"] == {"h": 4}
    clean = _store(tmp_path / "c", [np.zeros((3, 4), np.float16)])
    res = CliRunner().invoke(app, ["info", "--json", clean])
    assert json.loads(res.output)["nonfinite"] == {}
    assert "non-finite values: none" in CliRunner().invoke(app, ["info", clean]).output


def test_info_shows_the_packing_rules(tmp_path):
    uri = _store(tmp_path / "p", [np.zeros((3, 4), np.float16)])
    store = open_store(uri)
    m = read_manifest(store)
    for packing, want in [
        (PackingInfo(prepend_bos=False, separator_token_id=102, separator_token="sep", drop_tokens=[],
                     prepend_bos_requested=None), "prepend bos no (auto), separator sep, rows dropped for no inserted"),
        (PackingInfo(prepend_bos=True, bos_token_id=101, bos_token="cls", separator_token_id=102,
                     separator_token="sep", drop_tokens=["bos"], prepend_bos_requested=True),
         "prepend cls yes, separator sep, rows dropped for bos inserted")]:
        m.tokenizer = TokenizerInfo(name="some/tokenizer", vocab_size=30522, cls_token_id=101, sep_token_id=102,
                                    packing=packing)
        write_manifest(store, m)
        res = CliRunner().invoke(app, ["info", uri])
        assert res.exit_code == 0, res.output
        assert want in " ".join(res.output.split()), res.output


def test_info_names_every_hook_whole_on_a_narrow_terminal(tmp_path):
    """Hook names longer than the column wrap instead of ending in "…" (80 columns, as when piped)."""
    names = [f"gpt_neox.layers.1.attention:{k}" for k in ("q", "k", "scores", "probs")]
    w = DatasetWriter(str(tmp_path / "d"), {n: ((2,), "float32") for n in names}, chunk_rows=8)
    prov = pa.table({"doc_id": np.zeros(3, np.int64), "context_id": np.zeros(3, np.int64),
                     "context_pos": np.arange(3, dtype=np.int32), "token_id": np.zeros(3, np.int32)})
    w.add({n: np.ones((3, 2), np.float32) for n in names}, prov)
    res = CliRunner().invoke(app, ["info", w.close()], env={"COLUMNS": "80"})
    assert res.exit_code == 0, res.output
    assert "…" not in res.output
    cells = "".join(line.split("│")[1].strip() for line in res.output.splitlines() if line.startswith("│"))
    for n in names:
        assert n in cells, (n, res.output)
