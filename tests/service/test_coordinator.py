"""Coordinator queue semantics without Ray: leases expire, dead workers' units return, late commits
of a re-leased unit are refused, a new coordinator over the same store resumes from the log."""
from __future__ import annotations

import time

import numpy as np
import pyarrow as pa

from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.schemas.job import parse_job
from actlake.service.coordinator import WAIT, Coordinator
from actlake.store import open_store, write_fragment


def _job(corpus, out):
    return parse_job({"model": "unused-by-the-shard-planner", "hooks": ["h"], "data": str(corpus),
                      "out": str(out), "plan": "shards"})


def _record(store, unit, attempt: str, rows: int = 5) -> FragmentRecord:
    info = HookInfo(name="h", module="h", io="output", array="h", shape=[2], dtype="float32",
                    storage_dtype="float32")
    path = f"fragments/{unit.unit_id}-{attempt}"
    prov = pa.table({"doc_id": np.full(rows, unit.doc_base), "context_id": np.arange(rows) + unit.context_base})
    digest = write_fragment(store, path, {"h": np.zeros((rows, 2), "float32")}, prov, {"h": info}, 4)
    return FragmentRecord(unit_id=unit.unit_id, unit_index=unit.index, path=path, num_rows=rows, num_items=1,
                          num_tokens=rows, source_range=(unit.context_base, unit.context_base + 1),
                          checksums_sha256=digest.digest, attempt=attempt)


def test_leases_expire_release_and_refuse_late_commits(tmp_path, text_corpus):
    out = tmp_path / "ds"
    c = Coordinator(_job(text_corpus, out), lease_s=0.2)
    store = open_store(str(out))
    assert c.status()["units_left"] == 6 and c.status()["tokens_total"] > 0
    a = c.lease("A", "127.0.0.4")
    b = c.lease("B", "127.0.0.5")
    assert a.unit_id != b.unit_id and c.status()["units_leased"] == 2
    assert c.status()["workers_per_node"] == {"127.0.0.4": 1, "127.0.0.5": 1}
    c.renew("B")
    time.sleep(0.25)
    c.renew("B")  # B is alive; A is stuck
    again = c.lease("C", "127.0.0.6")
    assert again.unit_id == a.unit_id and c.expired == 1  # A's lease expired and went first in line
    assert c.commit("C", _record(store, again, "c"))
    assert not c.commit("A", _record(store, a, "a"))  # the stuck worker woke up: refused
    assert c.release("B") == 1  # B died holding b
    c.lease_s = 60.0  # from here on no lease may expire, however slowly a loaded machine runs the loop
    assert c.lease("D").unit_id == b.unit_id
    seen = {a.unit_id, b.unit_id}
    while (u := c.lease("D")) not in (None, WAIT):
        seen.add(u.unit_id)
        assert c.commit("D", _record(store, u, "d"))
    assert c.lease("E") == WAIT  # b is still leased to D
    assert c.commit("D", _record(store, b, "d"))
    assert c.lease("E") is None and c.progress()["exhausted"] and len(seen) == 6
    assert c.status()["units_done"] == 6 and c.duplicates_refused == 1

    fresh = Coordinator(_job(text_corpus, out))  # a resubmitted job: everything is in the log
    assert fresh.lease("X") is None and fresh.units_skipped == 6
