"""The job coordinator: a work queue with expiring leases and the single committer of the job.

One instance per job (a named Ray actor ``actlake-coord-<job hash>`` in namespace ``actlake`` when a
driver runs it, see service/driver.py).  Invariants:

- a unit is *queued*, *leased* (to one worker, until a deadline) or *committed*; committed units come
  from the commit log, so a new coordinator over the same store (a resubmitted job) skips them;
- a lease expires ``lease_s`` after it was granted or last renewed; an expired lease, or every lease
  of a worker reported dead (:meth:`release`), returns its unit to the front of the queue;
- only this object calls ``CommitLog.commit``; the log refuses a unit id it already holds, so a slow
  worker finishing a unit that was re-leased and committed elsewhere changes nothing (exactly once);
- the coordinator holds small records only: stream-plan units carry their contexts (jobs capped by
  ``max_tokens``), shard-plan units are a few fields each (workers tokenize), image units a path list.

Units are handed out in plan order as workers free up (no static split: fast nodes do more)."""
from __future__ import annotations

import json
import time
from collections import deque
from dataclasses import dataclass
from typing import Any, Iterator

from actlake.schemas.errors import JobSpecError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.job import JobSpec
from actlake.store.commitlog import CommitLog
from actlake.store.fs import open_store
from actlake.workers.plan import LineNumbers, ShardUnit, plan_shards
from actlake.workers.sources import iter_docs, list_images
from actlake.workers.text import pack_contexts
from actlake.workers.units import ImageUnit, TextUnit

WAIT = "wait"  # lease() reply: nothing queued now, but leased units may still come back
PROGRESS_FILE = "_progress.json"  # written at the dataset root; not part of the format
DEFAULT_LEASE_S = 600.0
Unit = TextUnit | ImageUnit | ShardUnit


def generate_units(job: JobSpec, tokenizer) -> Iterator[Unit]:
    """All units of the job in order (pure function of the job spec and the source)."""
    if job.is_vision:
        images = list_images(job.data)
        if job.max_images:
            images = images[: job.max_images]
        rows_per_image = 200  # approximate; only sets the unit size
        per_unit = max(1, job.fragment_tokens // rows_per_image)
        for i, start in enumerate(range(0, len(images), per_unit)):
            yield ImageUnit(i, images[start:start + per_unit])
        return
    if job.plan == "shards":
        yield from plan_shards(job.data, job.fragment_tokens)
        return
    per_unit = max(1, job.fragment_tokens // job.context_len)
    buf, first, index = [], 0, 0
    for ctx in pack_contexts(iter_docs(job.data), tokenizer, job.context_len, job.prepend_bos, job.max_tokens):
        buf.append(ctx)
        if len(buf) == per_unit:
            yield TextUnit(index, first, buf)
            first, index, buf = first + len(buf), index + 1, []
    if buf:
        yield TextUnit(index, first, buf)


def check_plan(job: JobSpec) -> None:
    """Raises JobSpecError for a job the planner cannot honour (call before anything starts)."""
    if job.plan == "shards" and job.max_tokens is not None and not job.is_vision:
        raise JobSpecError("plan: shards tokenizes per shard and cannot honour max_tokens; "
                           "use plan: stream, or limit data.max_docs / the files")


def _tokens(unit: Unit) -> int:
    return unit.est_tokens if isinstance(unit, ShardUnit) else unit.num_tokens


@dataclass
class Lease:
    unit: Unit
    worker: str
    node: str
    deadline: float


class Coordinator:
    """Work queue + leases + the one committer of a job.

    Args:
        job: the job spec.
        storage_options: fsspec options of the dataset URI.
        lease_s: seconds a lease lives without renewal (workers renew while they process).
    Raises:
        JobSpecError: ``plan: shards`` with ``max_tokens`` (a token budget needs the global stream).
    """

    def __init__(self, job: JobSpec, storage_options: dict | None = None, lease_s: float = DEFAULT_LEASE_S):
        check_plan(job)
        self.job, self.lease_s = job, float(lease_s)
        self.store = open_store(job.out, storage_options)
        self.log = CommitLog(self.store)
        self.snap = self.log.builder()
        tokenizer = None
        if not job.is_vision and job.plan == "stream":
            from transformers import AutoTokenizer

            from actlake.workers.models import resolve_model_dir

            tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(job.model, job.revision)[0])
            tokenizer.model_max_length = 1 << 40  # we cut contexts ourselves; silence length warnings
        self._units = generate_units(job, tokenizer)
        self._queue: deque[Unit] = deque()
        self._leases: dict[str, Lease] = {}  # unit id -> lease
        self._lines = LineNumbers()  # first line numbers of jsonl ranges, counted once per file
        self._exhausted = False
        self._planned_tokens = 0  # tokens (or estimates) of units planned so far
        self._planned_units = 0
        self.tokens_before = sum(f.num_tokens for f in self.snap.fragments)
        self.tokens_done = 0
        self.rows_done = 0
        self.units_skipped = 0
        self.empty: set[str] = set()  # units whose slice holds no text (done; nothing to commit)
        self.duplicates_refused = 0
        self.expired = 0
        self.errors: list[str] = []
        self.workers: dict[str, str] = {}  # worker id -> node
        self.t0 = time.time()
        self._last_progress_write = 0.0
        if job.plan == "shards" or job.is_vision:
            self._fill(all_units=True)  # plans are cheap: know the totals (and the ETA) up front

    # -- queue ---------------------------------------------------------------------------------------
    def _fill(self, all_units: bool = False) -> None:
        while not self._exhausted and (all_units or not self._queue):
            try:
                unit = next(self._units)
            except StopIteration:
                self._exhausted = True
                return
            self._planned_units += 1
            self._planned_tokens += _tokens(unit)
            if unit.unit_id in self.snap.unit_ids:
                self.units_skipped += 1
                continue
            self._queue.append(unit)

    def _reclaim(self, now: float) -> None:
        for uid in [u for u, lease in self._leases.items() if lease.deadline < now]:
            self._queue.appendleft(self._leases.pop(uid).unit)
            self.expired += 1

    def register(self, worker_id: str, node: str) -> None:
        """A worker started on ``node`` (for per-node counts in the status)."""
        self.workers[worker_id] = node

    def lease(self, worker_id: str, node: str = "") -> Unit | str | None:
        """Next unit for ``worker_id``; ``WAIT`` if none is queued but some are leased; None when done."""
        now = time.time()
        self._reclaim(now)
        if node:
            self.workers[worker_id] = node
        self._fill()
        while self._queue:
            unit = self._queue.popleft()
            if unit.unit_id in self.snap.unit_ids or unit.unit_id in self.empty:  # done by a slow holder
                continue                                                                # of an expired lease
            if isinstance(unit, ShardUnit):
                unit = self._lines.number(unit)
            self._leases[unit.unit_id] = Lease(unit, worker_id, node or self.workers.get(worker_id, ""),
                                               now + self.lease_s)
            return unit
        return WAIT if self._leases else None

    def renew(self, worker_id: str) -> int:
        """Extend every lease of ``worker_id`` (a heartbeat).  Returns how many it holds."""
        deadline = time.time() + self.lease_s
        n = 0
        for lease in self._leases.values():
            if lease.worker == worker_id:
                lease.deadline, n = deadline, n + 1
        return n

    def commit(self, worker_id: str, record: FragmentRecord) -> bool:
        """Record a written fragment in the log unless its unit is already there.  True if committed."""
        lease = self._leases.get(record.unit_id)
        if lease is not None and lease.worker == worker_id:
            del self._leases[record.unit_id]
        ok, self.snap = self.log.commit(record, self.snap)
        if ok:
            self.tokens_done += record.num_tokens
            self.rows_done += record.num_rows
        else:
            self.duplicates_refused += 1
        self._maybe_write_progress()
        return ok

    def done_empty(self, worker_id: str, unit_id: str) -> None:
        """A unit whose source slice holds no text (a jsonl byte range inside one long line, blank
        lines, a row group of null texts): done, with nothing to commit.  Not logged: a resumed job
        reads the slice again and finds it empty again."""
        self._leases.pop(unit_id, None)
        self.empty.add(unit_id)
        self._maybe_write_progress()

    def fail(self, worker_id: str, unit_id: str, error: str) -> None:
        """A worker could not process a unit (bad input): record the error, drop the lease."""
        self._leases.pop(unit_id, None)
        self.errors.append(f"{unit_id} on {worker_id}: {error}")

    def release(self, worker_id: str) -> int:
        """A worker died: its leased units go back to the front of the queue.  Returns how many."""
        mine = [uid for uid, lease in self._leases.items() if lease.worker == worker_id]
        for uid in mine:
            self._queue.appendleft(self._leases.pop(uid).unit)
        self.workers.pop(worker_id, None)
        return len(mine)

    def release_all(self) -> int:
        """A new driver took over (the old one and its workers are gone): requeue every lease."""
        n = sum(self.release(w) for w in {lease.worker for lease in self._leases.values()})
        self.workers.clear()
        return n

    # -- status --------------------------------------------------------------------------------------
    def progress(self) -> dict[str, Any]:
        """Counters of this coordinator's life (see :meth:`status` for the user-facing view)."""
        return {
            "tokens_done": self.tokens_done,
            "tokens_before": self.tokens_before,
            "rows_done": self.rows_done,
            "fragments": len(self.snap.fragments),
            "rows_total": self.snap.num_rows,
            "units_skipped": self.units_skipped,
            "duplicates_refused": self.duplicates_refused,
            "leased": len(self._leases),
            "expired": self.expired,
            "exhausted": self._exhausted and not self._queue and not self._leases,
        }

    def status(self) -> dict[str, Any]:
        """tokens done/total, tokens/s, units done/leased/left, workers per node, errors, ETA (s)."""
        elapsed = max(time.time() - self.t0, 1e-9)
        done = self.tokens_before + self.tokens_done
        total = self.job.max_tokens if (self.job.plan == "stream" and not self.job.is_vision) else None
        if total is None and self._exhausted:
            total = max(self._planned_tokens, done)
        rate = self.tokens_done / elapsed
        per_node: dict[str, int] = {}
        for node in self.workers.values():
            per_node[node] = per_node.get(node, 0) + 1
        left = len(self._queue) + (0 if self._exhausted else -1)
        return {
            "unit": "images" if self.job.is_vision else "tokens",
            "tokens_done": done, "tokens_total": total, "tokens_per_s": rate,
            "units_done": len(self.snap.fragments) + len(self.empty), "units_empty": len(self.empty),
            "units_leased": len(self._leases),
            "units_left": left if left >= 0 else None, "workers_per_node": per_node,
            "errors": list(self.errors[-20:]), "lease_expirations": self.expired,
            "duplicates_refused": self.duplicates_refused,
            "eta_s": (total - done) / rate if total is not None and rate > 0 else None,
            "rows": self.snap.num_rows, "updated_at": time.time(),
            "state": "done" if self.progress()["exhausted"] else "running",
        }

    def _maybe_write_progress(self, force: bool = False) -> None:
        now = time.time()
        if force or now - self._last_progress_write > 2.0:
            self._last_progress_write = now
            self.store.write_bytes(PROGRESS_FILE, json.dumps(self.status()).encode())

    def finish(self) -> dict:
        """Checkpoint the log and write the final status; the driver then marks the manifest complete."""
        self.log.write_checkpoint(self.snap)
        self._maybe_write_progress(force=True)
        self.log.close()
        return {"num_rows": self.snap.num_rows, "num_fragments": len(self.snap.fragments)}
