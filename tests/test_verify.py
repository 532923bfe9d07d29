"""``actlake verify``: one flipped byte anywhere in committed data is always detected."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import actlake
from actlake.store import open_store, verify_store
from cli_zygote import run_cli
from stores import make_store


def _files(root: Path) -> list[Path]:
    return sorted(p for p in (root / "fragments").rglob("*") if p.is_file())


def test_clean_store_verifies(tmp_path):
    uri = make_store(str(tmp_path / "ds"))
    rep = verify_store(open_store(uri))
    assert rep.ok and rep.fragments == 4 and rep.rows == 622


@pytest.mark.parametrize("seed", range(6))
def test_flipped_byte_is_detected(tmp_path, seed):
    root = tmp_path / "ds"
    make_store(str(root))
    files = _files(root)
    rng = np.random.default_rng(seed)
    victim = files[rng.integers(len(files))]
    data = bytearray(victim.read_bytes())
    pos = int(rng.integers(len(data)))
    data[pos] ^= 1 << int(rng.integers(8))
    victim.write_bytes(bytes(data))
    rep = verify_store(open_store(str(root)))
    assert not rep.ok, f"flip in {victim.relative_to(root)} at {pos} not detected"
    res = run_cli(["verify", str(root)])  # its own process, forked from a CLI already imported
    assert res.returncode == 1 and "verify failed" in res.stderr


def test_missing_chunk_and_tampered_commit_are_detected(tmp_path):
    root = tmp_path / "ds"
    make_store(str(root))
    next(p for p in _files(root) if "/c/" in str(p)).unlink()
    assert any("missing" in e for e in verify_store(open_store(str(root))).errors)
    commit = root / "_commits" / f"{0:020d}.json"
    body = json.loads(commit.read_text())
    body["fragment"]["num_rows"] += 1
    commit.write_text(json.dumps(body))
    (root / "_commits" / "_last_checkpoint.json").unlink()  # force reading the commit files
    assert not verify_store(open_store(str(root))).ok


def test_reader_never_sees_uncommitted_attempts(tmp_path):
    root = tmp_path / "ds"
    uri = make_store(str(root))
    n = actlake.open_dataset(uri).num_rows
    # an attempt that wrote files but never committed (a worker died before its commit)
    (root / "fragments" / "u000000009-deadbeef").mkdir()
    (root / "fragments" / "u000000009-deadbeef" / "provenance.parquet").write_bytes(b"partial")
    assert actlake.open_dataset(uri).num_rows == n
    assert verify_store(open_store(uri)).ok
