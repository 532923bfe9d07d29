"""Where the extraction input comes from."""
from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, model_validator

SourceType = Literal["text", "jsonl", "parquet", "images", "python-stdlib", "arrow", "hf-dataset"]


class SourceSpec(BaseModel):
    """An ordered, deterministic collection of documents (text) or images.

    ``text``: plain-text files (a file, a directory or a glob), one document per file.
    ``jsonl`` / ``parquet``: one document per line/row, text in ``text_field``.
    ``images``: an image folder; a sub-folder name is the image's label (ImageFolder layout).
    ``arrow`` / ``hf-dataset``: Arrow IPC files, or a HuggingFace ``datasets`` folder (``save_to_disk``):
    one document per row (``text_field``), or one image per row when ``image_field`` is set (or,
    for parquet/arrow/hf-dataset, the table has an image column); see workers/sources_hf.py.
    ``python-stdlib``: the source files of the running Python's standard library (offline demo
    corpus: real English docstrings and comments plus code, present on every machine)."""

    type: SourceType
    path: str | None = None
    text_field: str = "text"
    label_field: str | None = None
    image_field: str | None = None  # parquet/arrow/hf-dataset: a column of encoded images → an image source
    max_docs: int | None = None

    @model_validator(mode="after")
    def _path_required(self) -> SourceSpec:
        if self.type != "python-stdlib" and not self.path:
            raise ValueError(f"source type {self.type!r} needs a path")
        if self.max_docs is not None and self.max_docs <= 0:
            raise ValueError("max_docs must be positive")
        return self

    @classmethod
    def from_string(cls, text: str) -> SourceSpec:
        """Infer a source from a CLI ``--data`` value."""
        if text in ("stdlib", "python-stdlib"):
            return cls(type="python-stdlib")
        low = text.lower()
        if low.endswith((".jsonl", ".jsonl.gz", ".ndjson")):
            return cls(type="jsonl", path=text)
        if low.endswith((".arrow", ".feather")):
            return cls(type="arrow", path=text)
        if low.startswith("hf:"):
            return cls(type="hf-dataset", path=text.split(":", 1)[1])
        if low.endswith(".parquet"):
            return cls(type="parquet", path=text)
        if low.startswith("images:"):
            return cls(type="images", path=text.split(":", 1)[1])
        if low.startswith("text:"):
            return cls(type="text", path=text.split(":", 1)[1])
        import os

        if os.path.isdir(text) and any(os.path.exists(os.path.join(text, m))
                                       for m in ("dataset_info.json", "state.json", "dataset_dict.json")):
            return cls(type="hf-dataset", path=text)
        if os.path.isdir(text) and _looks_like_image_folder(text):
            return cls(type="images", path=text)
        structured = _structured_type(text)
        if structured is not None:
            return cls(type=structured, path=text)
        return cls(type="text", path=text)


_STRUCTURED_EXT = {".jsonl": "jsonl", ".jsonl.gz": "jsonl", ".ndjson": "jsonl", ".parquet": "parquet",
                   ".arrow": "arrow", ".feather": "arrow", ".ipc": "arrow"}


def _structured_type(path: str) -> SourceType | None:
    """For a folder or glob given as ``--data``: the one structured format (jsonl, parquet, arrow) its
    files are in, or None when none of them is structured (plain text files).

    Raises:
        ValueError: structured files mixed with files of another format (a `.jsonl` read as plain text
            would feed the model JSON syntax; two formats need two sources)."""
    import glob
    import os

    if any(c in path for c in "*?["):
        files = [f for f in glob.glob(path, recursive=True) if os.path.isfile(f)]
    elif os.path.isdir(path):
        files = [os.path.join(r, f) for r, _dirs, fs in os.walk(path) for f in fs if not f.startswith(".")]
    else:
        return None

    def kind(f: str) -> str:
        low = f.lower()
        return next((t for ext, t in _STRUCTURED_EXT.items() if low.endswith(ext)), "text")

    kinds: dict[str, list[str]] = {}
    for f in sorted(files):
        kinds.setdefault(kind(f), []).append(f)
    structured = sorted(k for k in kinds if k != "text")
    if not structured:
        return None
    if len(kinds) > 1:
        shown = ", ".join(f"{len(v)} {k} file(s) such as {os.path.basename(v[0])}" for k, v in sorted(kinds.items()))
        raise ValueError(f"{path} mixes formats ({shown}); give one format per source, e.g. a glob such as "
                         f"'{os.path.join(path, '*.jsonl')}', or {{type: text, path: ...}} to read every file as "
                         "plain text")
    return structured[0]  # type: ignore[return-value]


_IMAGE_EXT = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")


def _looks_like_image_folder(path: str) -> bool:
    import os

    for _root, _dirs, files in os.walk(path):
        for f in files:
            return f.lower().endswith(_IMAGE_EXT)
    return False
