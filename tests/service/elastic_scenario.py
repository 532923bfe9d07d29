"""Run one job on a ``ray.cluster_utils.Cluster`` while nodes come and go (a subprocess of the tests).

    python elastic_scenario.py JOB_JSON RESULT_JSON

Head 127.0.0.3 (no CPUs: driver + coordinator only), worker node A on 127.0.0.4.  After A's first
commit its worker process is frozen (SIGSTOP: a stuck worker holding a lease, which must expire) and
node B joins on 127.0.0.5; once B has committed a unit, B's worker is paused and node A is killed (no
graceful shutdown).  B resumes only after the driver has reported A's worker lost, so the loss is always
seen mid-job (left running, B could finish every unit before Ray's health checks declare A dead).
Writes {"events": [...], "workers": {unit id: worker}, "status": final coordinator status} to
RESULT_JSON."""
from __future__ import annotations

import json
import os
import signal
import sys
import threading
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")
sys.path.insert(0, str(Path(__file__).parent))

from ray_head import free_port  # noqa: E402


def _committed(out: Path) -> list[dict]:
    d = out / "_commits"
    files = sorted(p for p in d.glob("*.json") if p.stem.isdigit()) if d.exists() else []
    recs = []
    for p in files:
        try:
            recs.append(json.loads(p.read_text())["fragment"])
        except (OSError, ValueError):
            pass
    return recs


def _wait(pred, timeout: float, what: str) -> None:
    deadline = time.time() + timeout
    while not pred():
        if time.time() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


def main(job_json: str, result_json: str) -> None:
    import ray
    from ray.cluster_utils import Cluster

    from actlake.schemas.job import parse_job
    from actlake.service.driver import run_cluster_job

    job = parse_job(json.loads(Path(job_json).read_text()))
    out = Path(job.out)
    events: list[str] = []
    paused: list[int] = []  # SIGSTOPped pids to resume on the way out
    frozen: list[int] = []
    common = {"include_dashboard": False, "object_store_memory": 80 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.3", "num_cpus": 0, "gcs_server_port": free_port("127.0.0.3"),
        "dashboard_agent_listen_port": free_port("127.0.0.3"), **common})
    try:
        node_a = cluster.add_node(node_ip_address="127.0.0.4", num_cpus=1,
                                  dashboard_agent_listen_port=free_port("127.0.0.4"), **common)
        ray.init(address=cluster.address, namespace="actlake", logging_level="WARNING")
        err: list[BaseException] = []

        def drive() -> None:
            try:
                run_cluster_job(job, lease_s=8.0, discover_s=1.0, log=events.append)
            except BaseException as e:  # noqa: BLE001 - reported to the test
                err.append(e)

        t = threading.Thread(target=drive)
        t.start()
        _wait(lambda: len(_committed(out)) >= 1 or not t.is_alive(), 300, "no first commit")
        pid = int(_committed(out)[0]["worker"].rsplit(":", 1)[1])
        os.kill(pid, signal.SIGSTOP)  # a stuck worker: its leases stop being renewed
        frozen.append(pid)
        events.append(f"scenario: worker pid {pid} on 127.0.0.4 frozen")
        cluster.add_node(node_ip_address="127.0.0.5", num_cpus=1,
                         dashboard_agent_listen_port=free_port("127.0.0.5"), **common)
        events.append("scenario: node 127.0.0.5 added")
        _wait(lambda: any("@127.0.0.5" in r["worker"] for r in _committed(out)) or not t.is_alive(), 300,
              "the added node never committed")
        b_pid = next(int(r["worker"].rsplit(":", 1)[1]) for r in _committed(out) if "@127.0.0.5" in r["worker"])
        os.kill(b_pid, signal.SIGSTOP)
        paused.append(b_pid)
        before = len(_committed(out))
        cluster.remove_node(node_a, allow_graceful=False)
        events.append(f"scenario: node 127.0.0.4 killed after {before} commits")
        _wait(lambda: any("lost" in e for e in list(events)) or not t.is_alive(), 180,
              "the driver never reported the killed node's worker lost")
        os.kill(b_pid, signal.SIGCONT)
        paused.remove(b_pid)
        t.join(timeout=600)
        if err:
            raise err[0]
        result = {"events": events, "killed_after": before,
                  "status": json.loads((out / "_progress.json").read_text()),
                  "workers": {r["unit_id"]: r["worker"] for r in _committed(out)}}
        Path(result_json).write_text(json.dumps(result))
    finally:
        for pid in paused:
            _signal(pid, signal.SIGCONT)
        ray.shutdown()
        cluster.shutdown()
        for pid in frozen:  # a stopped worker never sees its raylet die: end it (we started it)
            _signal(pid, signal.SIGKILL)


def _signal(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
