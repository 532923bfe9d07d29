"""Run one work unit through the model and turn hook outputs into row-aligned arrays + provenance."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from actlake.schemas.errors import HookError, JobSpecError
from actlake.schemas.hooks import HookInfo
from actlake.schemas.job import JobSpec
from actlake.store.dtypes import TORCH, tensor_to_storage
from actlake.workers.hooks import Capture, ResolvedHook
from actlake.workers.models import LoadedModel
from actlake.workers.text import keep_mask
from actlake.workers.token_sampling import sample_keep
from actlake.workers.units import TextUnit, row_permutation


class RowSink:
    """Pre-allocated per-hook outputs; rows land directly in their shuffled slots.

    CPU rows are cast and scattered as they come.  CUDA rows are cast on the device and copied
    with ``non_blocking=True`` into one pinned (page-locked) host staging tensor per hook, in
    natural row order, so the next batch's forward is queued without waiting for the copy; the
    first read of :attr:`arrays` waits once (a CUDA event recorded after the last copy) and
    scatters the staged rows to their shuffled slots.

    Args:
        hooks: hook name -> HookInfo (row shape, logical dtype).
        dest: int64 (rows,), the shuffled slot of each row in natural order.
    """

    def __init__(self, hooks: dict[str, HookInfo], dest: np.ndarray):
        self.hooks, self.dest, self.filled = hooks, dest, 0
        self._arrays: dict[str, np.ndarray] = {}
        self._staged: dict[str, torch.Tensor] = {}  # hook -> pinned (rows, *shape) in the storage dtype
        self._event = None

    def add(self, name: str, rows: torch.Tensor, start: int) -> None:
        """Rows ``start .. start + len(rows)`` (natural order) of hook ``name``; shape (n, *row shape)."""
        info = self.hooks[name]
        rows = rows.reshape(rows.shape[0], *info.shape) if list(rows.shape[1:]) != info.shape else rows
        rows = rows.to(TORCH[info.dtype])
        if rows.is_cuda:
            if name not in self._staged:
                self._staged[name] = torch.empty((len(self.dest), *info.shape), dtype=rows.dtype, pin_memory=True)
            self._staged[name][start:start + len(rows)].copy_(rows, non_blocking=True)
            self._event = torch.cuda.Event()
            self._event.record()
            return
        self._place(name, tensor_to_storage(rows.cpu(), info.dtype), self.dest[start:start + len(rows)])

    def _place(self, name: str, host: np.ndarray, slots: np.ndarray) -> None:
        if name not in self._arrays:
            self._arrays[name] = np.empty((len(self.dest), *self.hooks[name].shape), dtype=host.dtype)
        self._arrays[name][slots] = host

    @property
    def arrays(self) -> dict[str, np.ndarray]:
        """hook -> numpy rows in shuffled order (storage dtype); waits for pending device copies."""
        if self._staged:
            self._event.synchronize()
            for name, staged in self._staged.items():
                self._place(name, tensor_to_storage(staged, self.hooks[name].dtype), self.dest)
            self._staged.clear()
        return self._arrays


def extract_text(lm: LoadedModel, hooks: list[ResolvedHook], infos: dict[str, HookInfo], unit: TextUnit,
                 job: JobSpec) -> tuple[dict[str, np.ndarray], pa.Table]:
    tok = lm.tokenizer_info
    eos = tok.eos_token_id if tok else None
    pad = (tok.pad_token_id if tok and tok.pad_token_id is not None else eos) or 0
    # provenance in natural order, then the permutation of rows; only tokens the packer inserted
    # (BOS/[CLS], EOS/[SEP]) may be dropped, never a document token (see workers/text.py)
    keeps, cols = [], {k: [] for k in ("doc_id", "context_id", "context_pos", "doc_pos", "token_id")}
    for ci, ctx in enumerate(unit.contexts):
        k = keep_mask(ctx, job.drop_tokens)
        k = sample_keep(k, job.tokens_per_context, job.seed, unit.first_context + ci)
        keeps.append(k)
        cols["doc_id"].append(ctx.doc_id[k])
        cols["context_id"].append(np.full(int(k.sum()), unit.first_context + ci, dtype=np.int64))
        cols["context_pos"].append(np.nonzero(k)[0].astype(np.int32))
        cols["doc_pos"].append(ctx.doc_pos[k])
        cols["token_id"].append(ctx.tokens[k])
    n_rows = int(sum(int(k.sum()) for k in keeps))
    if n_rows == 0:
        raise JobSpecError(f"unit {unit.unit_id} produced no rows (all tokens dropped: check drop_tokens)")
    dest = row_permutation(n_rows, job.seed, unit.index, job.shuffle_rows)
    sink = RowSink(infos, dest)
    row = 0
    with Capture(lm.model, hooks) as cap:
        for b0 in range(0, len(unit.contexts), job.batch_size):
            batch = unit.contexts[b0:b0 + job.batch_size]
            T = max(len(c.tokens) for c in batch)
            ids = np.full((len(batch), T), pad, dtype=np.int64)
            mask = np.zeros((len(batch), T), dtype=np.int64)
            for i, c in enumerate(batch):
                ids[i, :len(c.tokens)], mask[i, :len(c.tokens)] = c.tokens, 1
            # kept (context, position) pairs as flat indices, computed on the host: selecting rows
            # with them (index_select) needs no device sync, unlike a boolean mask
            flat = np.flatnonzero(np.stack([np.pad(keeps[b0 + i], (0, T - len(c.tokens)))
                                            for i, c in enumerate(batch)]))
            keep = torch.from_numpy(flat).to(lm.device)
            out = cap.run(input_ids=torch.from_numpy(ids).to(lm.device),
                          attention_mask=torch.from_numpy(mask).to(lm.device))
            n = len(flat)
            for name, t in out.items():
                if t.dim() < 3 or t.shape[:2] != (len(batch), T):
                    raise HookError(
                        f"hook {name} gives shape {tuple(t.shape)}, not (batch, seq, ...): it cannot be stored as token rows")
                sink.add(name, t.reshape(len(batch) * T, *t.shape[2:]).index_select(0, keep), row)
            row += n
    order = np.argsort(dest)
    table = pa.table({k: pa.array(np.concatenate(v)[order]) for k, v in cols.items()})
    if job.data.label_field:
        names: dict[int, str] = {}
        for ctx in unit.contexts:
            names.update(ctx.labels or {})
        docs, which = np.unique(np.concatenate(cols["doc_id"])[order], return_inverse=True)
        per_doc = pa.array([names.get(int(d)) for d in docs], pa.string())
        table = table.append_column("label", per_doc.take(pa.array(which.reshape(-1))))
    return sink.arrays, table


# Vision lives in capture_vision (re-exported here for existing imports).
from actlake.workers.capture_vision import extract_images, load_images  # noqa: E402,F401
