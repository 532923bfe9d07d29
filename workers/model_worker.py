"""The ModelWorker: one per GPU (or one per CPU node).  Leases units from the coordinator, runs the
forward pass with hooks, writes an immutable fragment and asks the coordinator to commit it."""
from __future__ import annotations

import os
import socket
import uuid
from typing import Any

import torch

from actlake.schemas.errors import ActlakeError
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
from actlake.workers.sources import unit_documents
from actlake.workers.text import resolve_packing
from actlake.workers.weights_export import export_arrays, resolve_weights
from actlake.workers.units import ImageUnit, TextUnit


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
                    raise ActlakeError("image source is empty")
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

    def process(self, unit: TextUnit | ImageUnit) -> FragmentRecord:
        """Forward + write one unit as a fresh attempt directory; nothing is committed here."""
        return self._write(unit, *self._forward(unit))

    def _forward(self, unit: TextUnit | ImageUnit):
        if self.infos is None:
            raise RuntimeError("describe() must run before process()")
        if isinstance(unit, TextUnit):
            return extract_text(self.lm, self.hooks, self.infos, unit, self.job)
        return extract_images(self.lm, self.hooks, self.infos, unit, self.job)

    def _write(self, unit: TextUnit | ImageUnit, arrays, prov) -> FragmentRecord:
        attempt = uuid.uuid4().hex[:12]
        path = f"{layout.FRAGMENTS}/{unit.unit_id}-{attempt}"
        written = write_fragment(self.store, path, arrays, prov, self.infos, self.job.chunk_rows,
                                 documents=unit_documents(unit), nonfinite=self.job.nonfinite)
        return FragmentRecord(
            unit_id=unit.unit_id, unit_index=unit.index, path=path, num_rows=prov.num_rows,
            num_items=unit.num_items, num_tokens=unit.num_tokens, source_range=unit.source_range, **written.record_fields(),
            attempt=attempt, worker=f"{self.worker_id}@{socket.gethostname()}:{os.getpid()}",
        )

    def run(self, coordinator: Any) -> int:
        """Lease → forward → upload → commit until the coordinator has no work.  Returns units processed.

        The upload of unit k runs on one background thread while unit k+1's forward pass runs, so
        object-store latency hides behind compute; at most one unit waits for its upload (memory:
        one unit's arrays), and a unit is committed only after its upload finished."""
        import ray
        from concurrent.futures import ThreadPoolExecutor

        if self.job.weights and self.worker_id == "w0" and read_index(self.store) is None:
            arrays, meta = export_arrays(self.lm.model, self.job.weights)
            write_weights(self.store, arrays, meta, self.lm.info.model_dump(mode="json"))
        n, pending = 0, None
        with ThreadPoolExecutor(1, thread_name_prefix="actlake-upload") as uploader:
            while True:
                unit = ray.get(coordinator.lease.remote(self.worker_id))
                if unit is not None:
                    arrays, prov = self._forward(unit)
                if pending is not None:
                    ray.get(coordinator.commit.remote(self.worker_id, pending.result()))
                    n += 1
                    pending = None
                if unit is None:
                    return n
                pending = uploader.submit(self._write, unit, arrays, prov)
