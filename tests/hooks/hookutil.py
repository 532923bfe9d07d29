"""Tiny config-built models saved as HF dirs, and a Ray-free run of the vision/text capture path."""
from __future__ import annotations

from pathlib import Path

import torch


def save_vision(model, d: Path, size: int, processor: str = "vit") -> Path:
    """Save ``model`` with an image processor resizing to ``size`` (which may differ from the config's)."""
    from transformers import CLIPImageProcessor, ConvNextImageProcessor, ViTImageProcessor

    model.eval().save_pretrained(d)
    if processor == "convnext":
        ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0).save_pretrained(d)
    elif processor == "clip":
        CLIPImageProcessor(size={"shortest_edge": size}, crop_size={"height": size, "width": size}).save_pretrained(d)
    else:
        ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(d)
    return d


def run_vision_unit(model_dir: Path, hooks: list[str], folder: Path, out: Path, batch_size: int = 2):
    """describe() + extract_images() of one unit holding every image of ``folder`` (no store written).

    Returns (worker, arrays {hook: np.ndarray in provenance order}, provenance table, pixel tensor)."""
    from actlake.schemas.job import JobSpec
    from actlake.workers.capture_vision import load_images
    from actlake.workers.model_worker import ModelWorker
    from actlake.workers.sources import list_images
    from actlake.workers.units import ImageUnit

    job = JobSpec(model=str(model_dir), hooks=hooks, data={"type": "images", "path": str(folder)}, out=str(out),
                  dtype="float32", batch_size=batch_size, shuffle_rows=False, progress=False, device="cpu")
    items = list_images(job.data)
    w = ModelWorker(job, "test")
    w.describe(items[0].path)
    from actlake.workers.capture_vision import extract_images

    arrays, prov = extract_images(w.lm, w.hooks, w.infos, ImageUnit(0, items), job)
    px = load_images(w.lm, [im.path for im in items])
    return w, arrays, prov, px


def zero_positions(model) -> None:
    """Zero every position-embedding parameter, so embedding rows are exactly their token's own vector."""
    with torch.no_grad():
        for n, p in model.named_parameters():
            if "position" in n:
                p.zero_()


def direct(model, names: list[str], attentions: bool = True, **inputs) -> dict[str, torch.Tensor]:
    """Plain torch hooks: ``name`` → first output, ``name:input`` → first input; plus attentions
    (``output_attentions=True``, eager attention)."""
    mods, got, hs = dict(model.named_modules()), {}, []
    for n in names:
        m, _, io = n.partition(":")
        if io == "input":
            hs.append(mods[m].register_forward_pre_hook(lambda mod, a, n=n: got.__setitem__(n, a[0])))
        else:
            hs.append(mods[m].register_forward_hook(
                lambda mod, a, o, n=n: got.__setitem__(n, o[0] if isinstance(o, tuple) else o)))
    if attentions:
        model.set_attn_implementation("eager")
    with torch.no_grad():
        res = model(**inputs, **({"output_attentions": True} if attentions else {}))
    for h in hs:
        h.remove()
    got["attentions"] = res.attentions if attentions else None
    got["result"] = res
    return got


def capture(model, hooks: list[str], key_len=None, **inputs) -> dict[str, torch.Tensor]:
    """actlake's Capture of ``hooks`` (second forward: the first, uncut, counts module calls)."""
    from actlake.schemas.hooks import parse_hooks
    from actlake.workers.hooks import Capture, resolve_hooks

    with Capture(model, resolve_hooks(model, parse_hooks(hooks), key_len=key_len)) as cap:
        cap.run(**inputs)
        return cap.run(**inputs)
