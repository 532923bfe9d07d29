"""Deterministic document and image enumeration for every source type."""
from __future__ import annotations

import glob
import gzip
import json
import os
import sysconfig
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterator

from actlake.schemas.errors import SourceError
from actlake.schemas.sources import _IMAGE_EXT, SourceSpec

if TYPE_CHECKING:
    import pyarrow as pa


@dataclass(frozen=True)
class Doc:
    doc_id: int
    text: str
    label: str | None = None
    source: str | None = None  # the file (path) the document came from
    index: int | None = None  # line (jsonl, 0-based) or row (parquet, 0-based) inside that file


@dataclass
class SkipCounts:
    """Documents skipped by the rules of docs/format.md ("Sources"), per reason."""

    null: int = 0  # text missing or null (jsonl, parquet)
    empty: int = 0  # empty text (after decoding)
    undecodable: int = 0  # text files that are not UTF-8 text (binary: invalid UTF-8 or NUL bytes)
    undecodable_files: list[str] = field(default_factory=list)

    @property
    def total(self) -> int:
        return self.null + self.empty + self.undecodable


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
        files = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
    elif os.path.isdir(path):
        files = [str(p) for p in Path(path).rglob("*") if p.is_file() and not p.name.startswith(".")]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise SourceError(f"data path not found: {path}")
    return sorted(files)


def _read_text(path: str) -> str | None:
    """The file's text, or None when it is not UTF-8 text (invalid UTF-8, or NUL bytes: binary)."""
    opener = gzip.open if path.endswith(".gz") else open
    try:
        with opener(path, "rb") as f:
            raw = f.read()
    except OSError as e:
        raise SourceError(f"{path}: cannot read: {e}") from None
    if b"\x00" in raw:
        return None
    try:
        return raw.decode("utf-8-sig")
    except UnicodeDecodeError:
        return None


def iter_docs(spec: SourceSpec, skipped: SkipCounts | None = None) -> Iterator[Doc]:
    """Documents in a fixed order; doc ids are their ordinal positions (stable across runs).

    One rule for every source type (docs/format.md, "Sources"): missing/null text and empty text
    are skipped and counted; text of another type (number, list, ...) raises SourceError naming
    the file and line/row; text files that are not UTF-8 text (binary) are skipped, counted and
    warned about (``SourceWarning``).  Counts go into ``skipped`` when given."""
    counts = skipped if skipped is not None else SkipCounts()
    limit = spec.max_docs
    n = 0
    for text, label, source, index in _raw_docs(spec, counts):
        if limit is not None and n >= limit:
            break
        if text:
            yield Doc(n, text, label, source, index)
            n += 1
        elif text is not None:
            counts.empty += 1
    if counts.undecodable:
        names = ", ".join(counts.undecodable_files[:3]) + (" ..." if counts.undecodable > 3 else "")
        warnings.warn(f"skipped {counts.undecodable} file(s) that are not UTF-8 text: {names}", SourceWarning,
                      stacklevel=2)
    if counts.null:
        warn_null_texts(spec.path, counts.null)


def warn_null_texts(where: object, n: int) -> None:
    """The ``SourceWarning`` for ``n`` documents of ``where`` skipped because their text is null or missing."""
    warnings.warn(f"{where}: skipped {n} document(s) whose text is null or missing", SourceWarning, stacklevel=3)


class SourceWarning(UserWarning):
    """Input that was skipped under the source rules (binary files, null or missing text), with its count."""


def _check_text(value: object, where: str, counts: SkipCounts) -> str | None:
    if value is None:
        counts.null += 1
        return None
    if not isinstance(value, str):
        raise SourceError(f"{where}: text is {type(value).__name__} {str(value)[:40]!r}, not a string")
    return value


def _raw_docs(spec: SourceSpec, counts: SkipCounts) -> Iterator[tuple[str | None, str | None, str, int | None]]:
    if spec.type in ("text", "python-stdlib"):
        files = _stdlib_files() if spec.type == "python-stdlib" else _text_files(spec.path or "")
        for f in files:
            text = _read_text(f)
            if text is None:
                counts.undecodable += 1
                counts.undecodable_files.append(f)
                continue
            yield text, None, f, None
    elif spec.type == "jsonl":
        for f in _text_files(spec.path or ""):
            opener = gzip.open if f.endswith(".gz") else open
            with opener(f, "rt", encoding="utf-8") as fh:
                i = -1
                while True:
                    try:
                        line = fh.readline()
                    except UnicodeDecodeError:
                        raise SourceError(f"{f}:{i + 2}: not UTF-8 text") from None
                    i += 1
                    if not line:
                        break
                    if not line.strip():
                        continue
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        raise SourceError(f"{f}:{i + 1}: not valid JSON") from None
                    if not isinstance(row, dict):
                        raise SourceError(f"{f}:{i + 1}: a JSON object per line is needed, got {type(row).__name__}")
                    text = _check_text(row.get(spec.text_field), f"{f}:{i + 1}: field {spec.text_field!r}", counts)
                    yield text, _label(row, spec), f, i
    elif spec.type == "parquet":
        import pyarrow as pa
        import pyarrow.parquet as pq

        for f in _text_files(spec.path or ""):
            try:
                pf = pq.ParquetFile(f)
            except (pa.ArrowException, OSError) as e:
                raise SourceError(f"{f}: not a readable parquet file: {e}") from None
            schema = pf.schema_arrow
            if spec.text_field not in schema.names:
                raise SourceError(f"{f}: no column {spec.text_field!r} (has {schema.names})")
            typ = schema.field(spec.text_field).type
            if not (pa.types.is_string(typ) or pa.types.is_large_string(typ) or pa.types.is_null(typ)):
                raise SourceError(f"{f}: column {spec.text_field!r} holds {typ}, not strings")
            cols = [spec.text_field] + ([spec.label_field] if spec.label_field else [])
            row0 = 0
            for batch in pf.iter_batches(columns=cols, batch_size=1024):
                d = batch.to_pydict()
                labels = d.get(spec.label_field) if spec.label_field else None
                for i, t in enumerate(d[spec.text_field]):
                    if t is None:
                        counts.null += 1
                    yield t, (None if labels is None or labels[i] is None else str(labels[i])), f, row0 + i
                row0 += batch.num_rows
    elif spec.type in ("arrow", "hf-dataset"):
        from actlake.workers.sources_hf import iter_table_docs

        for text, label, path, row in iter_table_docs(spec):
            if text is None:
                counts.null += 1
            yield text, label, path, row
    else:
        raise SourceError(f"source type {spec.type!r} holds images, not text")


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
        raise SourceError(f"image folder not found: {root}")
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




def unit_documents(unit) -> "pa.Table":
    """The documents table of one work unit: ``doc_id`` (int64), ``source`` (file path), ``index``
    (int64 line/row in that file, null for whole-file documents and images), ``label`` (string).

    A text unit lists every document that has a token in its contexts (a document cut across
    two units appears in both; readers de-duplicate by doc_id); an image unit lists its images."""
    import pyarrow as pa

    schema = pa.schema([("doc_id", pa.int64()), ("source", pa.string()), ("index", pa.int64()),
                        ("label", pa.string())])
    if hasattr(unit, "images"):
        rows = [(im.image_id, im.path, None, im.label) for im in unit.images]
    else:
        seen: dict[int, Doc] = {}
        for ctx in unit.contexts:
            seen.update(ctx.docs or {})
        rows = [(d, seen[d].source, seen[d].index, seen[d].label) for d in sorted(seen)]
    cols = list(zip(*rows)) if rows else [[], [], [], []]
    return pa.Table.from_arrays([pa.array(list(c), f.type) for c, f in zip(cols, schema)], schema=schema)
