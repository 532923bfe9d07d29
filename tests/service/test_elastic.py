"""Elastic, fault-tolerant jobs on ray.cluster_utils.Cluster with nodes on distinct loopback addresses:
a node added mid-job gets work; a stuck worker's lease expires and its unit runs elsewhere; a node
killed mid-job loses nothing and duplicates nothing."""
from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from cluster_checks import assert_exactly_once, expected_shard_pairs
from ray_head import head_env
from test_submit import MODULES, big_corpus  # noqa: F401 - fixture

HERE = Path(__file__).parent


@pytest.mark.slow
def test_node_added_and_node_killed_mid_job(tmp_path, tiny_gpt2, big_corpus):  # noqa: F811
    out = tmp_path / "ds"
    job = {"model": str(tiny_gpt2), "hooks": ["transformer.h.1", "transformer.h.2.mlp"], "data": str(big_corpus),
           "out": str(out), "context_len": 16, "batch_size": 1, "fragment_tokens": 64, "chunk_rows": 32,
           "plan": "shards", "progress": False}
    (tmp_path / "job.json").write_text(json.dumps(job))
    tmp = Path(tempfile.mkdtemp(prefix="rc", dir="/tmp"))
    try:
        res = subprocess.run([sys.executable, str(HERE / "elastic_scenario.py"), str(tmp_path / "job.json"),
                              str(tmp_path / "result.json")], env=head_env(tmp), capture_output=True, text=True,
                             timeout=900, start_new_session=True)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    assert res.returncode == 0, res.stderr[-4000:]
    r = json.loads((tmp_path / "result.json").read_text())
    ips = {w.split("@")[1].split(":")[0] for w in r["workers"].values()}
    assert {"127.0.0.4", "127.0.0.5"} <= ips, r  # the added node did work
    assert r["killed_after"] < len(MODULES) and any("lost" in e for e in r["events"]), r["events"]
    assert r["status"]["state"] == "done" and r["status"]["units_done"] == len(MODULES)
    assert_exactly_once(out, expected_shard_pairs(tiny_gpt2, big_corpus))
