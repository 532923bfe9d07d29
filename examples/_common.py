"""Shared pieces of the workflow examples: tiny offline models, real images, extraction, the report.

Every workflow script (``examples/monosemanticity.py``, ``null_codes.py``, ``qk_modes.py``,
``tense_inputs.py``) builds its inputs with these helpers when no real model is given, runs one
``actlake.extract`` job, analyses the store and writes ``OUT/summary.json``, PNG figures and
``OUT/index.html`` through :class:`Report`.
"""
from __future__ import annotations

import argparse
import html
import json
import os
import sysconfig
import time
from pathlib import Path
from typing import Any

import numpy as np

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")

import matplotlib  # noqa: E402

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

STDLIB_FILES = ["textwrap.py", "string.py", "shlex.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py",
                "keyword.py", "queue.py", "sched.py", "argparse.py", "difflib.py"]
SKIMAGE_PHOTOS = ["astronaut", "camera", "cat", "chelsea", "coffee", "rocket", "immunohistochemistry",
                  "hubble_deep_field", "motorcycle_left", "page", "brick", "grass", "gravel", "moon"]
PHOTO_LABEL = {"astronaut": "person", "camera": "person", "cat": "animal", "chelsea": "animal",
               "coffee": "object", "rocket": "object", "motorcycle_left": "object", "page": "object",
               "immunohistochemistry": "texture", "hubble_deep_field": "texture", "brick": "texture",
               "grass": "texture", "gravel": "texture", "moon": "texture"}


# ---- command line ---------------------------------------------------------------------------------
def parser(doc: str, quick: str) -> argparse.ArgumentParser:
    """A workflow's command line: the first paragraph of ``doc`` as its description, every option's
    default in --help, ``--out`` (required) and ``--quick`` (``quick`` says what it shrinks to)."""
    p = argparse.ArgumentParser(description=doc.split("\n\n")[0],
                                formatter_class=argparse.ArgumentDefaultsHelpFormatter)
    p.add_argument("--out", required=True, help="output folder (stores, figures, summary.json, index.html)")
    p.add_argument("--quick", action="store_true", help=quick)
    return p


# ---- inputs ---------------------------------------------------------------------------------------
def stdlib_root() -> Path:
    """The folder of the running Python's standard-library modules (real text, always offline)."""
    return Path(sysconfig.get_paths()["stdlib"])


def stdlib_corpus(out: Path, n_files: int) -> Path:
    """A folder of ``n_files`` real text documents (stdlib modules of the running Python)."""
    root = stdlib_root()
    d = out / "corpus"
    d.mkdir(parents=True, exist_ok=True)
    for i, name in enumerate(STDLIB_FILES[:n_files]):
        (d / f"{i:02d}_{Path(name).stem}.txt").write_text((root / name).read_text())
    return d


def tiny_gpt2(out: Path, corpus: Path, n_layer: int = 2, d_model: int = 64, seed: int = 0) -> Path:
    """A config-built GPT-2 (``n_layer`` blocks, width ``d_model``, MLP 4·d_model) with a word-level
    tokenizer trained on ``corpus``; saved as an HF folder.  Random weights, but deterministic."""
    import torch
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast

    d = out / "tiny-gpt2"
    if (d / "config.json").exists():
        return d
    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=2000, special_tokens=["<unk>", "<bos>", "<eos>", "<pad>"])
    tok.train([str(p) for p in sorted(corpus.iterdir())], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(seed)
    cfg = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=d_model, n_layer=n_layer, n_head=4,
                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    GPT2LMHeadModel(cfg).eval().save_pretrained(d)
    fast.save_pretrained(d)
    return d


def image_folder(out: Path, n_min: int = 24) -> Path:
    """Real photographs from ``skimage.data`` as an ImageFolder (sub-folder = coarse label), with
    crops and flips until there are at least ``n_min`` images."""
    from PIL import Image
    from skimage import data

    d = out / "images"
    if d.exists() and sum(1 for _ in d.rglob("*.png")) >= n_min:
        return d
    photos = []
    for name in SKIMAGE_PHOTOS:
        try:
            arr = getattr(data, name)()
        except Exception:  # a sample that needs pooch (not shipped) is skipped
            continue
        photos.append((name, Image.fromarray(arr).convert("RGB")))
    variants = [("full", lambda im: im), ("flip", lambda im: im.transpose(Image.Transpose.FLIP_LEFT_RIGHT)),
                ("crop", lambda im: im.crop((0, 0, im.width * 2 // 3, im.height * 2 // 3))),
                ("cropflip", lambda im: im.crop((im.width // 3, im.height // 3, im.width, im.height))
                 .transpose(Image.Transpose.FLIP_LEFT_RIGHT))]
    n = 0
    for vname, fn in variants:
        for name, im in photos:
            label = PHOTO_LABEL.get(name, "other")
            (d / label).mkdir(parents=True, exist_ok=True)
            fn(im).save(d / label / f"{name}_{vname}.png")
            n += 1
        if n >= n_min:
            break
    return d


def tiny_vit(out: Path, size: int = 56, patch: int = 4, layers: int = 4, width: int = 64, seed: int = 0) -> Path:
    """A config-built ViT (CLS + (size/patch)² patches; 14×14 with the defaults) saved with its processor."""
    import torch
    from transformers import ViTConfig, ViTImageProcessor, ViTModel

    d = out / "tiny-vit"
    if (d / "config.json").exists():
        return d
    torch.manual_seed(seed)
    cfg = ViTConfig(image_size=size, patch_size=patch, hidden_size=width, num_hidden_layers=layers,
                    num_attention_heads=4, intermediate_size=4 * width)
    ViTModel(cfg).eval().save_pretrained(d)
    ViTImageProcessor(size={"height": size, "width": size}).save_pretrained(d)
    return d


def tiny_convnext(out: Path, size: int = 112, seed: int = 0) -> Path:
    """A config-built 2-stage ConvNeXt (stem /4, stage 2 /8 with 3 blocks: 14×14 maps at 112 px) with its processor."""
    import torch
    from transformers import ConvNextConfig, ConvNextImageProcessor, ConvNextModel

    d = out / "tiny-convnext"
    if (d / "config.json").exists():
        return d
    torch.manual_seed(seed)
    cfg = ConvNextConfig(hidden_sizes=[16, 32], depths=[1, 3], num_stages=2, image_size=size,
                         layer_scale_init_value=1.0)  # the default 1e-6 makes random blocks identities
    ConvNextModel(cfg).eval().save_pretrained(d)
    ConvNextImageProcessor(size={"shortest_edge": size}, crop_pct=1.0).save_pretrained(d)
    return d


def extract(job: dict[str, Any]) -> str:
    """``actlake.extract`` with float32 storage, CPU, no progress bar, unshuffled rows; resumes a
    finished job in place (a re-run of the script reuses its store)."""
    import actlake

    spec = {"dtype": "float32", "device": "cpu", "progress": False, **job}
    return actlake.extract(spec)


def extract_images(model: str, hooks: list[str], images: str, out: Path, **job: Any) -> str:
    """``extract`` of ``hooks`` over the ImageFolder ``images`` into the store ``out``: 8 images per
    forward pass, rows left in image / patch order (``shuffle_rows`` off); ``job`` adds JobSpec fields
    (``weights``, ``max_images``, ...)."""
    return extract({"model": model, "hooks": hooks, "data": {"type": "images", "path": images}, "out": str(out),
                    "batch_size": 8, "shuffle_rows": False, **job})


# ---- math --------------------------------------------------------------------------------------
def excess_kurtosis(x: np.ndarray, axis: int = -1) -> np.ndarray:
    """Excess (Fisher) kurtosis of ``x`` along ``axis``: E[(x-μ)⁴]/σ⁴ − 3 (population moments)."""
    x = np.asarray(x, dtype=np.float64)
    c = x - x.mean(axis=axis, keepdims=True)
    m2 = (c ** 2).mean(axis=axis)
    m4 = (c ** 4).mean(axis=axis)
    return m4 / np.maximum(m2, 1e-30) ** 2 - 3.0


def cosine(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Cosine of every row of ``a`` [n, d] with the vector ``b`` [d] (or row-wise with ``b`` [n, d])."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    na = np.linalg.norm(a, axis=-1)
    nb = np.linalg.norm(b, axis=-1)
    return (a * b).sum(-1) / np.maximum(na * nb, 1e-30)


# ---- report ------------------------------------------------------------------------------------
class Report:
    """Collects figures (numbers) and PNG plots; ``finish`` prints the table, writes summary.json and
    index.html (every plot linked and shown, the table on top)."""

    def __init__(self, out: str | Path, title: str):
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.title = title
        self.figures: dict[str, Any] = {}
        self.plots: list[tuple[str, str]] = []
        self.pages: list[tuple[str, str]] = []
        self.t0 = time.perf_counter()

    def lap(self, name: str) -> float:
        """Record the seconds since the previous lap (or the start) as ``time_s.<name>``."""
        now = time.perf_counter()
        dt = now - getattr(self, "_last", self.t0)
        self._last = now
        self.figures.setdefault("time_s", {})[name] = round(dt, 1)
        return dt

    def add(self, name: str, value: Any) -> Any:
        self.figures[name] = _jsonable(value)
        return value

    def savefig(self, fig, name: str, caption: str = "") -> str:
        path = self.out / name
        path.parent.mkdir(parents=True, exist_ok=True)
        fig.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(fig)
        self.plots.append((name, caption))
        return str(path)

    def link(self, path: str, caption: str) -> None:
        """Link another page the script wrote (``path`` relative to ``out``) from index.html."""
        self.pages.append((path, caption))

    def finish(self) -> dict[str, Any]:
        self.figures["wall_s"] = round(time.perf_counter() - self.t0, 1)
        self.figures["plots"] = [p for p, _ in self.plots]
        if self.pages:
            self.figures["pages"] = [p for p, _ in self.pages]
        (self.out / "summary.json").write_text(json.dumps(self.figures, indent=2))
        rows = [(k, _fmt(v)) for k, v in _flat(self.figures).items() if k not in ("plots", "pages")]
        w = max(len(k) for k, _ in rows)
        print(f"\n{self.title}\n" + "-" * (w + 30))
        for k, v in rows:
            print(f"{k:<{w}}  {v}")
        table = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(v)}</td></tr>" for k, v in rows)
        links = "".join(f'<li><a href="{html.escape(p)}">{html.escape(c)}</a></li>' for p, c in self.pages)
        imgs = "".join(f'<figure><a href="{html.escape(p)}"><img src="{html.escape(p)}" style="max-width:720px">'
                       f"</a><figcaption>{html.escape(c or p)}</figcaption></figure>" for p, c in self.plots)
        (self.out / "index.html").write_text(
            f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(self.title)}</title></head>"
            f"<body><h1>{html.escape(self.title)}</h1><table border=1>{table}</table>"
            f"<p><a href='summary.json'>summary.json</a></p><ul>{links}</ul>{imgs}</body></html>")
        print(f"wrote {self.out / 'summary.json'}, {self.out / 'index.html'} and {len(self.plots)} plots")
        return self.figures


def _flat(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flat(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def _jsonable(v: Any) -> Any:
    if isinstance(v, dict):
        return {str(k): _jsonable(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_jsonable(x) for x in v]
    if isinstance(v, np.ndarray):
        return _jsonable(v.tolist())
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, float):
        return round(v, 6)
    return v


def _fmt(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.4g}"
    if isinstance(v, list) and len(v) > 8:
        return "[" + ", ".join(_fmt(x) for x in v[:8]) + ", …]"
    if isinstance(v, list):
        return "[" + ", ".join(_fmt(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k}: {_fmt(x)}" for k, x in list(v.items())[:6]) + ("…}" if len(v) > 6 else "}")
    return str(v)


def train_tiny_lm(model_dir: Path, corpus: Path, steps: int = 150, context_len: int = 64, batch: int = 16,
                  seed: int = 0) -> Path:
    """Briefly train a config-built causal LM on ``corpus`` (next-token CE on ``batch`` random windows of
    ``context_len`` tokens per step, Adam 3e-3) so that its MLP neurons and its loss mean something;
    overwrites the weights in ``model_dir``.  Done once (a ``trained.txt`` marker records it)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    if (model_dir / "trained.txt").exists():
        return model_dir
    tok = AutoTokenizer.from_pretrained(model_dir)
    ids = torch.tensor(tok("\n".join(p.read_text() for p in sorted(corpus.iterdir())))["input_ids"])
    model = AutoModelForCausalLM.from_pretrained(model_dir).train()
    g = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    loss = torch.tensor(float("nan"))
    for _ in range(steps):
        start = torch.randint(0, len(ids) - context_len - 1, (batch,), generator=g)
        x = torch.stack([ids[s:s + context_len] for s in start.tolist()])
        loss = model(input_ids=x, labels=x).loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    model.eval().save_pretrained(model_dir)
    (model_dir / "trained.txt").write_text(f"{steps} steps, final train loss {loss.item():.3f}\n")
    return model_dir


def folder_images(root: str | Path) -> list[Path]:
    """An ImageFolder's images in actlake's order (sorted relative paths), so ``image_id`` i is item i."""
    root = Path(root)
    ext = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
    return sorted((p for p in root.rglob("*") if p.suffix.lower() in ext), key=lambda p: str(p.relative_to(root)))
