"""Load a model offline: the SmolLM2 package, a local HF directory, or a cached HF hub id."""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from actlake.schemas.errors import JobSpecError, ModelError
from actlake.schemas.manifest import ModelInfo, TokenizerInfo
from actlake.store.dtypes import TORCH
from actlake.workers import smollm2

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@dataclass
class LoadedModel:
    model: torch.nn.Module
    tokenizer: Any | None
    processor: Any | None
    info: ModelInfo
    tokenizer_info: TokenizerInfo | None
    device: torch.device
    image_size: int | None = None


def resolve_model_dir(model: str, revision: str | None = None) -> tuple[Path, str]:
    """Return (local directory, canonical id).  Never downloads."""
    if model in smollm2.ALIASES:
        return smollm2.converted_dir(), smollm2.MODEL_ID
    p = Path(model).expanduser()
    if p.is_dir():
        if not (p / "config.json").exists():
            raise ModelError(f"model directory {p} has no config.json")
        return p.resolve(), str(p.resolve())
    if p.exists() or model.startswith((".", "/", "~")):
        raise ModelError(f"model path not found or not a directory: {model}")
    try:
        from huggingface_hub import snapshot_download

        d = snapshot_download(model, revision=revision, local_files_only=True)
    except Exception:
        raise ModelError(
            f"model {model!r} is neither a local directory nor in the offline HF cache "
            "(actlake never downloads weights; use smollm2-135m or a local path)"
        ) from None
    return Path(d), model


def pick_device(device: str) -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        return torch.device(device)
    except RuntimeError as e:
        raise JobSpecError(f"bad device {device!r}: {e}") from None


def _sha256_files(files: list[Path]) -> str:
    h = hashlib.sha256()
    for f in sorted(files):
        h.update(f.name.encode())
        with open(f, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 22), b""):
                h.update(block)
    return h.hexdigest()


def load_model(model: str, revision: str | None, compute_dtype: str, device: str, vision: bool) -> LoadedModel:
    import transformers

    path, model_id = resolve_model_dir(model, revision)
    cfg_text = (path / "config.json").read_text()
    try:
        cfg = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:
        raise ModelError(f"cannot read model config in {path}: {e}") from None
    arch = (cfg.architectures or [None])[0]
    if getattr(cfg, "is_encoder_decoder", False):
        from actlake.service.preflight import encoder_decoder_message

        raise ModelError(encoder_decoder_message(model, getattr(cfg, "model_type", None) or str(arch)))
    cls = getattr(transformers, arch, None) if arch else None
    if cls is None:
        cls = transformers.AutoModel
    tower = tower_class(cfg, arch, "Vision" if vision else "Text")
    if tower is not None:
        cls = tower  # CLIPModel → CLIPVisionModel for images, CLIPTextModel for text: one tower runs
    dev = pick_device(device)
    quiet = tower is not None  # its load report would list every weight of the other tower as unexpected
    level = transformers.logging.get_verbosity()
    if quiet:
        transformers.logging.set_verbosity_error()
    try:
        net = cls.from_pretrained(path, dtype=TORCH[compute_dtype])
    except Exception as e:
        raise ModelError(f"cannot load model from {path}: {type(e).__name__}: {e}") from None
    finally:
        if quiet:
            transformers.logging.set_verbosity(level)
    net.eval().to(dev)
    keep_all_patches(net)
    if tower is not None:  # hooks may use the full model's module paths
        net.actlake_tower_prefix = "vision_model." if vision else "text_model."
    weights = [p for p in path.iterdir() if p.suffix in (".safetensors", ".bin")]
    info = ModelInfo(
        id=model_id,
        revision=revision,
        architecture=(f"{type(net).__name__} ({'vision' if vision else 'text'} tower of {arch})" if tower is not None else
                      arch or type(net).__name__),
        config_sha256=hashlib.sha256(json.dumps(json.loads(cfg_text), sort_keys=True).encode()).hexdigest(),
        weights_sha256=_sha256_files(weights) if weights else None,
        kind="vision" if vision else "text",
    )
    tok = proc = tok_info = None
    image_size = None
    if vision:
        image_size = _image_size(cfg)
        try:
            proc = transformers.AutoImageProcessor.from_pretrained(path)
        except Exception:
            proc = None  # fall back to resize + [-1, 1] normalisation at image_size
    else:
        try:
            tok = transformers.AutoTokenizer.from_pretrained(path)
        except Exception as e:
            raise ModelError(f"model {model} has no usable tokenizer in {path}: {e}") from None
        # a name that loads offline: the HF id when it came from the HF cache, else the local dir
        from_cache = model_id == model and not Path(model).expanduser().exists() and model not in smollm2.ALIASES
        tok_info = TokenizerInfo(
            name=model_id if from_cache else str(path), source_id=model_id, vocab_size=len(tok),
            bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id, pad_token_id=tok.pad_token_id,
            cls_token_id=getattr(tok, "cls_token_id", None), sep_token_id=getattr(tok, "sep_token_id", None),
        )
    return LoadedModel(net, tok, proc, info, tok_info, dev, image_size)


def keep_all_patches(net: Any) -> int:
    """Turn off random patch masking (ViT-MAE's ``random_masking``): every patch is kept, in the
    image's own row-major order, so each stored patch row is the patch its provenance names and a
    forward is deterministic.  MAE pre-training (He et al. 2021, "Masked Autoencoders Are Scalable
    Vision Learners") keeps a random 25 % of the patches in a random order on every forward, which
    would make ``patch_row``/``patch_col`` wrong and the values change from run to run.

    Sets ``mask_ratio`` to 0 on the masking module's config and feeds the masking a fixed,
    increasing noise (the order it sorts patches by).  Returns how many modules were changed."""
    import torch

    n = 0
    for m in net.modules():
        masking, cfg = getattr(m, "random_masking", None), getattr(m, "config", None)
        if not callable(masking) or not hasattr(cfg, "mask_ratio"):
            continue
        cfg.mask_ratio = 0.0

        def in_order(sequence: torch.Tensor, noise: torch.Tensor | None = None, _masking=masking):
            b, t = sequence.shape[:2]
            return _masking(sequence, torch.arange(t, device=sequence.device, dtype=torch.float32).expand(b, t))

        m.random_masking = in_order
        n += 1
    return n


def tower_class(cfg: Any, arch: str | None, which: str = "Vision") -> Any:
    """The ``which`` ("Vision" or "Text") tower class of a dual encoder (``CLIPModel`` →
    ``CLIPVisionModel`` / ``CLIPTextModel``, ``SiglipModel`` → ``SiglipVisionModel`` / …: a config with both
    ``vision_config`` and ``text_config``), or None.  Loading it from the full checkpoint keeps that
    tower's weights only; its module paths are the ones under ``vision_model.`` / ``text_model.`` of
    the full model, and hook aliases (``blocks.L…``) name its blocks."""
    import transformers

    if not arch or not arch.endswith("Model") or getattr(cfg, "vision_config", None) is None \
            or getattr(cfg, "text_config", None) is None:
        return None
    return getattr(transformers, f"{arch[: -len('Model')]}{which}Model", None)


def _image_size(cfg: Any) -> int:
    cfg = getattr(cfg, "vision_config", None) or cfg
    size = getattr(cfg, "image_size", None) or 224
    return int(size[0] if isinstance(size, (list, tuple)) else size)


def is_vision_model(model: str, revision: str | None = None) -> bool:
    """Whether a model takes images: its config has an image size or channel count, or it is a dual
    encoder with a vision tower (``CLIPModel``, ``SiglipModel``: see ``tower_class``); given text, a
    dual encoder runs its text tower instead."""
    import transformers

    path, _ = resolve_model_dir(model, revision)
    try:
        cfg = transformers.AutoConfig.from_pretrained(path)
    except Exception as e:
        raise ModelError(f"cannot read model config in {path}: {e}") from None
    arch = (getattr(cfg, "architectures", None) or [None])[0]
    return (getattr(cfg, "image_size", None) is not None or getattr(cfg, "num_channels", None) is not None
            or tower_class(cfg, arch) is not None)  # a dual encoder (CLIP, SigLIP): its vision tower
