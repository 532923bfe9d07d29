"""Deterministic document and image enumeration for every source type."""
from __future__ import annotations

import glob
import gzip
import json
import os
import sysconfig
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from actlake.schemas.errors import ActlakeError
from actlake.schemas.sources import _IMAGE_EXT, SourceSpec


@dataclass(frozen=True)
class Doc:
    doc_id: int
    text: str
    label: str | None = None


def _stdlib_files() -> list[str]:
    root = sysconfig.get_paths()["stdlib"]
    skip = ("site-packages", "test", "tests", "idlelib", "lib2to3", "__pycache__", "turtledemo")
    out = []
    for dirpath, dirs, files in os.walk(root):
        dirs[:] = sorted(d for d in dirs if d not in skip and not d.startswith("."))
        out += [os.path.join(dirpath, f) for f in sorted(files) if f.endswith(".py")]
    return sorted(out, key=lambda p: os.path.relpath(p, root))


def _text_files(path: str) -> list[str]:
    if any(c in path for c in "*?["):
        files = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        files = [str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise ActlakeError(f"data path not found: {path}")
    return sorted(files)


def _read_text(path: str) -> str:
    opener = gzip.open if path.endswith(".gz") else open
    with opener(path, "rt", encoding="utf-8", errors="replace") as f:
        return f.read()


def iter_docs(spec: SourceSpec) -> Iterator[Doc]:
    """Documents in a fixed order; doc ids are their ordinal positions (stable across runs)."""
    limit = spec.max_docs
    n = 0
    for text, label in _raw_docs(spec):
        if limit is not None and n >= limit:
            return
        if text:
            yield Doc(n, text, label)
            n += 1


def _raw_docs(spec: SourceSpec) -> Iterator[tuple[str, str | None]]:
    if spec.type in ("text", "python-stdlib"):
        files = _stdlib_files() if spec.type == "python-stdlib" else _text_files(spec.path or "")
        for f in files:
            yield _read_text(f), None
    elif spec.type == "jsonl":
        for f in _text_files(spec.path or ""):
            opener = gzip.open if f.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                for i, line in enumerate(fh):
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise ActlakeError(f"{f}:{i + 1}: not valid JSON") from None
                    if spec.text_field not in row:
                        raise ActlakeError(f"{f}:{i + 1}: no field {spec.text_field!r}")
                    yield str(row[spec.text_field]), _label(row, spec)
    elif spec.type == "parquet":
        import pyarrow.parquet as pq

        for f in _text_files(spec.path or ""):
            pf = pq.ParquetFile(f)
            if spec.text_field not in pf.schema_arrow.names:
                raise ActlakeError(f"{f}: no column {spec.text_field!r} (has {pf.schema_arrow.names})")
            cols = [spec.text_field] + ([spec.label_field] if spec.label_field else [])
            for batch in pf.iter_batches(columns=cols, batch_size=1024):
                d = batch.to_pydict()
                labels = d.get(spec.label_field) if spec.label_field else None
                for i, t in enumerate(d[spec.text_field]):
                    yield (t or ""), (None if labels is None or labels[i] is None else str(labels[i]))
    elif spec.type in ("arrow", "hf-dataset"):
        from actlake.workers.sources_hf import iter_table_docs

        yield from iter_table_docs(spec)
    else:
        raise ActlakeError(f"source type {spec.type!r} holds images, not text")


def _label(row: dict, spec: SourceSpec) -> str | None:
    if spec.label_field and row.get(spec.label_field) is not None:
        return str(row[spec.label_field])
    return None


@dataclass(frozen=True)
class ImageItem:
    image_id: int
    path: str
    label: str | None


def list_images(spec: SourceSpec) -> list[ImageItem]:
    """Image-folder order: sorted relative paths; a sub-folder name is the label."""
    if spec.type != "images":
        from actlake.workers.sources_hf import list_table_images

        return list_table_images(spec)
    root = spec.path or ""
    if not os.path.isdir(root):
        raise ActlakeError(f"image folder not found: {root}")
    rels = sorted(
        os.path.relpath(os.path.join(d, f), root)
        for d, _, files in os.walk(root) for f in files if f.lower().endswith(_IMAGE_EXT)
    )
    if spec.max_docs is not None:
        rels = rels[: spec.max_docs]
    return [
        ImageItem(i, os.path.join(root, r), os.path.dirname(r).split(os.sep)[0] or None)
        for i, r in enumerate(rels)
    ]
