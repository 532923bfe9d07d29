"""The job's coordinator actor killed mid-job (not the driver): the driver stops with one ClusterError
(committed fragments kept), and running the same job again resumes from the commit log with every
source token exactly once."""
from __future__ import annotations

import threading
import time

import pytest
from cluster_checks import assert_exactly_once, expected_shard_pairs
from test_submit import MODULES, big_corpus  # noqa: F401 - fixture

from actlake.schemas.errors import ClusterError
from actlake.schemas.job import parse_job
from actlake.service.driver import NAMESPACE, coordinator_name, run_cluster_job


def _commits(out) -> int:
    d = out / "_commits"
    return len([p for p in d.glob("*.json") if p.stem.isdigit()]) if d.exists() else 0


@pytest.mark.slow
def test_coordinator_killed_mid_job_then_rerun_resumes(ray_local, tiny_gpt2, big_corpus, tmp_path):  # noqa: F811
    ray = ray_local
    out = tmp_path / "ds"
    job = parse_job({"model": str(tiny_gpt2), "hooks": ["transformer.h.1", "transformer.h.2.mlp"],
                     "data": str(big_corpus), "out": str(out), "context_len": 16, "batch_size": 1,
                     "fragment_tokens": 64, "chunk_rows": 32, "plan": "shards", "progress": False})
    err: list[BaseException] = []
    lines: list[str] = []

    def drive() -> None:
        try:
            run_cluster_job(job, discover_s=1.0, log=lines.append)
        except BaseException as e:  # noqa: BLE001 - checked below
            err.append(e)

    t = threading.Thread(target=drive)
    t.start()
    deadline = time.time() + 300
    while _commits(out) < 1 and t.is_alive() and time.time() < deadline:
        time.sleep(0.1)
    ray.kill(ray.get_actor(coordinator_name(job), namespace=NAMESPACE), no_restart=True)
    t.join(timeout=300)
    assert not t.is_alive()
    killed_at = _commits(out)
    assert killed_at < len(MODULES), "the job finished before its coordinator could be killed"
    assert len(err) == 1 and isinstance(err[0], ClusterError), (err, lines[-5:])

    lines.clear()
    assert run_cluster_job(job, discover_s=1.0, log=lines.append) == str(out)  # the same job again
    assert not any("already complete" in s for s in lines)
    assert_exactly_once(out, expected_shard_pairs(tiny_gpt2, big_corpus))


def test_detached_coordinator_outlives_its_driver_and_is_reattached(ray_local, tiny_gpt2, text_corpus, tmp_path):
    """``--detached``: the coordinator of a driver that died (here: one that leased a unit and vanished)
    is found by name by the resubmitted job's driver, which requeues the old leases and finishes."""
    from actlake.service.coordinator import WAIT
    from actlake.service.supervisor import Supervisor

    ray = ray_local
    out = tmp_path / "ds"
    job = parse_job({"model": str(tiny_gpt2), "hooks": ["transformer.h.1"], "data": str(text_corpus),
                     "out": str(out), "context_len": 32, "fragment_tokens": 64, "chunk_rows": 32,
                     "plan": "shards", "progress": False})
    name = coordinator_name(job)
    old = Supervisor(job.with_absolute_paths(), None, None, log=lambda s: None)
    coord = old.start_coordinator(name, NAMESPACE, detached=True)
    unit = ray.get(coord.lease.remote("gone-worker", "127.0.0.9"))
    assert unit is not None and unit != WAIT
    del old, coord  # the first driver is gone; its detached coordinator lives on

    lines: list[str] = []
    run_cluster_job(job, detached=True, discover_s=1.0, log=lines.append)
    assert any(name in s and "re-attached, 1 lease(s) requeued" in s for s in lines), lines[:3]
    assert_exactly_once(out, expected_shard_pairs(tiny_gpt2, text_corpus))
    deadline = time.time() + 30
    while time.time() < deadline:  # a finished job kills its detached coordinator
        try:
            ray.get_actor(name, namespace=NAMESPACE)
        except ValueError:
            break
        time.sleep(0.5)
    else:
        raise AssertionError(f"detached coordinator {name} still alive after the job completed")
