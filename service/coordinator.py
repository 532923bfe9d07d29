"""The job coordinator: owns the work queue and the commit log, so each unit commits exactly once.

Units are generated lazily and deterministically from the source; units already in the log (a
resumed job) are skipped, units leased to a worker that died are handed out again.  A duplicate
commit of the same unit (a retry that raced a slow worker) is refused by the log."""
from __future__ import annotations

from collections import deque
from typing import Iterator

from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.job import JobSpec
from actlake.store.commitlog import CommitLog
from actlake.store.fs import open_store
from actlake.workers.sources import iter_docs, list_images
from actlake.workers.text import pack_contexts
from actlake.workers.units import ImageUnit, TextUnit


def generate_units(job: JobSpec, tokenizer) -> Iterator[TextUnit | ImageUnit]:
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
    per_unit = max(1, job.fragment_tokens // job.context_len)
    buf, first, index = [], 0, 0
    for ctx in pack_contexts(iter_docs(job.data), tokenizer, job.context_len, job.prepend_bos, job.max_tokens):
        buf.append(ctx)
        if len(buf) == per_unit:
            yield TextUnit(index, first, buf)
            first, index, buf = first + len(buf), index + 1, []
    if buf:
        yield TextUnit(index, first, buf)


class Coordinator:
    def __init__(self, job: JobSpec, storage_options: dict | None = None):
        self.job = job
        self.store = open_store(job.out, storage_options)
        self.log = CommitLog(self.store)
        self.snap = self.log.builder()
        tokenizer = None
        if not job.is_vision:
            from transformers import AutoTokenizer

            from actlake.workers.models import resolve_model_dir

            tokenizer = AutoTokenizer.from_pretrained(resolve_model_dir(job.model, job.revision)[0])
            tokenizer.model_max_length = 1 << 40  # we cut contexts ourselves; silence length warnings
        self._units = generate_units(job, tokenizer)
        self._retry: deque = deque()
        self._leases: dict[str, dict[str, TextUnit | ImageUnit]] = {}
        self._exhausted = False
        self.tokens_before = sum(f.num_tokens for f in self.snap.fragments)
        self.tokens_done = 0
        self.rows_done = 0
        self.units_skipped = 0
        self.duplicates_refused = 0

    def lease(self, worker_id: str) -> TextUnit | ImageUnit | None:
        unit = None
        while unit is None:
            if self._retry:
                unit = self._retry.popleft()
            elif self._exhausted:
                return None
            else:
                try:
                    unit = next(self._units)
                except StopIteration:
                    self._exhausted = True
                    return None
            if unit.unit_id in self.snap.unit_ids:
                self.units_skipped += 1
                unit = None
        self._leases.setdefault(worker_id, {})[unit.unit_id] = unit
        return unit

    def commit(self, worker_id: str, record: FragmentRecord) -> bool:
        self._leases.get(worker_id, {}).pop(record.unit_id, None)
        ok, self.snap = self.log.commit(record, self.snap)
        if ok:
            self.tokens_done += record.num_tokens
            self.rows_done += record.num_rows
        else:
            self.duplicates_refused += 1
        return ok

    def release(self, worker_id: str) -> int:
        """A worker died: hand its leased units to someone else."""
        units = self._leases.pop(worker_id, {})
        self._retry.extend(units.values())
        return len(units)

    def progress(self) -> dict:
        return {
            "tokens_done": self.tokens_done,
            "tokens_before": self.tokens_before,
            "rows_done": self.rows_done,
            "fragments": len(self.snap.fragments),
            "rows_total": self.snap.num_rows,
            "units_skipped": self.units_skipped,
            "duplicates_refused": self.duplicates_refused,
            "leased": sum(len(v) for v in self._leases.values()),
            "exhausted": self._exhausted and not self._retry,
        }

    def finish(self) -> dict:
        """Checkpoint the log; the runner then marks the manifest complete."""
        self.log.write_checkpoint(self.snap)
        self.log.close()
        return {"num_rows": self.snap.num_rows, "num_fragments": len(self.snap.fragments)}
