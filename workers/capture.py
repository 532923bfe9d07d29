"""Run one work unit through the model and turn hook outputs into row-aligned arrays + provenance."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import torch

from actlake.schemas.errors import ActlakeError, HookError, JobSpecError
from actlake.schemas.hooks import HookInfo
from actlake.schemas.job import JobSpec
from actlake.store.dtypes import TORCH, tensor_to_storage
from actlake.workers.hooks import Capture, ResolvedHook
from actlake.workers.models import LoadedModel
from actlake.workers.text import keep_mask
from actlake.workers.units import ImageUnit, TextUnit, row_permutation


class RowSink:
    """Pre-allocated per-hook outputs; rows land directly in their shuffled slots (no extra copy)."""

    def __init__(self, hooks: dict[str, HookInfo], dest: np.ndarray):
        self.hooks, self.dest, self.filled = hooks, dest, 0
        self.arrays: dict[str, np.ndarray] = {}

    def add(self, name: str, rows: torch.Tensor, start: int) -> None:
        info = self.hooks[name]
        rows = rows.reshape(rows.shape[0], *info.shape) if list(rows.shape[1:]) != info.shape else rows
        host = tensor_to_storage(rows.to(TORCH[info.dtype]).cpu(), info.dtype)
        if name not in self.arrays:
            self.arrays[name] = np.empty((len(self.dest), *info.shape), dtype=host.dtype)
        self.arrays[name][self.dest[start:start + len(host)]] = host


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
            keep = torch.from_numpy(np.stack([
                np.pad(keeps[b0 + i], (0, T - len(c.tokens))) for i, c in enumerate(batch)
            ])).to(lm.device)
            out = cap.run(input_ids=torch.from_numpy(ids).to(lm.device),
                          attention_mask=torch.from_numpy(mask).to(lm.device))
            n = int(keep.sum())
            for name, t in out.items():
                if t.dim() < 3 or t.shape[:2] != (len(batch), T):
                    raise HookError(
                        f"hook {name} gives shape {tuple(t.shape)}, not (batch, seq, ...): it cannot be stored as token rows")
                sink.add(name, t[keep], row)
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


def load_images(lm: LoadedModel, paths: list[str]) -> torch.Tensor:
    from PIL import Image

    imgs = []
    for p in paths:
        try:
            imgs.append(Image.open(p).convert("RGB"))
        except Exception as e:
            raise ActlakeError(f"cannot read image {p}: {e}") from None
    if lm.processor is not None:
        return lm.processor(images=imgs, return_tensors="pt")["pixel_values"]
    s = lm.image_size or 224
    arr = np.stack([np.asarray(im.resize((s, s), Image.BILINEAR), dtype=np.float32) for im in imgs])
    return (torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5


def _vision_rows(t: torch.Tensor, name: str, patch_size: int | None, image_size: int) -> tuple[torch.Tensor, dict]:
    """(B, T, D) token maps or (B, C, H, W) conv maps → (B, rows, D) plus per-row geometry."""
    if t.dim() == 4:
        B, C, H, W = t.shape
        rows = t.permute(0, 2, 3, 1).reshape(B, H * W, C)
        r, c = np.divmod(np.arange(H * W), W)
        return rows, {"patch_row": r, "patch_col": c, "token_type": ["patch"] * (H * W)}
    if t.dim() == 3:
        B, T, D = t.shape
        g = image_size // patch_size if patch_size else int(np.sqrt(T))
        prefix = T - g * g
        if prefix < 0:
            raise ActlakeError(f"hook {name}: {T} tokens cannot hold a {g}x{g} patch grid")
        r = np.concatenate([np.full(prefix, -1), np.arange(g * g) // g])
        c = np.concatenate([np.full(prefix, -1), np.arange(g * g) % g])
        types = (["cls"] if prefix else []) + ["register"] * max(prefix - 1, 0) + ["patch"] * (g * g)
        return t, {"patch_row": r, "patch_col": c, "token_type": types}
    raise ActlakeError(f"hook {name} gives shape {tuple(t.shape)}; vision hooks need (B,T,D) or (B,C,H,W)")


def extract_images(lm: LoadedModel, hooks: list[ResolvedHook], infos: dict[str, HookInfo], unit: ImageUnit,
                   job: JobSpec) -> tuple[dict[str, np.ndarray], pa.Table]:
    cfg = lm.model.config
    patch = getattr(cfg, "patch_size", None)
    patch = patch[0] if isinstance(patch, (list, tuple)) else patch
    sink: RowSink | None = None
    geometry = None
    row = 0
    with Capture(lm.model, hooks) as cap:
        for b0 in range(0, len(unit.images), job.batch_size):
            batch = unit.images[b0:b0 + job.batch_size]
            px = load_images(lm, [im.path for im in batch]).to(lm.device, TORCH[job.compute_dtype])
            out = cap.run(pixel_values=px)
            per_hook = {n: _vision_rows(t, n, patch, lm.image_size or 224) for n, t in out.items()}
            counts = {n: r.shape[1] for n, (r, _) in per_hook.items()}
            if len(set(counts.values())) > 1:
                raise ActlakeError(f"hooks give different rows per image ({counts}); rows must align: split the job")
            if sink is None:
                per_image = next(iter(counts.values()))
                geometry = next(iter(per_hook.values()))[1]
                n_rows = per_image * len(unit.images)
                dest = row_permutation(n_rows, job.seed, unit.index, job.shuffle_rows)
                sink = RowSink(infos, dest)
            for n, (r, _) in per_hook.items():
                sink.add(n, r.reshape(-1, r.shape[-1]), row)
            row += next(iter(counts.values())) * len(batch)
    assert sink is not None and geometry is not None
    per_image = len(geometry["token_type"])
    n_img = len(unit.images)
    ids = np.repeat(np.array([im.image_id for im in unit.images], dtype=np.int64), per_image)
    labels = [im.label for im in unit.images for _ in range(per_image)]
    cols = {
        "doc_id": ids, "image_id": ids, "context_id": ids,
        "context_pos": np.tile(np.arange(per_image, dtype=np.int32), n_img),
        "patch_row": np.tile(np.asarray(geometry["patch_row"], dtype=np.int16), n_img),
        "patch_col": np.tile(np.asarray(geometry["patch_col"], dtype=np.int16), n_img),
    }
    order = np.argsort(sink.dest)
    table = pa.table({k: pa.array(v[order]) for k, v in cols.items()})
    types = np.asarray(geometry["token_type"] * n_img, dtype=object)[order]
    table = table.append_column("token_type", pa.array(types, pa.string()).dictionary_encode())
    table = table.append_column("label", pa.array(np.asarray(labels, dtype=object)[order], pa.string()))
    return sink.arrays, table
