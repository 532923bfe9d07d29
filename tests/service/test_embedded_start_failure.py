"""Issue 7 B17/B18: when the embedded Ray cannot start (seen on an overloaded machine: Ray raises a
plain ``Exception("The current node timed out during startup…")``), the user gets a ClusterError —
one ``error:`` line — instead of "unexpected Exception, please report it".  The failure is injected
into ``ray.init`` (a real timeout needs a machine overloaded on purpose), in a fresh interpreter so
that a Ray started by other tests of the session cannot hide the path."""
from __future__ import annotations

import subprocess
import sys

SCRIPT = r"""
import ray
from actlake.schemas.errors import ClusterError
from actlake.service.cluster import ensure_ray

def timed_out(*a, **kw):
    raise Exception("The current node timed out during startup. This could happen because ...")

ray.init = timed_out
try:
    ensure_ray()
except ClusterError as e:
    assert "timed out during startup" in str(e), e
    assert not ray.is_initialized()
    print("CLUSTER_ERROR")
"""


def test_embedded_start_timeout_is_a_cluster_error():
    r = subprocess.run([sys.executable, "-c", SCRIPT], capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout.strip().endswith("CLUSTER_ERROR"), (r.stdout[-500:], r.stderr[-2000:])
