"""One extraction job on loopback Ray clusters of 1, 2 and 4 worker nodes: tokens/s and scaling.

    .venv/bin/python bench/cluster.py [--nodes 1,2,4] [--files 24] [--chars 20000] [--model smollm2-135m]
                                      [--cpus-per-node 1] [--hooks model.layers.9]

Each run starts a ``ray.cluster_utils.Cluster`` (head 127.0.0.3 without CPUs: driver and coordinator;
worker nodes on 127.0.0.4, .5, …, ``--cpus-per-node`` CPUs each), runs the same ``plan: shards`` job
(``--files`` stdlib modules, first ``--chars`` characters each, one unit per file) with the elastic
driver into a fresh store, and reports:

- wall: submit → manifest complete (includes worker start and model load on every node);
- steady tokens/s: tokens committed between the first and the last commit / that time span;
- scaling efficiency: steady tokens/s at N nodes / (N × the 1-node figure).

On a machine with C cores, N × cpus-per-node > C oversubscribes the cores: the efficiency then
measures the machine, not actlake (this is said next to the figures).  On a GPU machine pass
``--cpus-per-node`` ≥ 4 and nodes get the GPUs Ray detects (one worker per GPU)."""
from __future__ import annotations

import argparse
import json
import os
import sysconfig
import tempfile
import time
from pathlib import Path

os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")


def _free_port(ip: str) -> int:
    import socket

    with socket.socket() as s:
        s.bind((ip, 0))
        return s.getsockname()[1]


def make_corpus(d: Path, files: int, chars: int) -> Path:
    root = Path(sysconfig.get_paths()["stdlib"])
    mods = sorted(p for p in root.glob("*.py") if p.stat().st_size > chars)[:files]
    d.mkdir(parents=True, exist_ok=True)
    for i, p in enumerate(mods):
        (d / f"{i:03d}_{p.stem}.txt").write_text(p.read_text(errors="replace")[:chars])
    return d


def _commit_times(out: Path) -> list[tuple[float, int]]:
    import datetime as dt

    rows = []
    for p in sorted((out / "_commits").glob("*.json")):
        if p.stem.isdigit():
            c = json.loads(p.read_text())
            rows.append((dt.datetime.fromisoformat(c["committed_at"]).timestamp(), c["fragment"]["num_tokens"]))
    return sorted(rows)


def run_once(n_nodes: int, job_fields: dict, cpus: int) -> dict:
    import ray
    from ray.cluster_utils import Cluster

    from actlake.schemas.job import parse_job
    from actlake.service.driver import run_cluster_job

    common = {"include_dashboard": False, "object_store_memory": 100 * 1024 * 1024}
    cluster = Cluster(initialize_head=True, head_node_args={
        "node_ip_address": "127.0.0.3", "num_cpus": 0, "gcs_server_port": _free_port("127.0.0.3"),
        "dashboard_agent_listen_port": _free_port("127.0.0.3"), **common})
    try:
        for i in range(n_nodes):
            ip = f"127.0.0.{4 + i}"
            cluster.add_node(node_ip_address=ip, num_cpus=cpus, dashboard_agent_listen_port=_free_port(ip), **common)
        ray.init(address=cluster.address, namespace="actlake", logging_level="WARNING")
        job = parse_job(job_fields)
        t0 = time.time()
        run_cluster_job(job, discover_s=1.0, log=lambda s: None)
        wall = time.time() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
    commits = _commit_times(Path(job.out))
    tokens = sum(t for _, t in commits)
    span = commits[-1][0] - commits[0][0] if len(commits) > 1 else float("nan")
    steady = sum(t for _, t in commits[1:]) / span if span and span > 0 else float("nan")
    return {"nodes": n_nodes, "tokens": tokens, "wall_s": wall, "tokens_per_s_wall": tokens / wall,
            "tokens_per_s_steady": steady}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--nodes", default="1,2,4")
    ap.add_argument("--files", type=int, default=24)
    ap.add_argument("--chars", type=int, default=20000)
    ap.add_argument("--model", default="smollm2-135m")
    ap.add_argument("--hooks", default="model.layers.9")
    ap.add_argument("--cpus-per-node", type=int, default=1)
    ap.add_argument("--context-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=8)
    a = ap.parse_args()
    # Ray's "current cluster" file and sockets stay in a private temp dir
    tmp = Path(tempfile.mkdtemp(prefix="acb", dir="/tmp"))
    os.environ["RAY_TMPDIR"] = str(tmp)
    corpus = make_corpus(tmp / "corpus", a.files, a.chars)
    print(f"job: {a.model}, hooks {a.hooks}, {a.files} files x {a.chars} chars, plan shards, "
          f"{a.cpus_per_node} CPU(s) per node, machine has {os.cpu_count()} cores")
    print(f"{'nodes':>5} {'tokens':>8} {'wall s':>8} {'tok/s wall':>11} {'tok/s steady':>13} {'efficiency':>11}")
    base = None
    for n in [int(x) for x in a.nodes.split(",")]:
        fields = {"model": a.model, "hooks": a.hooks.split(","), "data": str(corpus), "out": str(tmp / f"out-{n}"),
                  "plan": "shards", "context_len": a.context_len, "batch_size": a.batch_size,
                  "fragment_tokens": 1 << 20, "progress": False}
        r = run_once(n, fields, a.cpus_per_node)
        base = base or r["tokens_per_s_steady"]
        eff = r["tokens_per_s_steady"] / (n * base)
        print(f"{n:>5} {r['tokens']:>8,} {r['wall_s']:>8.1f} {r['tokens_per_s_wall']:>11,.0f} "
              f"{r['tokens_per_s_steady']:>13,.0f} {eff:>11.2f}", flush=True)
    if max(int(x) for x in a.nodes.split(",")) * a.cpus_per_node > (os.cpu_count() or 1):
        print(f"note: more node CPUs than the machine's {os.cpu_count()} cores: efficiency is bounded by the machine")


if __name__ == "__main__":
    main()
