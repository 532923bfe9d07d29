"""Table sources: Arrow/Parquet files and HuggingFace ``datasets`` folders (``save_to_disk``), for
text (a chosen ``text_field``) and images (a chosen ``image_field`` holding encoded image bytes, or an
HF ``Image`` feature ``{"bytes", "path"}``).

Images are referenced as ``"<file or folder>::<row>"`` (see ``image_bytes``); rows are enumerated in
file order, files in sorted order, so image ids are stable across runs.  A column that does not exist
is a SourceError naming the columns there are.  Undecodable images are a clear SourceError naming the
image when it is read (never skipped silently)."""
from __future__ import annotations

import functools
import glob
import os
from typing import Iterator

import pyarrow as pa

from actlake.schemas.errors import SourceError
from actlake.schemas.sources import SourceSpec

HF_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def is_hf_dataset_dir(path: str) -> bool:
    return os.path.isdir(path) and any(os.path.exists(os.path.join(path, m)) for m in HF_MARKERS)


def _files(path: str, exts: tuple[str, ...]) -> list[str]:
    if any(c in path for c in "*?["):
        files = glob.glob(path, recursive=True)
    elif os.path.isdir(path):
        files = [os.path.join(d, f) for d, _, fs in os.walk(path) for f in fs if f.lower().endswith(exts)]
    elif os.path.isfile(path):
        files = [path]
    else:
        raise SourceError(f"data path not found: {path}")
    return sorted(files)


@functools.lru_cache(maxsize=8)
def _read_table(path: str) -> pa.Table:
    """A whole Arrow/Parquet file or HF dataset folder as one table (memory-mapped where possible)."""
    try:
        if os.path.isdir(path):
            import datasets

            d = datasets.load_from_disk(path)
            if isinstance(d, datasets.DatasetDict):
                if len(d) != 1:
                    raise SourceError(f"{path} holds splits {list(d)}; point at one split folder")
                d = next(iter(d.values()))
            return d.data.table if hasattr(d.data, "table") else d.data
        if path.lower().endswith(".parquet"):
            import pyarrow.parquet as pq

            return pq.read_table(path)
        with pa.memory_map(path) as src:
            try:
                return pa.ipc.open_file(src).read_all()
            except pa.ArrowInvalid:
                src.seek(0)
                return pa.ipc.open_stream(src).read_all()
    except SourceError:
        raise
    except Exception as e:
        raise SourceError(f"cannot read {path} as an Arrow/Parquet table or HF dataset: {e}") from None


def table_paths(spec: SourceSpec) -> list[str]:
    if spec.type == "hf-dataset":
        if not is_hf_dataset_dir(spec.path or ""):
            raise SourceError(f"{spec.path} is not a HuggingFace datasets folder (save_to_disk)")
        return [spec.path or ""]
    return _files(spec.path or "", (".parquet",) if spec.type == "parquet" else (".arrow", ".feather", ".ipc"))


def _column(table: pa.Table, name: str, path: str, what: str) -> pa.ChunkedArray:
    if name not in table.column_names:
        raise SourceError(f"{path}: no {what} column {name!r} (columns: {', '.join(table.column_names)})")
    return table.column(name)


def iter_table_docs(spec: SourceSpec) -> Iterator[tuple[str | None, str | None, str, int]]:
    """(text, label, file, row) per row; a null text yields None (skipped and counted by ``iter_docs``)."""
    for path in table_paths(spec):
        t = _read_table(path)
        texts = _column(t, spec.text_field, path, "text")
        if not (pa.types.is_string(texts.type) or pa.types.is_large_string(texts.type)):
            raise SourceError(f"{path}: text column {spec.text_field!r} holds {texts.type}, not strings")
        labels = _column(t, spec.label_field, path, "label").to_pylist() if spec.label_field else None
        for i, s in enumerate(texts.to_pylist()):
            yield s, (None if labels is None or labels[i] is None else str(labels[i])), path, i


def _image_column(t: pa.Table, spec: SourceSpec, path: str) -> str:
    if spec.image_field:
        _column(t, spec.image_field, path, "image")
        return spec.image_field
    for f in t.schema:
        if pa.types.is_struct(f.type) and {"bytes", "path"} <= {c.name for c in f.type} or pa.types.is_binary(f.type):
            return f.name
    raise SourceError(f"{path}: no image column (encoded bytes or an HF Image feature); set image_field")


def list_table_images(spec: SourceSpec) -> list:
    """ImageItems referencing rows of table sources, in file then row order."""
    from actlake.workers.sources import ImageItem

    items = []
    for path in table_paths(spec):
        t = _read_table(path)
        col = _image_column(t, spec, path)
        labels = _column(t, spec.label_field, path, "label").to_pylist() if spec.label_field else None
        for r in range(t.num_rows):
            if spec.max_docs is not None and len(items) >= spec.max_docs:
                return items
            lab = None if labels is None or labels[r] is None else str(labels[r])
            items.append(ImageItem(len(items), f"{path}::{col}::{r}", lab))
    return items


def image_bytes(ref: str) -> bytes:
    """The encoded bytes of an image reference ``"<path>::<column>::<row>"``."""
    path, col, row = ref.rsplit("::", 2)
    v = _read_table(path).column(col)[int(row)].as_py()
    if isinstance(v, dict):
        if v.get("bytes"):
            return v["bytes"]
        if v.get("path") and os.path.exists(v["path"]):
            with open(v["path"], "rb") as f:
                return f.read()
        raise SourceError(f"image {ref}: neither bytes nor a readable path")
    if not isinstance(v, (bytes, bytearray)):
        raise SourceError(f"image {ref}: column {col!r} holds {type(v).__name__}, not encoded image bytes")
    return bytes(v)
