"""The worker's lease → forward → write → commit loop, with the write overlapped with the next forward.

Threads (one state object each, explicit stop event):

- main thread: leases a unit, runs the forward pass (``worker.forward``) and puts the result on a
  bounded queue of ``WRITE_QUEUE`` entries; ``put`` blocks while the writer is behind (backpressure:
  host memory holds at most ``WRITE_QUEUE + 1`` finished units, the GPU never waits for more than
  one write);
- writer thread: encodes and uploads the fragment (``worker.write``), then asks the coordinator to
  commit it; the first exception stops the loop and is re-raised in the main thread;
- heartbeat thread: renews this worker's leases every ``lease_s / 3`` seconds, so a unit held by a
  live worker never expires while one held by a dead or stuck one does.

Exit: the coordinator answers None (job done) → a sentinel drains the writer → threads joined."""
from __future__ import annotations

import queue
import threading
import time
from typing import Any

WRITE_QUEUE = 1
WAIT_POLL_S = 0.5


def run_pipelined(worker: Any, coordinator: Any, lease_s: float = 600.0) -> int:
    """Run ``worker`` (a ModelWorker) against ``coordinator`` (an actor handle) until no work is left.

    Returns:
        the number of units this worker committed.
    Raises:
        whatever ``forward``/``write`` raised (e.g. SourceError); the coordinator's lease of the
        failing unit is dropped with the error recorded (``coordinator.fail``)."""
    import ray

    from actlake.service.coordinator import WAIT

    node = worker_node()
    ray.get(coordinator.register.remote(worker.worker_id, node))
    q: queue.Queue = queue.Queue(maxsize=WRITE_QUEUE)
    stop = threading.Event()
    failure: list[BaseException] = []
    committed = [0]

    def writer() -> None:
        while True:
            item = q.get()
            if item is None:
                return
            if failure:
                continue  # drain after an error so put() never blocks forever
            try:
                record = worker.write(*item)
                if ray.get(coordinator.commit.remote(worker.worker_id, record)):
                    committed[0] += 1
            except BaseException as e:  # noqa: BLE001 - re-raised in the main thread
                failure.append(e)
                stop.set()

    def heartbeat() -> None:
        while not stop.wait(max(lease_s / 3.0, 0.05)):
            coordinator.renew.remote(worker.worker_id)

    threads = [threading.Thread(target=writer, name="actlake-writer", daemon=True),
               threading.Thread(target=heartbeat, name="actlake-heartbeat", daemon=True)]
    for t in threads:
        t.start()
    try:
        while not stop.is_set():
            unit = ray.get(coordinator.lease.remote(worker.worker_id, node))
            if unit is None:
                break
            if isinstance(unit, str) and unit == WAIT:
                time.sleep(WAIT_POLL_S)
                continue
            try:
                item = worker.forward(unit)
            except BaseException as e:
                coordinator.fail.remote(worker.worker_id, unit.unit_id, f"{type(e).__name__}: {e}")
                raise
            if item is None:  # a shard slice without text: done, nothing to write
                ray.get(coordinator.done_empty.remote(worker.worker_id, unit.unit_id))
                continue
            q.put(item)
    finally:
        q.put(None)
        threads[0].join()
        stop.set()
        threads[1].join(timeout=5)
    if failure:
        raise failure[0]
    return committed[0]


def worker_node() -> str:
    """This process's Ray node IP (a label for per-node counts)."""
    import ray

    return ray.util.get_node_ip_address()
