"""Summaries and the printed report of bench/loader.py (medians, paired ratios, targets)."""
from __future__ import annotations

import hashlib
import os
import platform
import statistics
import subprocess
import sys
from pathlib import Path

import numpy as np

BENCH = Path(__file__).resolve().parent
ROOT = BENCH.parent
sys.path.insert(0, str(BENCH))

RAW = "raw sequential read (readinto)"
SHUF = "actlake shuffled"
SHUF1 = "actlake shuffled, torch 1 thread"
SHUF_E2 = "actlake shuffled, 2nd epoch in process"
SHUF_NOVERIFY = "actlake shuffled, verify_reads=False"
RAWS = ["raw sequential read (readinto)", "raw sequential read (np.fromfile)", "raw sequential read (f.read)"]
FASTEST = "fastest raw read"  # per mode, the best of RAWS (the bar of issue 7 D)
# --peers name -> (label, converter/reader script, extra read args).  saelens reads the cache in the
# store's dtype (same bytes as actlake); saelens-fp32 asks ActivationsStore for float32 (SAELens'
# default training dtype), converting while loading.
PEERS = {
    "saelens": ("SAELens cached ActivationsStore", "saelens", ["--dtype", "float16"]),
    "saelens-fp32": ("SAELens cached ActivationsStore, fp32 out", "saelens", ["--dtype", "float32"]),
    "mosaic": ("MosaicML streaming (py1e, 2 workers)", "mosaic", []),
}
# batches timed per peer after its first (--peer-batches overrides): SAELens runs at ~10^5 rows/s
# here, so 100 batches (~3 s); MosaicML at ~10^4 rows/s, so 20 (~6 s)
PEER_BATCHES = {"saelens": 100, "mosaic": 20}
PEER_LABELS = {v[0] for v in PEERS.values()}


def summarize(runs: list[dict]) -> dict:
    ok = [r for r in runs if "rows_per_s" in r and r["rows_per_s"]]
    if not ok:
        return {"error": runs[-1].get("error", "no result"), "runs": runs}
    med = lambda k: statistics.median([r[k] for r in ok if r.get(k) is not None])  # noqa: E731
    return {"rows_per_s": med("rows_per_s"), "mb_per_s": med("mb_per_s"), "first_batch_s": med("first_batch_s"),
            "seconds": med("seconds"), "rows": ok[0]["rows"], "peak_rss_mb": max(r["peak_rss_mb"] for r in ok),
            "min_rows_per_s": min(r["rows_per_s"] for r in ok), "max_rows_per_s": max(r["rows_per_s"] for r in ok),
            "cpu_s_per_gb": med("cpu_s_per_gb"), "user_s_per_gb": med("user_s_per_gb"),
            "sys_s_per_gb": med("sys_s_per_gb"), "loadavg_1m": med_load(ok), "runs": runs}


def med_load(runs: list[dict]) -> float:
    return statistics.median([x for r in runs for x in r.get("loadavg_1m", [])] or [float("nan")])


def summarize_profile(path: Path, top: int = 25) -> dict:
    """py-spy raw (collapsed) stacks -> share of samples by leaf frame and by frames anywhere."""
    leaf: dict[str, int] = {}
    incl: dict[str, int] = {}
    total = 0
    for line in path.read_text().splitlines():
        stack, _, cnt = line.rpartition(" ")
        if not stack or not cnt.isdigit():
            continue
        c = int(cnt)
        frames = [fr for fr in stack.split(";") if not fr.startswith("thread (")]
        if not frames or any("importlib._bootstrap" in fr for fr in frames):
            continue  # idle thread roots and import time are not the loader's
        total += c
        leaf[frames[-1]] = leaf.get(frames[-1], 0) + c
        for fr in set(frames):
            incl[fr] = incl.get(fr, 0) + c
    top_of = lambda d: [(k, v / total) for k, v in sorted(d.items(), key=lambda kv: -kv[1])[:top]]  # noqa: E731
    return {"file": str(path), "samples": total, "note": "import time excluded", "self": top_of(leaf), "inclusive": top_of(incl)}


def code_state() -> dict:
    """Which actlake code was measured: HEAD plus a digest of client/ and store/ as on disk (the
    loader may be edited between commits)."""
    def git(*a: str) -> str:
        try:
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=30).stdout.strip()
        except Exception:  # noqa: BLE001
            return ""
    h = hashlib.sha1()
    for folder in ("client", "store"):
        for f in sorted((ROOT / folder).glob("*.py")):
            h.update(f.name.encode() + f.read_bytes())
    return {"head": git("rev-parse", "--short", "HEAD"),
            "modified": [ln[3:] for ln in git("status", "--porcelain", "--", "client", "store").splitlines()],
            "client_store_sha1": h.hexdigest()[:12]}


def machine_info() -> dict:
    mem = ""
    try:
        mem = next(ln for ln in open("/proc/meminfo") if ln.startswith("MemTotal")).split(":")[1].strip()
    except Exception:  # noqa: BLE001
        pass
    cpu = ""
    try:
        cpu = next(ln for ln in open("/proc/cpuinfo") if ln.startswith("model name")).split(":")[1].strip()
    except Exception:  # noqa: BLE001
        pass
    import torch

    return {"cpus": os.cpu_count(), "cpu": cpu, "mem": mem, "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "kernel": platform.release()}


# ---- printing -------------------------------------------------------------------------------
def _f(x, fmt="{:,.0f}") -> str:
    return "—" if x is None else fmt.format(x)


def print_report(o: dict) -> None:
    s = o["store"]
    print(f"\n== actlake loader benchmark: {s['rows']:,} rows x {s['shape']} {s['dtype']} "
          f"({s['bytes'] / 1e9:.2f} GB, {s['fragments']} fragments, {s['contexts']:,} contexts of "
          f"~{s['context_len_mean']:.0f} tokens, chunk {s['chunk_rows']}), batch {o['batch_size']}")
    c = o["code"]
    print(f"actlake code: HEAD {c['head']}" + (f" + uncommitted {', '.join(c['modified'])}" if c["modified"] else "")
          + f" (client/+store/ sha1 {c['client_store_sha1']})")
    if c.get("changed_during_run"):
        print(f"WARNING: client/ or store/ changed during the run (now HEAD {c['changed_during_run']['head']}, "
              f"sha1 {c['changed_during_run']['client_store_sha1']}): figures mix two versions")
    print(f"machine: {o['machine']['cpus']} cpus, {o['machine']['mem']}; cold = {o['cold_method']} "
          f"{o['cold_note']}; raw/actlake: median of {o['repeat']} full epochs (interleaved); peers: "
          f"{o['peer_batches'] or PEER_BATCHES} batches after the first (steady rate)")
    hdr = (f"{'loader':42} {'warm rows/s':>12} {'MB/s':>6} {'cold rows/s':>12} {'MB/s':>6} {'1st batch w/c s':>15} "
           f"{'CPU s/GB w/c':>13} {'load w/c':>9} {'RSS MB':>7}")
    print("\n" + hdr + "\n" + "-" * len(hdr))
    for label, by in o["results"].items():
        cells, firsts, cpus, loads, rss = [], [], [], [], 0.0
        for mode in ("warm", "cold"):
            r = by.get(mode)
            if r is None or "error" in r:
                cells += ["n/a" if r else "", ""]
                firsts.append("")
                cpus.append("")
                loads.append("")
                continue
            rate = rate_of(o, label, mode)
            cells += [_f(rate), _f(rate * s["bytes"] / s["rows"] / 1e6)]
            firsts.append(_f(r.get("first_batch_s"), "{:.2f}"))
            cpus.append(_f(r.get("cpu_s_per_gb_with_workers") or r.get("cpu_s_per_gb"), "{:.2f}"))
            ld = r.get("loadavg_1m")
            loads.append(_f(statistics.median(ld) if isinstance(ld, list) else ld, "{:.1f}"))
            rss = max(rss, r.get("peak_rss_mb") or 0)
        print(f"{label:42} {cells[0]:>12} {cells[1]:>6} {cells[2]:>12} {cells[3]:>6} {'/'.join(firsts):>15} "
              f"{'/'.join(cpus):>13} {'/'.join(loads):>9} {rss:>7,.0f}")
    for label, by in o["results"].items():
        for mode, r in by.items():
            if "error" in r:
                print(f"  {label} [{mode}] unavailable: {r['error']}")
    split = []
    for label in (RAW, SHUF, SHUF1, SHUF_E2, "actlake unshuffled"):
        for mode in ("warm", "cold"):
            r = o["results"].get(label, {}).get(mode) or {}
            if r.get("user_s_per_gb") is not None:
                split.append(f"{label} [{mode}] {r['user_s_per_gb']:.2f}/{r['sys_s_per_gb']:.2f}")
    if split:
        print("CPU s/GB user/sys (sys = kernel page-cache copies and faults):\n  " + "\n  ".join(split))
    print("\nratios of rows/s (ratio of medians; [median of per-repeat pairs]):")
    for mode in ("warm", "cold"):
        raws = [(lab, rate_of(o, lab, mode)) for lab in RAWS]
        raws = [(lab, r) for lab, r in raws if r]
        if raws:
            best = max(r for _, r in raws)
            print(f"  raw variants [{mode}] over the fastest: "
                  + ", ".join(f"{lab.split('(')[-1].rstrip(')')} {r / best:.2f}x" for lab, r in raws))
    for mine in (SHUF, SHUF_NOVERIFY, SHUF1, SHUF_E2):
        for mode in ("warm", "cold"):
            a = rate_of(o, mine, mode)
            if a is None:
                continue
            parts = []
            refs = [(FASTEST, 0.8), (RAW, None), ("raw sequential read (np.fromfile)", None),
                    ("raw sequential read (f.read)", None), ("actlake unshuffled", None),
                    ("in-RAM perfect permutation (ref)", None)] + [(lab, 50) for lab, _, _ in PEERS.values()]
            for ref, tgt in refs:
                r = rate_of(o, ref, mode)
                if not r:
                    continue
                ok = "" if tgt is None else (" ok" if a / r >= tgt else f" MISS, target {tgt}x")
                pr = paired_ratio(o, mine, ref, mode)
                parts.append(f"{ref}: {a / r:.2f}x" + (f" [{pr:.2f}x]" if pr else "") + ok)
            print(f"  {mine} [{mode}] over\n      " + "\n      ".join(parts))
    if o["quality"]:
        print("\nshuffle quality (per batch of %d; 'perfect' = exact expectation for a uniform permutation; "
              "ratio = mean, min = worst batch, last10%% = mean of the epoch's last tenth):" % o["batch_size"])
        h = (f"{'loader':52} {'batches':>7} {'distinct ctx':>12} {'perfect':>9} {'ratio':>6} {'min':>6} "
             f"{'last10%':>7} {'same-ctx pairs':>14} {'perfect':>9} {'frags/batch':>11}")
        print(h + "\n" + "-" * len(h))
        for q in o["quality"]:
            if "error" in q:
                print(f"{q['loader']:52} {q['error']}")
                continue
            print(f"{q['loader']:52} {q['batches']:>7} {q['distinct_contexts']:>12,.1f} {q['distinct_contexts_perfect']:>9,.1f} "
                  f"{q['distinct_ratio']:>6.3f} {q.get('distinct_ratio_min', float('nan')):>6.3f} "
                  f"{q.get('distinct_ratio_last10', float('nan')):>7.3f} "
                  f"{q['same_context_pairs']:>14,.0f} {q['same_context_pairs_perfect']:>9,.1f} "
                  f"{q.get('fragments_per_batch', float('nan')):>11.1f}")
        for q in o["quality"]:
            if q.get("note"):
                print(f"  {q['loader']}: {q['note']}")
    if o.get("profile") and "self" in o["profile"]:
        print(f"\npy-spy, warm shuffled epoch ({o['profile']['samples']} samples, all threads, imports excluded), "
              "top self time:")
        for k, v in o["profile"]["self"][:15]:
            print(f"  {v * 100:5.1f}%  {k}")
    elif o.get("profile"):
        print(f"\nprofile failed: {o['profile'].get('error')}")
    if o["peer_versions"]:
        print("\npeers venv: " + ", ".join(f"{k} {v}" for k, v in o["peer_versions"].items()))


def _runs(o: dict, label: str, mode: str) -> list[dict]:
    if label == FASTEST:  # per repeat, the fastest raw variant of that repeat
        per = [o["results"].get(lab, {}).get(mode, {}).get("runs") or [] for lab in RAWS]
        per = [p for p in per if p]
        if not per or len({len(p) for p in per}) != 1:
            return []
        return [max(rs, key=lambda r: r.get("rows_per_s") or 0) for rs in zip(*per)]
    return o["results"].get(label, {}).get(mode, {}).get("runs") or []


def paired_ratio(o: dict, a: str, b: str, mode: str):
    ra = _runs(o, a, mode)
    rb = _runs(o, b, mode)
    if len(ra) < 2 or len(ra) != len(rb):
        return None
    pairs = [x["rows_per_s"] / y["rows_per_s"] for x, y in zip(ra, rb) if x.get("rows_per_s") and y.get("rows_per_s")]
    return statistics.median(pairs) if pairs else None


def rate_of(o: dict, label: str, mode: str):
    if label == FASTEST:
        rates = [rate_of(o, lab, mode) for lab in RAWS]
        return max([r for r in rates if r], default=None)
    r = o["results"].get(label, {}).get(mode)
    if not r or "error" in r:
        return None
    return r.get("steady_rows_per_s") if label in PEER_LABELS else r.get("rows_per_s")

