"""Connecting to Ray: a private embedded single-node cluster on a loopback address, or a real cluster."""
from __future__ import annotations

import logging
import os
import time

from actlake.schemas.errors import ClusterError

EMBEDDED_NODE_IP = "127.0.0.2"


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray once in this process.  Returns True if this call started an embedded cluster.

    Embedded (``address`` None): always a **new private** cluster (``ray.init(address="local")``), even
    when ``RAY_ADDRESS`` is set or another cluster runs (or ran: Ray leaves its address file,
    ``$RAY_TMPDIR/ray_current_cluster``, behind) on this machine; a user's cluster is never joined,
    stopped or reconfigured, and several jobs on one machine each get their own.  It binds to
    127.0.0.2 (Ray rewrites 127.0.0.1 to the machine's public address; override with
    ``ACTLAKE_RAY_NODE_IP``) with token auth disabled, so nothing leaves the machine.

    ``address`` (``ray://…``, ``HOST:PORT`` or ``auto``) joins an existing cluster, which keeps whatever
    auth mode it was started with.

    Raises:
        ClusterError: the cluster at ``address`` cannot be reached, or the embedded one cannot start.
    """
    import ray

    if ray.is_initialized():
        return False
    if address:
        try:
            ray.init(address=address, logging_level=logging.WARNING, log_to_driver=True)
        except (ConnectionError, RuntimeError, ValueError, TimeoutError) as e:
            raise ClusterError(f"cannot connect to the Ray cluster at {address!r}: {_first_line(e)}") from None
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        ray.init(
            address="local",
            _node_ip_address=os.environ.get("ACTLAKE_RAY_NODE_IP", EMBEDDED_NODE_IP),
            num_cpus=num_cpus or os.cpu_count(),
            include_dashboard=False,
            logging_level=logging.WARNING,
            log_to_driver=True,
            configure_logging=True,
        )
    except Exception as e:  # Ray raises a plain Exception when its node does not start in time (overload)
        ray.shutdown()  # nothing half-started left behind
        raise ClusterError(f"cannot start the embedded Ray cluster: {_first_line(e)}") from None
    return True


def _first_line(e: BaseException) -> str:
    return (str(e).strip().splitlines() or [type(e).__name__])[0]


def stop_actors(actors: list, timeout_s: float = 10.0) -> None:
    """Kill Ray actors this driver started and wait (up to ``timeout_s``) until each is dead, so none
    writes to the store afterwards."""
    import ray
    from ray.exceptions import GetTimeoutError, RayActorError

    for a in actors:
        ray.kill(a, no_restart=True)
    deadline = time.time() + timeout_s
    for a in actors:
        while time.time() < deadline:  # ray.kill is asynchronous: a ping may still be answered
            try:
                ray.get(a.__ray_ready__.remote(), timeout=max(0.1, deadline - time.time()))
            except (RayActorError, GetTimeoutError):
                break  # dead (or unresponsive past the deadline)
            except Exception:  # noqa: BLE001 - any other failure of a dying actor: it is gone
                break
            time.sleep(0.05)
