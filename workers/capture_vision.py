"""Vision capture: images → the model's own processor → forward with hooks → rows + provenance.

The token layout comes from the actual forward, never from ``config.image_size``: the patch grid is
the processed pixel tensor's ``H // patch, W // patch``; the tokens before the patches are
``T - gh·gw`` and are typed in the order the ViT families put them — ``cls``, ``distillation``
(a model with a ``distillation_token`` parameter, DeiT), ``register`` (``config.num_register_tokens``,
DINOv2-with-registers).  Conv maps ``(B, C, H, W)`` become H·W rows of width C with their row/col.
"""
from __future__ import annotations

import inspect

import numpy as np
import pyarrow as pa
import torch

from actlake.schemas.errors import HookError, SourceError
from actlake.schemas.hooks import HookInfo
from actlake.schemas.job import JobSpec
from actlake.store.dtypes import TORCH
from actlake.workers.hooks import Capture, ResolvedHook
from actlake.workers.models import LoadedModel
from actlake.workers.units import ImageUnit, row_permutation


def _vision_config(cfg):
    return getattr(cfg, "vision_config", None) or cfg


def patch_size(model: torch.nn.Module) -> int | None:
    """The model's patch size (ViT families) or None (conv models)."""
    p = getattr(_vision_config(model.config), "patch_size", None)
    return int(p[0] if isinstance(p, (list, tuple)) else p) if p else None


def special_tokens(model: torch.nn.Module) -> tuple[int, int]:
    """(distillation tokens, register tokens) the model inserts, detected from its parameters and config."""
    dist = sum(1 for n, _ in model.named_parameters() if n.endswith("distillation_token"))
    reg = int(getattr(_vision_config(model.config), "num_register_tokens", 0) or 0)
    return dist, reg


def token_layout(model: torch.nn.Module, n_tokens: int, grid: tuple[int, int], name: str = "") -> dict:
    """Per-token geometry of a ``(B, n_tokens, D)`` map over a ``grid = (gh, gw)`` patch grid.

    Returns ``{"patch_row", "patch_col": int arrays (-1 off-grid), "token_type": list[str]}``.
    Raises HookError when the tokens cannot hold the grid plus the model's special tokens."""
    gh, gw = grid
    prefix = n_tokens - gh * gw
    dist, reg = special_tokens(model)
    cls = prefix - dist - reg
    if prefix == 0:
        types: list[str] = []
    elif cls in (0, 1) and prefix >= 0:
        types = ["cls"] * cls + ["distillation"] * dist + ["register"] * reg
    else:
        raise HookError(f"hook {name}: {n_tokens} tokens do not hold a {gh}x{gw} patch grid plus "
                        f"{dist} distillation and {reg} register tokens")
    r = np.concatenate([np.full(prefix, -1), np.repeat(np.arange(gh), gw)])
    c = np.concatenate([np.full(prefix, -1), np.tile(np.arange(gw), gh)])
    return {"patch_row": r, "patch_col": c, "token_type": types + ["patch"] * (gh * gw)}


def vision_rows(t: torch.Tensor, info: HookInfo, model: torch.nn.Module, pixel_hw: tuple[int, int]
                ) -> tuple[torch.Tensor, dict]:
    """(B, T, ...) token maps or (B, C, H, W) conv maps → (B, rows, ...) plus per-row geometry."""
    if info.layout == "spatial":
        B, C, H, W = t.shape
        rows = t.permute(0, 2, 3, 1).reshape(B, H * W, C)
        return rows, {"patch_row": np.repeat(np.arange(H), W), "patch_col": np.tile(np.arange(W), H),
                      "token_type": ["patch"] * (H * W)}
    p = patch_size(model)
    if t.dim() < 3 or p is None:
        raise HookError(f"hook {info.name} gives shape {tuple(t.shape)}; vision hooks need (B,T,...) from a "
                        "patch model or (B,C,H,W) conv maps")
    grid = (pixel_hw[0] // p, pixel_hw[1] // p)
    return t, token_layout(model, int(t.shape[1]), grid, info.name)


def load_images(lm: LoadedModel, paths: list[str]) -> torch.Tensor:
    """Decode images and run the model's own image processor → ``(B, 3, H, W)`` float pixels.
    Undecodable images raise SourceError naming the file."""
    from PIL import Image

    from actlake.workers.image_bytes import open_image

    imgs = []
    for p in paths:
        try:
            imgs.append(open_image(p).convert("RGB"))
        except Exception as e:
            raise SourceError(f"cannot decode image {p}: {e}") from None
    if lm.processor is not None:
        return lm.processor(images=imgs, return_tensors="pt")["pixel_values"]
    s = lm.image_size or 224
    arr = np.stack([np.asarray(im.resize((s, s), Image.BILINEAR), dtype=np.float32) for im in imgs])
    return (torch.from_numpy(arr).permute(0, 3, 1, 2) / 255.0 - 0.5) / 0.5


def forward_inputs(model: torch.nn.Module, px: torch.Tensor) -> dict:
    """``pixel_values`` plus ``interpolate_pos_encoding=True`` where the model takes it and the
    processor's size differs from ``config.image_size`` (ViT/DeiT/CLIP refuse other sizes otherwise)."""
    kw: dict = {"pixel_values": px}
    size = getattr(_vision_config(model.config), "image_size", None)
    size = tuple(size) if isinstance(size, (list, tuple)) else (size, size)
    if size != tuple(px.shape[-2:]) and "interpolate_pos_encoding" in inspect.signature(model.forward).parameters:
        kw["interpolate_pos_encoding"] = True
    return kw


def extract_images(lm: LoadedModel, hooks: list[ResolvedHook], infos: dict[str, HookInfo], unit: ImageUnit,
                   job: JobSpec) -> tuple[dict[str, np.ndarray], pa.Table]:
    """One image unit → ({hook: rows}, provenance with image_id, patch_row/col, token_type, label)."""
    from actlake.workers.capture import RowSink

    sink: RowSink | None = None
    geometry = None
    row = 0
    with Capture(lm.model, hooks) as cap:
        for b0 in range(0, len(unit.images), job.batch_size):
            batch = unit.images[b0:b0 + job.batch_size]
            px = load_images(lm, [im.path for im in batch]).to(lm.device, TORCH[job.compute_dtype])
            out = cap.run(**forward_inputs(lm.model, px))
            hw = (int(px.shape[-2]), int(px.shape[-1]))
            per_hook = {n: vision_rows(t, infos[n], lm.model, hw) for n, t in out.items()}
            counts = {n: r.shape[1] for n, (r, _) in per_hook.items()}
            if len(set(counts.values())) > 1:
                raise HookError(f"hooks give different rows per image ({counts}); rows must align: split the job")
            if sink is None:
                per_image = next(iter(counts.values()))
                geometry = next(iter(per_hook.values()))[1]
                dest = row_permutation(per_image * len(unit.images), job.seed, unit.index, job.shuffle_rows)
                sink = RowSink(infos, dest)
            for n, (r, _) in per_hook.items():
                sink.add(n, r.reshape(-1, *r.shape[2:]), row)
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
