"""Everything about an extraction job that can be checked before Ray starts or anything is written.

``preflight`` runs in the driver, reads only configs, file listings and the output location, and
raises a typed ActlakeError (one line, naming the limit and what to do) for every input it can refuse:
the output location, the source, the model's modality and position limit, and the device.  Checks that
need the model itself (hook names, hook shapes) run in the first worker's ``describe`` — still before
the manifest is written."""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from actlake.schemas.errors import JobSpecError, ModelError, SourceError, StoreLocationError
from actlake.schemas.job import JobSpec
from actlake.schemas.manifest import Manifest
from actlake.store import layout
from actlake.store.commitlog import CommitLog
from actlake.store.fs import StoreFS
from actlake.store.manifest_io import read_manifest
from actlake.workers.sources import iter_docs, list_images

# Config keys that bound the number of token positions, per family (first one present wins).
POSITION_KEYS = ("max_position_embeddings", "n_positions", "n_ctx", "max_sequence_length", "seq_length",
                 "max_seq_len", "max_seq_length")
# Families whose learned position table starts at ``pad_token_id + 1`` (RoBERTa's padding offset).
PADDING_OFFSET_FAMILIES = frozenset({"roberta", "xlm-roberta", "camembert", "xmod", "roberta-prelayernorm",
                                     "data2vec-text", "longformer", "mpnet"})
# Families with relative/bucketed positions: no hard limit.
UNBOUNDED_FAMILIES = frozenset({"t5", "mt5", "umt5", "longt5", "xlnet", "transfo-xl", "reformer"})
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "vocab.txt", "vocab.json", "spiece.model",
                   "tokenizer.model", "sentencepiece.bpe.model", "merges.txt")
VISION_KEYS = ("image_size", "vision_config", "num_channels", "patch_size")


@dataclass
class Preflight:
    """What preflight learned.

    Attributes:
        existing: the manifest of a resumable dataset at ``job.out`` (same job identity, same location),
            or None when the location is fresh or reusable (an earlier attempt that committed nothing).
        committed: fragments already committed at ``job.out`` (0 when ``existing`` is None).
        replace: the location holds an actlake dataset that this job replaces (no commits, or --overwrite).
        probe_image: the first image of a vision source (for the hook-shape probe), else None.
    """

    existing: Manifest | None
    committed: int
    replace: bool
    probe_image: str | None


def identity(job: JobSpec) -> dict[str, Any]:
    """The fields that define the dataset's content, without the output location (a dataset may be
    resumed through any spelling of its path, or after it was copied or moved)."""
    ident = job.identity()
    ident.pop("out", None)
    return ident


def diff(requested: dict, stored: dict, prefix: str = "") -> list[str]:
    """Human-readable differences between two nested dicts, one entry per differing leaf."""
    out = []
    for k in sorted(set(requested) | set(stored)):
        a, b = requested.get(k), stored.get(k)
        if a != b:
            if isinstance(a, dict) and isinstance(b, dict):
                out += diff(a, b, f"{prefix}{k}.")
            else:
                out.append(f"{prefix}{k} (stored {b!r}, requested {a!r})")
    return out


def check_location(job: JobSpec, store: StoreFS, overwrite: bool = False) -> tuple[Manifest | None, int, bool]:
    """Decide what to do with ``job.out``.  Returns (resumable manifest or None, commits, replace).

    A location is usable when it is absent or empty, holds this job's dataset (resume), holds an
    actlake job dataset with no commit (a failed attempt: replaced), or ``overwrite`` is set and it
    holds any actlake job dataset (deleted once the model is known to load).

    Raises:
        StoreLocationError: the location holds something else, or another job's committed dataset.
        StoreDamagedError: the location's commit log cannot be read.
    """
    if not store.exists(layout.MANIFEST):
        if store.exists("") and store.listdir(""):
            raise StoreLocationError(f"{job.out} exists and is not an actlake dataset; "
                                     "choose an empty or new location (it is never deleted)")
        return None, 0, False
    existing = read_manifest(store)
    if existing.job is None:
        raise StoreLocationError(f"{job.out} holds a dataset not written by an extraction job; "
                                 "choose a new location (it is never deleted)")
    committed = len(CommitLog(store).snapshot().fragments)
    if overwrite:
        return None, committed, True
    diffs = diff(identity(job), identity(existing.job))
    if not diffs:
        return existing, committed, False
    if committed == 0:  # an attempt that failed before its first commit: its location is free again
        return None, 0, True
    raise StoreLocationError(
        f"{job.out} already holds {committed} committed fragment(s) of a different job spec: {'; '.join(diffs)}. "
        "Re-run with the stored settings to resume, choose another --out, or pass --overwrite to delete it")


def check_source(job: JobSpec) -> str | None:
    """Refuse an empty source; return the probe image of a vision source.

    Raises:
        SourceError: no documents / no images.
    """
    if job.is_vision:
        images = list_images(job.data)
        if not images:
            raise SourceError(f"source is empty: no images under {job.data.path}")
        return images[0].path
    if next(iter_docs(job.data), None) is None:
        raise SourceError(f"source is empty: no text documents in {job.data.path or job.data.type}")
    return None


def model_config(job: JobSpec) -> tuple[Path, dict[str, Any]]:
    """(model directory, parsed config.json) without loading weights (never downloads).

    Raises:
        ModelError: no such model offline, or an unreadable config.
    """
    from actlake.workers.models import resolve_model_dir

    path, _ = resolve_model_dir(job.model, job.revision)
    try:
        cfg = json.loads((path / "config.json").read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ModelError(f"cannot read the model config {path / 'config.json'}: {e}") from None
    if not isinstance(cfg, dict):
        raise ModelError(f"model config {path / 'config.json'} is not a JSON object")
    return path, cfg


def position_limit(cfg: dict[str, Any]) -> tuple[int, str] | None:
    """The most token positions one forward pass accepts, and the config key it came from.

    Looks at the top-level config, then ``text_config`` (multimodal wrappers).  RoBERTa-style learned
    tables lose ``pad_token_id + 1`` slots to the padding offset.  None for families with relative
    positions or configs that state no limit."""
    for c in (cfg, cfg.get("text_config") or {}):
        if c.get("model_type") in UNBOUNDED_FAMILIES:
            return None
        for key in POSITION_KEYS:
            v = c.get(key)
            if isinstance(v, int) and v > 0:
                if c.get("model_type") in PADDING_OFFSET_FAMILIES:
                    v -= int(c.get("pad_token_id") or 0) + 1
                return v, key
    return None


def is_vision_model(path: Path, cfg: dict[str, Any]) -> bool:
    """A model that takes images: an image size / vision sub-config, or an image processor file."""
    return any(k in cfg for k in VISION_KEYS) or (path / "preprocessor_config.json").exists()


def has_tokenizer(path: Path, cfg: dict[str, Any]) -> bool:
    """A model directory with tokenizer files (GGUF conversions always have them)."""
    return any((path / f).exists() for f in TOKENIZER_FILES)


def encoder_decoder_message(model: str, name: str) -> str:
    """The one-line refusal of an encoder-decoder model (T5, BART, ...)."""
    return (f"{model} ({name}) is an encoder-decoder model: actlake runs one stack over packed contexts "
            "and has no decoder inputs to give it; save its encoder alone (e.g. T5EncoderModel.from_pretrained"
            "(...).save_pretrained(DIR), with the tokenizer) and extract from DIR")


def check_model(job: JobSpec) -> None:
    """The model fits the job: modality and context length, from the config alone.

    Raises:
        ModelError: image data for a text model, text data for an image model, an encoder-decoder
            model, or ``context_len`` above the model's position limit (named with its config key).
    """
    path, cfg = model_config(job)
    name = cfg.get("model_type") or (cfg.get("architectures") or ["?"])[0]
    if cfg.get("is_encoder_decoder"):
        raise ModelError(encoder_decoder_message(job.model, name))
    if job.is_vision:
        if not is_vision_model(path, cfg):
            raise ModelError(f"--data is an image folder but {job.model} ({name}) is not a vision model "
                             "(its config has no image_size/vision_config); give it text data")
        return
    if not has_tokenizer(path, cfg):
        if is_vision_model(path, cfg):
            raise ModelError(f"--data is text but {job.model} ({name}) is a vision model; give it an image "
                             "folder, or use a language model")
        raise ModelError(f"--data is text but {job.model} ({name}) has no tokenizer files in {path}; save one "
                         "next to the weights (tokenizer.save_pretrained(PATH)) or use a model folder that has one")
    limit = position_limit(cfg)
    if limit is not None and job.context_len > limit[0]:
        raise ModelError(f"--context-len {job.context_len} exceeds what {job.model} ({name}) accepts: "
                         f"{limit[0]} positions ({limit[1]} in its config); use --context-len {limit[0]} or less")


def check_device(job: JobSpec, address: str | None) -> None:
    """The requested device exists.  Embedded runs check this machine; on a cluster the GPU count is
    checked after connecting (``check_cluster_device``).

    Raises:
        JobSpecError: an unparsable device, or a CUDA device this machine does not have.
    """
    import torch

    dev = job.device
    if dev == "auto":
        return
    try:
        d = torch.device(dev)
    except (RuntimeError, ValueError) as e:
        raise JobSpecError(f"bad --device {dev!r}: {e}; use auto, cpu, cuda or cuda:N") from None
    if d.type not in ("cpu", "cuda", "mps", "xpu"):
        raise JobSpecError(f"unsupported --device {dev!r}; use auto, cpu, cuda or cuda:N")
    if d.type == "cuda" and address is None:
        n = torch.cuda.device_count() if torch.cuda.is_available() else 0
        if n == 0:
            raise JobSpecError(f"--device {dev} but this machine has no CUDA GPU; use --device cpu or auto")
        if d.index is not None and d.index >= n:
            raise JobSpecError(f"--device {dev} but this machine has {n} CUDA GPU(s) (cuda:0..cuda:{n - 1})")


def check_cluster_device(job: JobSpec, gpus: int) -> None:
    """After connecting to a cluster: a CUDA device needs at least one GPU in it.

    Raises:
        JobSpecError: ``--device cuda…`` on a cluster with no GPU.
    """
    if job.device.startswith("cuda") and gpus == 0:
        raise JobSpecError(f"--device {job.device} but the Ray cluster has no GPU; use --device cpu or auto")


def preflight(job: JobSpec, store: StoreFS, address: str | None = None, overwrite: bool = False) -> Preflight:
    """Run every driver-side check, cheapest first.  Writes nothing.

    Raises:
        StoreLocationError, StoreDamagedError, SourceError, ModelError, JobSpecError: see the checks.
    """
    existing, committed, replace = check_location(job, store, overwrite)
    check_device(job, address)
    probe = check_source(job)
    check_model(job)
    return Preflight(existing, committed, replace, probe)
