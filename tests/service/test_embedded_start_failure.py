"""Issue 7 B17/B18: when the embedded Ray cannot start (seen on an overloaded machine: Ray raises a
plain ``Exception("The current node timed out during startup…")``), the user gets a ClusterError —
one ``error:`` line — instead of "unexpected Exception, please report it".  The failure is injected
into ``ray.init`` (a real timeout needs a machine overloaded on purpose)."""
from __future__ import annotations

import pytest

from actlake.schemas.errors import ClusterError


def test_embedded_start_timeout_is_a_cluster_error(monkeypatch):
    import ray

    from actlake.service.cluster import ensure_ray

    if ray.is_initialized():
        pytest.skip("a Ray of this test session is already running in this process")

    def timed_out(*a, **kw):
        raise Exception("The current node timed out during startup. This could happen because ...")

    monkeypatch.setattr(ray, "init", timed_out)
    with pytest.raises(ClusterError, match="timed out during startup"):
        ensure_ray()
    assert not ray.is_initialized()
