"""Immutable fragments: one zarr v3 group (an array per hook, rows × d) + provenance parquet.

Writers build the zarr objects in memory, checksum every object, then upload them, so the checksum
file describes exactly the bytes that were written.  Readers decode whole chunks directly from their
keys (no per-chunk listing, no metadata round trips); any zarr v3 reader can open a fragment too."""
from __future__ import annotations

import hashlib
import io
import json
import mmap
import os
import threading
import warnings
from dataclasses import dataclass, field

import crc32c as _crc32c
import numcodecs
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import zarr
import zarr.codecs
import zarr.storage

from actlake.schemas.errors import NonFiniteError, StoreDamagedError
from actlake.schemas.fragment import FragmentRecord
from actlake.schemas.hooks import HookInfo
from actlake.store import layout
from actlake.store.dtypes import STORAGE
from actlake.store.fs import StoreFS


def sha256(data: bytes | np.ndarray) -> str:
    """Hex SHA-256 of ``data`` (bytes, or a C-contiguous numpy array's buffer)."""
    # ``ndarray.data`` is the array's buffer; numpy's stubs declare ``__buffer__`` only for Python >= 3.12
    return hashlib.sha256(data.data if isinstance(data, np.ndarray) else data).hexdigest()


def crc32c(data, value: int = 0) -> int:
    """CRC-32C (Castagnoli) of ``data``, continuing ``value`` (the CRC of what precedes it): the cheap
    per-object check readers verify on every whole read (≈12 GB/s on one core here with the SSE 4.2
    instruction, vs ≈1.3 GB/s for sha256; the checksum S3 offers natively).  The ``crc32c`` package
    releases the GIL while it runs, so scan and loader threads check their chunks in parallel (and a
    check that faults in mapped pages from disk does not stall the other threads).
    Args: data: bytes-like (bytes, memoryview, numpy array).  Returns: the CRC as an int."""
    if not isinstance(data, (bytes, np.ndarray)):
        data = np.frombuffer(data, dtype=np.uint8)
    # ``ndarray.data`` is the array's buffer; numpy's stubs declare ``__buffer__`` only for Python >= 3.12
    return _crc32c.crc32c(data.data if isinstance(data, np.ndarray) else data, value)


def _codecs(info: HookInfo):
    return zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle") if info.codec == "zstd" else None


def _encode_array(name: str, data: np.ndarray, info: HookInfo, chunk_rows: int) -> dict[str, bytes]:
    """Objects of one hook's zarr array (keys relative to the array), holding only real rows.

    A fragment of n <= chunk_rows rows is one chunk of exactly n rows (chunks = (n, ...)): plain zarr.
    Larger fragments use chunks of chunk_rows rows; their last chunk is stored with only its own
    rows (not padded to chunk_rows; zarr would pad it), encoded with the array's codecs."""
    n = data.shape[0]
    rows = min(chunk_rows, n) if n else chunk_rows
    tail = n % rows if n > rows else 0
    objects: dict = {}
    arr = zarr.create_array(
        store=zarr.storage.MemoryStore(store_dict=objects), shape=data.shape, chunks=(rows, *data.shape[1:]),
        dtype=STORAGE[info.dtype], fill_value=0, compressors=_codecs(info), zarr_format=3,
        attributes={"actlake_hook": name, "actlake_dtype": info.dtype, "actlake_last_chunk_rows": tail or rows},
        config={"write_empty_chunks": True},
    )
    if tail:
        arr[: n - tail] = data[: n - tail]  # full chunks only; the short last chunk is encoded below
        short: dict = {}
        last = zarr.create_array(
            store=zarr.storage.MemoryStore(store_dict=short), shape=(tail, *data.shape[1:]),
            chunks=(tail, *data.shape[1:]), dtype=STORAGE[info.dtype], fill_value=0, compressors=_codecs(info),
            zarr_format=3, config={"write_empty_chunks": True},
        )
        last[...] = data[n - tail:]
        key = layout.chunk_key(info.array, n // rows, data.ndim)[len(f"{layout.ACTS}/{info.array}/"):]
        objects[key] = short["c/" + "/".join(["0"] * data.ndim)]
    elif n:
        arr[...] = data
    return {k: v.to_bytes() for k, v in objects.items()}


def _encode_zarr(arrays: dict[str, np.ndarray], hooks: dict[str, HookInfo], chunk_rows: int) -> dict[str, bytes]:
    """All objects of a fragment's zarr group ``acts/`` (group metadata + one array per hook)."""
    objects: dict = {}
    zarr.group(store=zarr.storage.MemoryStore(store_dict=objects), zarr_format=3).create_group(layout.ACTS)
    out = {k: v.to_bytes() for k, v in objects.items()}
    for name, data in arrays.items():
        info = hooks[name]
        prefix = f"{layout.ACTS}/{info.array}/"
        out.update({prefix + k: v for k, v in _encode_array(name, data, info, chunk_rows).items()})
    return out


_FINITE_MAX = {"float16": 65504.0, "bfloat16": 3.3895313892515355e38, "float32": 3.4028234663852886e38}


def nonfinite_mask(a: np.ndarray, dtype: str) -> np.ndarray:
    """True where a stored value (storage dtype; bfloat16 as uint16 bits) is inf or NaN."""
    if dtype == "bfloat16":
        return (a & 0x7F80) == 0x7F80  # exponent all ones
    return ~np.isfinite(a)


def apply_nonfinite_policy(name: str, a: np.ndarray, dtype: str, policy: str) -> tuple[np.ndarray, int]:
    """Count inf/NaN values of one hook's rows and apply the job's policy.

    Returns (array to store, count).  ``error``: NonFiniteError when count > 0 (nothing written);
    ``warn``: stored as they are (the count goes into the fragment record); ``clamp``: +-inf become
    the dtype's largest finite value with their sign, NaN becomes 0."""
    bad = nonfinite_mask(a, dtype)
    count = int(np.count_nonzero(bad))
    if not count:
        return a, 0
    if policy == "error":
        hint = ("float16 overflows above 65,504: store as bf16 (--dtype bf16)" if dtype == "float16"
                else "the model produced inf/NaN")
        raise NonFiniteError(
            f"hook {name}: {count} inf/NaN value(s) in {a.shape[0]} rows stored as {dtype} ({hint}); "
            "or choose --nonfinite warn (store and count) or --nonfinite clamp")
    if policy == "clamp":
        a = a.copy()
        if dtype == "bfloat16":
            nan = bad & ((a & 0x007F) != 0)
            sign = a & 0x8000
            a[bad & ~nan] = sign[bad & ~nan] | 0x7F7F  # largest finite bf16 with the value's sign
            a[nan] = 0
        else:
            np.nan_to_num(a, copy=False, nan=0.0, posinf=_FINITE_MAX[dtype], neginf=-_FINITE_MAX[dtype])
    return a, count


@dataclass
class WrittenFragment:
    """What ``write_fragment`` wrote: the checksum digest and the true sizes (bytes on storage)."""

    digest: str  # sha256 of the checksum file
    hook_bytes: dict[str, int]  # per hook: its zarr array's objects (metadata + chunks)
    total_bytes: int  # every object of the fragment, checksum file included
    nonfinite: dict[str, int]  # per hook: inf/NaN values found (stored, clamped); only hooks with any

    def record_fields(self) -> dict:
        """The FragmentRecord fields this write determines."""
        return {"checksums_sha256": self.digest, "bytes": self.hook_bytes, "total_bytes": self.total_bytes,
                "nonfinite": self.nonfinite}


def write_fragment(
    store: StoreFS,
    frag_path: str,
    arrays: dict[str, np.ndarray],
    provenance: pa.Table,
    hooks: dict[str, HookInfo],
    chunk_rows: int,
    documents: pa.Table | None = None,
    nonfinite: str = "warn",
) -> WrittenFragment:
    """Write one fragment under ``frag_path``: zarr arrays (real rows only), provenance parquet, an
    optional documents parquet (doc_id, source, index, label of the fragment's documents) and,
    last, the checksum file (a fragment without one is an incomplete attempt).

    ``nonfinite`` is the policy for inf/NaN values (see apply_nonfinite_policy); raises
    NonFiniteError under ``error`` before anything is written."""
    n = provenance.num_rows
    counts: dict[str, int] = {}
    fixed: dict[str, np.ndarray] = {}
    for name, a in arrays.items():
        if a.shape[0] != n:
            raise ValueError(f"hook {name}: {a.shape[0]} rows but provenance has {n}")
        fixed[name], c = apply_nonfinite_policy(name, a, hooks[name].dtype, nonfinite)
        if c:
            counts[name] = c
    if counts and nonfinite == "warn":
        warnings.warn(f"{frag_path}: inf/NaN values stored: {counts}", NonFiniteWarning, stacklevel=2)
    objects = {f"{frag_path}/{k}": v for k, v in _encode_zarr(fixed, hooks, chunk_rows).items()}
    buf = io.BytesIO()
    pq.write_table(provenance, buf, compression="zstd")
    objects[f"{frag_path}/{layout.PROVENANCE}"] = buf.getvalue()
    if documents is not None:
        buf = io.BytesIO()
        pq.write_table(documents, buf, compression="zstd")
        objects[f"{frag_path}/{layout.DOCUMENTS}"] = buf.getvalue()
    store.write_many(objects)
    sums = {k[len(frag_path) + 1:]: [len(v), sha256(v)] for k, v in objects.items()}
    crcs = {k[len(frag_path) + 1:]: crc32c(v) for k, v in objects.items()}  # checked by readers
    blob = json.dumps({"num_rows": n, "files": sums, "crc32c": crcs}, sort_keys=True).encode()
    store.write_bytes(f"{frag_path}/{layout.CHECKSUMS}", blob)
    hook_bytes = {name: sum(v[0] for k, v in sums.items() if k.startswith(f"{layout.ACTS}/{hooks[name].array}/"))
                  for name in arrays}
    return WrittenFragment(sha256(blob), hook_bytes, sum(v[0] for v in sums.values()) + len(blob), counts)


class NonFiniteWarning(UserWarning):
    """inf/NaN activations were stored (policy ``warn``) or clamped (policy ``clamp``)."""


@dataclass
class FragmentReader:
    """Reads whole chunks and provenance of one committed fragment.

    With ``verify`` (the default), every whole object read is checked against the fragment's
    checksum file (size, then CRC-32C; sha256 for stores written before CRC-32C was recorded), and
    a mismatch raises ``StoreDamagedError`` naming the object.  Byte ranges of a chunk cannot be
    checked alone: ``verify_chunk_file`` checks a local chunk file whole (the direct read path
    calls it once per chunk and dataset).  Chunks may hold only their real rows (the last chunk of
    a fragment need not be padded to ``chunk_rows``)."""

    store: StoreFS
    record: FragmentRecord
    hooks: dict[str, HookInfo]
    chunk_rows: int
    verify: bool = True
    derived: dict[str, str] | None = None  # derived array -> sha256 of its _derived/<array>.json (format 2)
    _sums: dict | None = field(default=None, repr=False)
    _derived_sums: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    _decoded: dict = field(default_factory=dict, repr=False)  # hook -> (chunk, rows): last compressed chunk
    _decode_lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    @property
    def num_chunks(self) -> int:
        return -(-self.record.num_rows // self.chunk_rows)

    def chunk_rows_of(self, chunk: int) -> int:
        return min(self.chunk_rows, self.record.num_rows - chunk * self.chunk_rows)

    def _key(self, info: HookInfo, chunk: int) -> str:
        return f"{self.record.path}/{layout.chunk_key(info.array, chunk, 1 + len(info.shape))}"

    def _damaged(self, key: str, problem: str) -> StoreDamagedError:
        return StoreDamagedError(self.store.path(key), problem)

    def checksums(self) -> dict:
        """The fragment's checksum file (read once), checked against its commit record."""
        sums = self._sums
        if sums is None:
            key = f"{self.record.path}/{layout.CHECKSUMS}"
            try:
                blob = self.store.read_bytes(key)
            except FileNotFoundError:
                raise self._damaged(key, "checksum file missing") from None
            if sha256(blob) != self.record.checksums_sha256:
                raise self._damaged(key, "checksum file does not match its commit")
            sums = json.loads(blob)
            with self._lock:
                self._sums = sums
        return sums

    def check_object(self, key: str, data: bytes | np.ndarray) -> None:
        """Raise ``StoreDamagedError`` unless ``data`` is the committed content of ``key``."""
        size, crc, digest = self._committed(key)
        if len(data) != size:
            raise self._damaged(key, f"{len(data)} bytes, committed {size} (truncated or replaced)")
        if (crc32c(data) != crc) if crc is not None else (sha256(data) != digest):
            raise self._damaged(key, "checksum mismatch (the bytes changed after commit)")

    def _committed(self, key: str) -> tuple[int, int | None, str]:
        """(size, CRC-32C or None for stores written before it, sha256) recorded for ``key``."""
        sums = self.checksums()
        rel = key[len(self.record.path) + 1:]
        entry = sums["files"].get(rel)
        if entry is None:
            parts = rel.split("/")
            if len(parts) > 2 and parts[0] == layout.ACTS and "~" in parts[1]:  # a derived hook's array
                entry = self._derived_checksums(parts[1]).get(rel)
        if entry is None:
            raise self._damaged(key, "not listed in the fragment's checksum file")
        return int(entry[0]), sums.get("crc32c", {}).get(rel), entry[1]

    def _derived_checksums(self, array: str) -> dict:
        """``{file: [size, sha256]}`` of a derived array (store/derived.py), read once; checked against
        the derived hook's log entry when the caller passed it (``derived``)."""
        if array not in self._derived_sums:
            key = f"{self.record.path}/_derived/{array}.json"
            try:
                blob = self.store.read_bytes(key)
            except FileNotFoundError:
                raise self._damaged(key, "derived checksum file missing") from None
            want = (self.derived or {}).get(array)
            if want is not None and sha256(blob) != want:
                raise self._damaged(key, "derived checksum file does not match its commit")
            self._derived_sums[array] = json.loads(blob).get("files", {})
        return self._derived_sums[array]

    def _read_object(self, key: str) -> bytes:
        try:
            raw = self.store.read_bytes(key)
        except FileNotFoundError:
            raise self._damaged(key, "missing") from None
        if self.verify:
            self.check_object(key, raw)
        return raw

    def read_chunk(self, hook: str, chunk: int) -> np.ndarray:
        """Rows of one chunk in the storage dtype, shape (rows_in_chunk, *shape); verified."""
        info = self.hooks[hook]
        key = self._key(info, chunk)
        raw = self._read_object(key)
        try:
            return decode_chunk(raw, info, self.chunk_rows, self.chunk_rows_of(chunk))
        except StoreDamagedError as e:
            raise self._damaged(key, e.problem) from None

    def verify_chunk_file(self, hook: str, chunk: int, fd: int | None = None) -> None:
        """Check a local chunk file whole against its checksum (``fd``: an open descriptor of it)."""
        key = self._key(self.hooks[hook], chunk)
        if fd is None:
            self._read_object(key)
            return
        size = os.fstat(fd).st_size
        if not size:
            self.check_object(key, b"")
            return
        m = _map_readonly(fd, size)  # the cached pages in one go, checksummed in place (no copy)
        if m is None:
            self.check_object(key, os.pread(fd, size, 0))
            return
        want_size, crc, digest = self._committed(key)
        try:
            view = np.frombuffer(m, dtype=np.uint8)
            same = (crc32c(view) == crc) if crc is not None else (sha256(view) == digest)
            del view
        finally:
            m.close()
        if size != want_size:
            raise self._damaged(key, f"{size} bytes, committed {want_size} (truncated or replaced)")
        if not same:
            raise self._damaged(key, "checksum mismatch (the bytes changed after commit)")

    def map_rows(self, hook: str, chunk: int) -> np.ndarray | None:
        """All rows of one chunk as a read-only view of the mapped chunk file (no copy), or None
        where mapping does not apply (object stores, compressed chunks, no ``mmap``).

        Returns: storage-dtype ``[rows_in_chunk, *shape]`` (bf16 as uint16 bits), valid for as long
        as it is referenced (the mapping is released with the last view).  The pages are mapped in
        one go (``MAP_POPULATE``) and, with ``verify``, checked whole against the chunk's CRC-32C
        in place.  Committed chunk files are never rewritten, so the view's bytes cannot change.
        Raises: StoreDamagedError (missing, truncated, checksum mismatch)."""
        info = self.hooks[hook]
        if info.codec != "none" or not self.store.is_local:
            return None
        key = self._key(info, chunk)
        rows = self.chunk_rows_of(chunk)
        try:
            with open(self.store.path(key), "rb", buffering=0) as f:
                size = os.fstat(f.fileno()).st_size
                if size < rows * info.row_bytes:
                    raise self._damaged(key, f"{size} bytes, {rows * info.row_bytes} expected (truncated)")
                m = _map_readonly(f.fileno(), size)
                if m is None:
                    return None
        except FileNotFoundError:
            raise self._damaged(key, "missing") from None
        raw = np.frombuffer(m, dtype=np.uint8)
        if self.verify:
            self.check_object(key, raw)
        return raw[: rows * info.row_bytes].view(STORAGE[info.dtype]).reshape(rows, *info.shape)

    def prefetch(self, hook: str, chunk: int) -> None:
        """Ask the OS to start reading one chunk file into the page cache in the background
        (``posix_fadvise(WILLNEED)``), so that a scan's next chunk arrives while it computes on this
        one.  Local stores only (elsewhere, and on any error, nothing happens); returns at once."""
        if not self.store.is_local or not hasattr(os, "posix_fadvise"):
            return
        try:
            fd = os.open(self.store.path(self._key(self.hooks[hook], chunk)), os.O_RDONLY)
        except OSError:
            return  # a missing chunk is reported by the read that needs it
        try:
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_WILLNEED)
        except OSError:
            pass
        finally:
            os.close(fd)

    def read_rows(self, hook: str, chunk: int, lo: int, hi: int) -> np.ndarray:
        """Rows [lo, hi) of one chunk.  Uncompressed chunks are read as a byte range (one read,
        nothing decoded; verified when the range is the whole chunk); compressed chunks are read
        whole, verified and decoded."""
        info = self.hooks[hook]
        if info.codec != "none":
            # blocks smaller than a chunk (small shuffled stores) share one decode of their chunk
            with self._decode_lock:
                got = self._decoded.get(hook)
                if got is None or got[0] != chunk:
                    got = self._decoded[hook] = (chunk, self.read_chunk(hook, chunk))
            return got[1][lo:hi]
        if self.verify and lo == 0 and hi >= self.chunk_rows_of(chunk):
            return self.read_chunk(hook, chunk)[lo:hi]
        key = self._key(info, chunk)
        rb = info.row_bytes
        try:
            raw = self.store.read_range(key, lo * rb, hi * rb)
        except FileNotFoundError:
            raise self._damaged(key, "missing") from None
        if len(raw) != (hi - lo) * rb:
            raise self._damaged(key, "truncated")
        return np.frombuffer(raw, dtype=STORAGE[info.dtype]).reshape(hi - lo, *info.shape)

    def chunk_path(self, hook: str, chunk: int) -> str:
        """Where chunk ``chunk`` of ``hook`` lives (a local path on local stores)."""
        return self.store.path(self._key(self.hooks[hook], chunk))

    def read_rows_into(self, hook: str, chunk: int, lo: int, hi: int, out: np.ndarray) -> None:
        """Rows [lo, hi) of one chunk written into ``out`` (contiguous, hi - lo rows).  On a local
        disk, uncompressed rows go from the page cache straight into ``out`` with one read (whole
        chunks are then checked in place when ``verify`` is on)."""
        info = self.hooks[hook]
        whole = lo == 0 and hi >= self.chunk_rows_of(chunk)
        if info.codec == "none" and self.store.is_local:
            key = self._key(info, chunk)
            view = out.data.cast("B")  # memoryview(out); numpy's stubs declare __buffer__ only for Python >= 3.12
            try:
                with open(self.store.path(key), "rb", buffering=0) as f:
                    check = self.verify and whole
                    if check and os.fstat(f.fileno()).st_size != len(view):  # padded or damaged: whole read
                        out[...] = self.read_rows(hook, chunk, lo, hi)
                        return
                    f.seek(lo * info.row_bytes)
                    if check:
                        got = self._read_checked(f, key, view)
                    else:
                        got = f.readinto(view)
            except FileNotFoundError:
                raise self._damaged(key, "missing") from None
            if got != len(view):
                raise self._damaged(key, "truncated")
        elif info.codec == "none" and not self.store.is_local:
            self._fetch_rows_into(hook, chunk, lo, hi, whole, out)
        else:
            out[...] = self.read_rows(hook, chunk, lo, hi)

    def _read_checked(self, f, key: str, view: memoryview) -> int:
        """Read a whole chunk file into ``view`` in 256 KiB pieces, checksumming each piece while it
        is in cache (no second buffer, no second pass over memory); returns the bytes read."""
        size, crc, _ = self._committed(key)
        if crc is None:  # stores written before CRC-32C: sha256 of the whole object
            got = f.readinto(view)
            self.check_object(key, np.frombuffer(view, dtype=np.uint8))
            return got
        got, c, step = 0, 0, 256 << 10
        while got < len(view):
            n = f.readinto(view[got:got + step])
            if not n:
                break
            c = crc32c(np.frombuffer(view[got:got + n], dtype=np.uint8), c)
            got += n
        if got != size:
            raise self._damaged(key, f"{got} bytes, committed {size} (truncated or replaced)")
        if c != crc:
            raise self._damaged(key, "checksum mismatch (the bytes changed after commit)")
        return got

    def _fetch_rows_into(self, hook: str, chunk: int, lo: int, hi: int, whole: bool, out: np.ndarray) -> None:
        """Object stores: one ranged GET read straight into ``out`` (no intermediate bytes); a
        whole chunk is checked against its checksum in ``out`` (a padded last chunk, whose object
        holds more than its rows, is read whole and copied instead)."""
        info = self.hooks[hook]
        key = self._key(info, chunk)
        view = out.data.cast("B")  # memoryview(out); numpy's stubs declare __buffer__ only for Python >= 3.12
        check = self.verify and whole
        size = self._committed(key)[0] if check else None
        if check and size != len(view):
            out[...] = self.read_rows(hook, chunk, lo, hi)
            return
        try:
            total = self.store.read_range_into(key, lo * info.row_bytes, view)
        except FileNotFoundError:
            raise self._damaged(key, "missing") from None
        if total is not None and total < hi * info.row_bytes:
            raise self._damaged(key, "truncated")
        if check:
            if total is not None and total != size:
                raise self._damaged(key, f"{total} bytes, committed {size} (truncated or replaced)")
            self.check_object(key, out.reshape(-1).view(np.uint8))

    def read_provenance(self, columns: list[str] | None = None) -> pa.Table:
        """The fragment's provenance table (``columns``: only these).  A whole read is verified.

        Decoded on the calling thread (``use_threads=False``): callers already read fragments in
        parallel, and Arrow's own thread pool, once started, can abort the process at exit
        ("terminate called without an active exception", apache/arrow#34314)."""
        key = f"{self.record.path}/{layout.PROVENANCE}"
        try:
            if self.verify and columns is None:
                return pq.read_table(pa.BufferReader(self._read_object(key)), use_threads=False)
            with self.store.fs.open(self.store.path(key), "rb") as f:
                return pq.read_table(f, columns=columns, use_threads=False)
        except FileNotFoundError:
            raise self._damaged(key, "missing") from None
        except (pa.ArrowInvalid, OSError) as e:
            if isinstance(e, StoreDamagedError):
                raise
            raise self._damaged(key, f"unreadable parquet ({e})") from None


def _map_readonly(fd: int, size: int) -> mmap.mmap | None:
    """A read-only shared mapping of ``size`` bytes of ``fd`` with its pages mapped in one go
    (``MAP_POPULATE`` where the OS has it), or None where POSIX mmap is unavailable or refuses."""
    try:
        return mmap.mmap(fd, size, flags=mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0), prot=mmap.PROT_READ)
    except (OSError, ValueError, AttributeError, TypeError):
        return None


def decode_chunk(raw: bytes, info: HookInfo, chunk_rows: int, rows: int | None = None) -> np.ndarray:
    """Decode one stored chunk (bytes codec, optional blosc/zstd) into a (rows, *shape) array.

    A chunk holds ``chunk_rows`` rows (zarr pads the last one) or only its ``rows`` real rows.
    Raises ``StoreDamagedError`` (path "chunk of HOOK") when the bytes do not decode to either."""
    if info.codec == "zstd":
        try:
            raw = numcodecs.Blosc().decode(raw)
        except Exception as e:  # blosc raises RuntimeError/ValueError on damaged frames
            raise StoreDamagedError(f"chunk of {info.name}", f"cannot decode ({e})") from None
    dt = STORAGE[info.dtype]
    row_bytes = int(np.prod(info.shape)) * dt.itemsize
    rows = chunk_rows if rows is None else rows
    if len(raw) not in (chunk_rows * row_bytes, rows * row_bytes) or not row_bytes:
        raise StoreDamagedError(f"chunk of {info.name}",
                                f"{len(raw)} bytes, expected {rows * row_bytes} or {chunk_rows * row_bytes}")
    return np.frombuffer(raw, dtype=dt).reshape(-1, *info.shape)[:rows]
