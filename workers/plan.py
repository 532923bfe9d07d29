"""A unit plan that scales: units are small records naming a slice of one source shard.

The coordinator holds only these records (O(units), a few hundred bytes each) and never tokens; the
worker that leases a unit reads and tokenizes its slice (:func:`shard_docs` → ``pack_contexts``).

Shards (deterministic: sorted file order, fixed split points):

- ``file``: one text file = one document = one unit (a text document is never split);
- ``lines``: a byte range ``[start, stop)`` of a jsonl file; a line belongs to the range holding its
  first byte (the Hadoop ``LineRecordReader`` convention), so ranges need no alignment at plan time;
  gzip files are not splittable and form one range;
- ``rowgroup``: parquet row groups ``[start, stop)`` of one file;
- ``rows``: rows ``[start, stop)`` (numbered in the file) of one parquet row group larger than
  ``SPLIT_ROW_GROUP`` units (pyarrow writes row groups of up to 1 Mi rows by default: one such group
  as one unit would hold all its activations in a worker's memory at once).

Identifiers stay globally unique and deterministic without any global scan: unit ``i`` numbers its
documents ``(i << DOC_BITS) + k`` and its contexts ``(i << CONTEXT_BITS) + j`` (k, j: ordinals inside
the unit).  Contexts never span two units, so a unit's rows depend on nothing outside its shard."""
from __future__ import annotations

import dataclasses
import gzip
import json
import os
from dataclasses import dataclass
from typing import Iterator

from actlake.schemas.errors import JobSpecError, SourceError
from actlake.schemas.sources import SourceSpec
from actlake.workers.sources import Doc, warn_null_texts

DOC_BITS = 32  # documents per unit < 2**32
CONTEXT_BITS = 24  # contexts per unit < 2**24
BYTES_PER_TOKEN = 4.0  # plan-time estimate for text (only sizes units and the ETA)
SPLIT_ROW_GROUP = 4  # a parquet row group above this many target unit sizes is split into row slices


@dataclass(frozen=True, slots=True)
class ShardUnit:
    """One unit of a sharded plan.

    Attributes:
        index: unit ordinal in the plan (0..units-1); the unit id is ``u{index:09d}``.
        path: the source file.
        kind: ``file`` | ``lines`` | ``rowgroup`` | ``rows``.
        start, stop: byte range (``lines``), row-group range (``rowgroup``), row range in the file
            inside one row group (``rows``), or ``0, size`` (``file``).
        est_tokens: planned token count (bytes / BYTES_PER_TOKEN, or parquet bytes), for sizing and ETA.
        line0: ``lines`` units: the 0-based line number of the first line starting in the range,
            filled in by the coordinator when it leases the unit (``LineNumbers``; -1: unknown, the
            worker counts).
    """

    index: int
    path: str
    kind: str
    start: int
    stop: int
    est_tokens: int
    line0: int = -1

    @property
    def unit_id(self) -> str:
        return f"u{self.index:09d}"

    @property
    def doc_base(self) -> int:
        return self.index << DOC_BITS

    @property
    def context_base(self) -> int:
        return self.index << CONTEXT_BITS


def _files(spec: SourceSpec) -> list[str]:
    from actlake.workers import sources

    if spec.type == "python-stdlib":
        return sources._stdlib_files()
    return sources._text_files(spec.path or "")


def plan_shards(spec: SourceSpec, fragment_tokens: int, files: list[tuple[str, int]] | None = None
                ) -> Iterator[ShardUnit]:
    """Units of a text source, in a fixed order, without reading any document.

    Args:
        spec: the source (``text``, ``python-stdlib``, ``jsonl`` or ``parquet``).
        fragment_tokens: target tokens per unit; jsonl files are cut into byte ranges of about
            ``fragment_tokens * BYTES_PER_TOKEN`` bytes, parquet files into runs of row groups.
        files: ``(path, size in bytes)`` pairs to plan instead of listing ``spec`` (used by the
            planner benchmark on synthetic listings).
    Yields:
        ShardUnit records, indices 0, 1, 2, ...
    Raises:
        SourceError: an image source, or a missing path.
    Cost: one ``stat`` per file (one footer read per parquet file); memory O(1) besides the listing.
    """
    if spec.type == "images":
        raise SourceError("image sources are planned as image-list slices, not text shards")
    if files is None:
        files = [(f, os.path.getsize(f)) for f in _files(spec)]
    target = max(1, int(fragment_tokens * BYTES_PER_TOKEN))
    i = 0
    for path, size in files:
        if size == 0:
            continue  # nothing to read; a unit must hold at least one document
        if spec.type == "parquet":
            import pyarrow.parquet as pq

            md = pq.ParquetFile(path).metadata
            g0, acc, row0 = 0, 0, 0
            for g in range(md.num_row_groups):
                group = md.row_group(g)
                size, rows = group.total_byte_size, group.num_rows
                if size > SPLIT_ROW_GROUP * target and rows > 1:
                    if g > g0:  # the run of smaller groups before it
                        yield ShardUnit(i, path, "rowgroup", g0, g, int(acc / BYTES_PER_TOKEN))
                        i += 1
                    k = min(rows, -(-size // target))
                    for a, b in zip(range(k), range(1, k + 1), strict=True):
                        lo, hi = row0 + rows * a // k, row0 + rows * b // k
                        yield ShardUnit(i, path, "rows", lo, hi, int(size * (hi - lo) / rows / BYTES_PER_TOKEN))
                        i += 1
                    g0, acc = g + 1, 0
                else:
                    acc += size
                    if acc >= target or g == md.num_row_groups - 1:
                        yield ShardUnit(i, path, "rowgroup", g0, g + 1, int(acc / BYTES_PER_TOKEN))
                        i, g0, acc = i + 1, g + 1, 0
                row0 += rows
        elif spec.type == "jsonl" and not path.endswith(".gz") and size > target:
            for start in range(0, size, target):
                stop = min(size, start + target)
                yield ShardUnit(i, path, "lines", start, stop, int((stop - start) / BYTES_PER_TOKEN))
                i += 1
        else:
            yield ShardUnit(i, path, "lines" if spec.type == "jsonl" else "file", 0, size,
                            int(size / BYTES_PER_TOKEN))
            i += 1


def _lines_before(path: str, offset: int) -> int:
    """Newlines in the first ``offset`` bytes (the 0-based line number of the line starting there)."""
    n, left = 0, offset
    with open(path, "rb") as f:
        while left > 0:
            block = f.read(min(left, 1 << 22))
            if not block:
                break
            n += block.count(b"\n")
            left -= len(block)
    return n


class LineNumbers:
    """The 0-based number of the first line starting at or after a byte offset of a jsonl file,
    counted incrementally per file: asked for a file's ranges in order (the coordinator leases them
    so), every byte is read once over the whole job, instead of each range's worker counting the
    lines before it (quadratic in the file size).  Memory: one small cursor per file."""

    def __init__(self):
        self._cur: dict[str, tuple[int, int, bytes]] = {}  # path -> (offset, newlines before it, last byte)

    def first_line(self, path: str, start: int) -> int:
        pos, n, last = self._cur.get(path, (0, 0, b"\n"))
        if start < pos:  # asked out of order (a requeued range): count from the start again
            pos, n, last = 0, 0, b"\n"
        with open(path, "rb") as f:
            f.seek(pos)
            while pos < start:
                block = f.read(min(start - pos, 1 << 22))
                if not block:
                    break
                n += block.count(b"\n")
                pos += len(block)
                last = block[-1:]
        self._cur[path] = (pos, n, last)
        return n if last == b"\n" else n + 1  # a partial line belongs to the previous range

    def number(self, unit: ShardUnit) -> ShardUnit:
        """``unit`` with ``line0`` filled in (jsonl ranges of local files; others unchanged)."""
        if unit.kind != "lines" or unit.line0 >= 0 or unit.path.endswith(".gz") or not os.path.isfile(unit.path):
            return unit
        return dataclasses.replace(unit, line0=self.first_line(unit.path, unit.start))


def _lines_in_range(path: str, start: int, stop: int, line0: int = -1) -> Iterator[tuple[int, bytes]]:
    """(0-based line number in the file, line) of the lines whose first byte lies in [start, stop);
    ``line0``: the number of the first of them when the coordinator counted it (``LineNumbers``;
    -1: count here)."""
    if path.endswith(".gz"):
        with gzip.open(path, "rb") as f:
            yield from enumerate(f)
        return
    with open(path, "rb") as f:
        pos = start
        if start > 0:
            f.seek(start - 1)
            if f.read(1) != b"\n":
                pos += len(f.readline())  # the partial line belongs to the previous range
        line_no = line0 if line0 >= 0 else (_lines_before(path, pos) if pos > 0 else 0)
        while pos < stop:
            line = f.readline()
            if not line:
                break
            yield line_no, line
            pos += len(line)
            line_no += 1


_DOC_HAS_SOURCE = "source" in getattr(Doc, "__dataclass_fields__", {})


def _make_doc(doc_id: int, text: str, label: str | None, source: str, index: int | None) -> Doc:
    if _DOC_HAS_SOURCE:  # Doc records where it came from (ds.documents)
        return Doc(doc_id, text, label, source=source, index=index)  # type: ignore[call-arg]
    return Doc(doc_id, text, label)


def _text_value(value: object, where: str) -> str | None:
    """The source rules: null/missing text is skipped, non-string text is an error."""
    if value is None:
        return None
    if not isinstance(value, str):
        raise SourceError(f"{where}: text is {type(value).__name__} {str(value)[:40]!r}, not a string")
    return value


def shard_docs(spec: SourceSpec, unit: ShardUnit) -> Iterator[Doc]:
    """The documents of one unit, with doc ids ``unit.doc_base + k`` (k counts non-empty documents).

    Text files go through ``sources.iter_docs`` (its rules for binary/empty files); jsonl lines and
    parquet rows follow the same rules (null text skipped, non-string text an error).  Each Doc
    records its file and its 0-based line/row where the Doc type has those fields.
    Raises:
        SourceError: invalid JSON / UTF-8, a non-object line, non-string text, a missing column.
    """
    k = nulls = 0

    def doc(text: str | None, label: str | None, index: int | None) -> Doc | None:
        nonlocal k, nulls
        if text is None:
            nulls += 1
        if not text:
            return None
        d = _make_doc(unit.doc_base + k, text, label, unit.path, index)
        k += 1
        return d

    if unit.kind == "file":
        from actlake.workers.sources import iter_docs

        for d in iter_docs(SourceSpec(type="text", path=unit.path)):
            yield dataclasses.replace(d, doc_id=unit.doc_base + d.doc_id)
    elif unit.kind == "lines":
        for n, raw in _lines_in_range(unit.path, unit.start, unit.stop, unit.line0):
            if not raw.strip():
                continue
            where = f"{unit.path}:{n + 1}"
            try:
                row = json.loads(raw)
            except UnicodeDecodeError:
                raise SourceError(f"{where}: not UTF-8 text") from None
            except json.JSONDecodeError:
                raise SourceError(f"{where}: not valid JSON") from None
            if not isinstance(row, dict):
                raise SourceError(f"{where}: a JSON object per line is needed, got {type(row).__name__}")
            text = _text_value(row.get(spec.text_field), f"{where}: field {spec.text_field!r}")
            lab = row.get(spec.label_field) if spec.label_field else None
            d = doc(text, None if lab is None else str(lab), n)
            if d is not None:
                yield d
    elif unit.kind in ("rowgroup", "rows"):  # decoded batch by batch: bounded memory for large groups
        import pyarrow.parquet as pq

        pf = pq.ParquetFile(unit.path)
        if spec.text_field not in pf.schema_arrow.names:
            raise SourceError(f"{unit.path}: no column {spec.text_field!r} (has {pf.schema_arrow.names})")
        sizes = [pf.metadata.row_group(g).num_rows for g in range(pf.metadata.num_row_groups)]
        if unit.kind == "rowgroup":  # whole groups [start, stop)
            groups, at = list(range(unit.start, unit.stop)), sum(sizes[:unit.start])
            first, stop = at, at + sum(sizes[unit.start:unit.stop])
        else:  # rows [start, stop) of the one group holding them
            g, at = 0, 0
            while g < len(sizes) and at + sizes[g] <= unit.start:
                at, g = at + sizes[g], g + 1
            groups, first, stop = [g], unit.start, unit.stop
        cols = [spec.text_field] + ([spec.label_field] if spec.label_field else [])
        for batch in pf.iter_batches(batch_size=4096, row_groups=groups, columns=cols):
            n = batch.num_rows
            lo, hi = max(first - at, 0), min(stop - at, n)
            if hi > lo:
                part = batch.slice(lo, hi - lo).to_pydict()
                labels = part.get(spec.label_field) if spec.label_field else None
                for m, t in enumerate(part[spec.text_field]):
                    row = at + lo + m
                    text = _text_value(t, f"{unit.path}: row {row}")
                    d = doc(text, None if labels is None or labels[m] is None else str(labels[m]), row)
                    if d is not None:
                        yield d
            at += n
            if at >= stop:
                break
    else:
        raise JobSpecError(f"unknown shard kind {unit.kind!r}")
    if nulls:
        warn_null_texts(unit.path, nulls)
