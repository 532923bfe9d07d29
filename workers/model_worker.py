"""The ModelWorker: one per GPU (or one per CPU node).  Leases units from the coordinator, runs the
forward pass with hooks, writes an immutable fragment and asks the coordinator to commit it."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import torch

from actlake.schemas.errors import SourceError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo, array_name
from actlake.schemas.job import JobSpec
from actlake.schemas.manifest import ModelInfo, TokenizerInfo
from actlake.store import layout
from actlake.store.dtypes import TORCH, storage_dtype_name
from actlake.store.fragment import write_fragment
from actlake.store.fs import open_store
from actlake.workers.capture import extract_images, extract_text, load_images
from actlake.workers.capture_vision import forward_inputs
from actlake.workers.hooks import Capture, check_row_sizes, hook_meta, resolve_hooks, row_layout
from actlake.store.weights import read_index, write_weights
from actlake.workers.models import load_model
from actlake.workers.pipeline import run_pipelined
from actlake.workers.plan import ShardUnit
from actlake.workers.sources import unit_documents
from actlake.workers.text import resolve_packing
from actlake.workers.units import ImageUnit, TextUnit, materialize_shard
from actlake.workers.weights_export import export_arrays, resolve_weights


class ModelWorker:
    def __init__(self, job: JobSpec, worker_id: str, storage_options: dict | None = None, threads: int | None = None):
        if threads:
            torch.set_num_threads(threads)
        self.job, self.worker_id = job, worker_id
        self.store = open_store(job.out, storage_options)
        self.infos: dict[str, HookInfo] | None = None

    def _load(self) -> None:
        """Load the model on first use (not in __init__, so load errors reach the caller intact)."""
        if not hasattr(self, "lm"):
            self.lm = load_model(self.job.model, self.job.revision, self.job.compute_dtype, self.job.device,
                                 self.job.is_vision)
            self.hooks = resolve_hooks(self.lm.model, self.job.hooks,
                                       key_len=None if self.job.is_vision else self.job.context_len)

    def describe(self, probe_image: str | None = None) -> tuple[dict[str, HookInfo], ModelInfo, TokenizerInfo | None]:
        """Resolve hook shapes with one tiny forward pass (before anything is written)."""
        self._load()
        with Capture(self.lm.model, self.hooks) as cap:
            if self.job.is_vision:
                if probe_image is None:
                    raise SourceError("image source is empty")
                px = load_images(self.lm, [probe_image]).to(self.lm.device, TORCH[self.job.compute_dtype])
                out = cap.run(**forward_inputs(self.lm.model, px))
            else:
                tok = self.lm.tokenizer_info
                fill = next((t for t in (tok.eos_token_id, tok.bos_token_id, 0) if t is not None), 0)
                ids = torch.full((1, 4), fill, dtype=torch.long, device=self.lm.device)
                out = cap.run(input_ids=ids, attention_mask=torch.ones_like(ids))
        infos = {}
        for h in self.hooks:
            shape, kind = row_layout(h, out[h.name], self.job.is_vision)
            infos[h.name] = HookInfo(
                name=h.name, module=h.module_name, io=h.io, array=array_name(h.name), shape=shape,
                dtype=self.job.dtype, storage_dtype=storage_dtype_name(self.job.dtype),
                codec=self.job.compression, layout=kind, **hook_meta(h),
            )
        check_row_sizes(infos, self.job.fragment_tokens, self.job.max_tokens)
        if self.job.weights:
            resolve_weights(self.lm.model, self.job.weights)  # bad names fail before anything is written
        self.infos = infos
        tok_info = self.lm.tokenizer_info
        if tok_info is not None:  # record how documents are packed (resolved per tokenizer)
            tok_info = tok_info.model_copy(update={"packing": resolve_packing(
                self.lm.tokenizer, self.job.prepend_bos, self.job.drop_tokens)})
        return infos, self.lm.info, tok_info

    def _tokenizer(self):
        if getattr(self, "_tok", None) is None:
            from transformers import AutoTokenizer

            from actlake.workers.models import resolve_model_dir

            self._tok = AutoTokenizer.from_pretrained(resolve_model_dir(self.job.model, self.job.revision)[0])
            self._tok.model_max_length = 1 << 40  # we cut contexts ourselves
        return self._tok

    def forward(self, unit: TextUnit | ImageUnit | ShardUnit) -> tuple[TextUnit | ImageUnit, dict, Any] | None:
        """Tokenize (shard units) and run one unit through the model: (unit, {hook: rows}, provenance);
        None for a shard unit whose slice holds no text (nothing to write or commit)."""
        if self.infos is None:
            raise RuntimeError("describe() must run before process()")
        if isinstance(unit, ShardUnit):
            unit = materialize_shard(unit, self.job, self._tokenizer())
            if unit is None:  # e.g. a jsonl byte range that starts no line (inside one long document)
                return None
        if isinstance(unit, TextUnit):
            arrays, prov = extract_text(self.lm, self.hooks, self.infos, unit, self.job)
        else:
            arrays, prov = extract_images(self.lm, self.hooks, self.infos, unit, self.job)
        return unit, arrays, prov

    def write(self, unit: TextUnit | ImageUnit, arrays: dict, prov: Any) -> FragmentRecord:
        """Write one unit's rows as a fresh attempt directory; nothing is committed here."""
        attempt = uuid.uuid4().hex[:12]
        path = f"{layout.FRAGMENTS}/{unit.unit_id}-{attempt}"
        written = write_fragment(self.store, path, arrays, prov, self.infos, self.job.chunk_rows,
                                 documents=unit_documents(unit), nonfinite=self.job.nonfinite)
        return FragmentRecord(
            unit_id=unit.unit_id, unit_index=unit.index, path=path, num_rows=prov.num_rows,
            num_items=unit.num_items, num_tokens=unit.num_tokens, source_range=unit.source_range, **written.record_fields(),
            attempt=attempt, worker=f"{self.worker_id}@{_node_ip()}:{os.getpid()}",
        )

    def process(self, unit: TextUnit | ImageUnit | ShardUnit) -> FragmentRecord | None:
        """Forward + write one unit (no pipelining); nothing is committed here.  None for an empty shard."""
        item = self.forward(unit)
        return None if item is None else self.write(*item)

    def run(self, coordinator: Any, lease_s: float = 600.0) -> int:
        """Lease → forward → (writer thread) write → commit, until the coordinator has no work.

        The writer runs in one background thread behind a queue of ``WRITE_QUEUE`` finished units:
        the next unit's forward overlaps the previous unit's encoding/upload, and a slow store
        blocks the forward loop instead of piling up host memory (backpressure).  A heartbeat
        thread renews this worker's leases every ``lease_s / 3`` s.  Returns units committed."""
        if self.job.weights and self.worker_id == "w0" and read_index(self.store) is None:
            arrays, meta = export_arrays(self.lm.model, self.job.weights)
            write_weights(self.store, arrays, meta, self.lm.info.model_dump(mode="json"))
        return run_pipelined(self, coordinator, lease_s)

    def start(self, coordinator: Any, probe_image: str | None = None, lease_s: float = 600.0) -> int:
        """describe() (if not done yet), then run(): one call, so a worker added mid-job needs no round trip."""
        if self.infos is None:
            self.describe(probe_image)
        return self.run(coordinator, lease_s)


def _node_ip() -> str:
    try:
        import ray

        if ray.is_initialized():
            return ray.util.get_node_ip_address()
    except Exception:  # noqa: BLE001 - only a label
        pass
    return socket.gethostname()
