"""Output files the user names (``--out``, ``--matrix``, plot paths): checked before any work starts."""
from __future__ import annotations

import os
from collections.abc import Callable

from actlake.schemas.errors import QueryError


def check_output_file(arg: str, path: str, suffixes: tuple[str, ...]) -> None:
    """Refuse an output file that could not be written, before a query runs.

    Args: arg: the option's name in the message ("out", "matrix"); path: the file; suffixes: the
        accepted endings, e.g. (".parquet", ".csv", ".json").
    Raises: QueryError naming ``arg`` when the suffix is not one of ``suffixes``, the folder does not
        exist or is not writable, or ``path`` is a folder."""
    if not path.endswith(suffixes):
        raise QueryError(f"{arg}: {path!r} must end in {', '.join(suffixes)}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise QueryError(f"{arg}: folder {folder!r} does not exist (for {path!r})")
    if os.path.isdir(path):
        raise QueryError(f"{arg}: {path!r} is a folder")
    if not os.access(folder, os.W_OK):
        raise QueryError(f"{arg}: cannot write in {folder!r}")


def write_atomically(path: str, write: Callable[[str], object]) -> None:
    """``write(tmp)`` to a temporary file beside ``path`` (same suffix: numpy and matplotlib go by
    it), then rename it to ``path``: a reader never sees a partial file, and a failed write leaves
    nothing behind.  Raises: whatever ``write`` raises."""
    tmp = f"{path}.tmp-{os.getpid()}{os.path.splitext(path)[1]}"
    try:
        write(tmp)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
