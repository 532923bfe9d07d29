"""Connecting to Ray: an embedded single-node cluster on a loopback address, or a real cluster."""
from __future__ import annotations

import os

EMBEDDED_NODE_IP = "127.0.0.2"


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> bool:
    """Initialise Ray once.  Returns True if this call started an embedded cluster.

    Embedded: binds to 127.0.0.2 (Ray rewrites 127.0.0.1 to the machine's public address) with token
    auth disabled, so nothing leaves the machine.  ``address`` (``ray://`` or ``HOST:PORT`` or
    ``auto``) joins an existing cluster, which keeps whatever auth mode it was started with."""
    import ray

    if ray.is_initialized():
        return False
    if address:
        ray.init(address=address, logging_level="WARNING", log_to_driver=True)
        return False
    os.environ.setdefault("RAY_AUTH_MODE", "disabled")
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    ray.init(
        _node_ip_address=os.environ.get("ACTLAKE_RAY_NODE_IP", EMBEDDED_NODE_IP),
        num_cpus=num_cpus or os.cpu_count(),
        include_dashboard=False,
        logging_level="WARNING",
        log_to_driver=True,
        configure_logging=True,
    )
    return True
