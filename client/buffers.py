"""Reusable memory for batch streams: batch outputs, staging windows, and the cache that keeps both
warm between streams.  On this kind of VM a first-touch page fault costs more than copying the page
out of the page cache, so a loader that allocates per batch or per epoch runs at fault speed."""
from __future__ import annotations

import mmap
import sys
import threading
from typing import Any

import numpy as np

from actlake.store.dtypes import STORAGE


def alloc_rows(rows: int, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """A row buffer backed by anonymous memory, asking for transparent huge pages where the OS
    offers them (fewer first-touch faults)."""
    nbytes = rows * int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    if nbytes >= 1 << 21 and hasattr(mmap, "MADV_HUGEPAGE"):
        m = mmap.mmap(-1, nbytes)
        try:
            m.madvise(mmap.MADV_HUGEPAGE)
        except OSError:
            pass
        return np.frombuffer(m, dtype=dtype).reshape(rows, *shape)
    return np.empty((rows, *shape), dtype=dtype)


def as_records(a: np.ndarray) -> np.ndarray:
    """View rows as opaque fixed-size records: ``np.take`` then moves each row with one memcpy
    (about 3x faster than element-wise gathers, and it runs without the GIL)."""
    flat = a.reshape(a.shape[0], -1)
    return flat.view(np.dtype((np.void, flat.shape[1] * a.itemsize))).reshape(a.shape[0])


def _pinned(shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
    """Page-locked host memory (for non-blocking copies to a GPU) seen as a numpy array; the array
    keeps its tensor, hence the pinned block, alive."""
    import torch  # here, not at the top: opening a dataset (``actlake info``) needs no torch

    n = int(np.prod(shape, dtype=np.int64)) * np.dtype(dtype).itemsize
    return torch.empty(n, dtype=torch.uint8, pin_memory=True).numpy().view(dtype).reshape(shape)


class OutputPool:
    """Batch outputs recycled only once nothing can still read them.

    ``torch.from_numpy`` keeps its array alive for as long as any tensor or view of that storage
    lives, so an array whose refcount is back to the pool's own references is provably free of
    trainer tensors (and of the assembly thread filling it).  With pinned memory an array is also
    fenced until the CUDA copy that read it has finished (a non-blocking copy outlives the CPU
    tensor)."""

    def __init__(self, cap: int, pinned: bool = False):
        self.cap, self.pinned = cap, pinned
        self.free: dict[tuple, list[np.ndarray]] = {}
        self._pooled: set[int] = set()  # ids of the arrays the pool keeps (alive as long as it)
        self._fences: dict[int, Any] = {}  # id -> CUDA event of the last copy that read it
        self._lock = threading.Lock()

    def get(self, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray:
        key = (shape, np.dtype(dtype).str)
        with self._lock:
            arrays = self.free.setdefault(key, [])
            for a in arrays:
                # the list, the loop variable and getrefcount's argument
                if sys.getrefcount(a) <= 3 and self._unfenced(a):
                    return a
            a = _pinned(shape, dtype) if self.pinned else np.empty(shape, dtype=dtype)
            if len(arrays) < self.cap:
                arrays.append(a)
                self._pooled.add(id(a))
            return a

    def _unfenced(self, a: np.ndarray) -> bool:
        f = self._fences.get(id(a))
        if f is None:
            return True
        if not f.query():
            return False
        del self._fences[id(a)]
        return True

    def fence(self, a: np.ndarray, event: Any) -> None:
        """``a`` may not be reused before ``event`` (recorded after the copy that reads it) has run."""
        with self._lock:
            if id(a) in self._pooled:
                self._fences[id(a)] = event


class BufferCache:
    """Staging windows and output pools kept by the dataset between streams, so later epochs and
    streams reuse warm pages instead of faulting in fresh ones.  A stream borrows them exclusively
    and gives them back when it ends; at most ``cap`` are kept."""

    def __init__(self, cap: int = 4):
        self.cap, self._free, self._lock = cap, [], threading.Lock()

    def take(self, key: tuple) -> Any:
        with self._lock:
            for i, (k, _) in enumerate(self._free):
                if k == key:
                    return self._free.pop(i)[1]
        return None

    def give(self, key: tuple, buf: Any) -> None:
        with self._lock:
            self._free.append((key, buf))
            del self._free[:-self.cap]


class WindowBuffers:
    """Per-hook staging rows for one window of blocks read whole (object stores, compressed
    chunks, filtered streams); reused so their pages stay warm."""

    def __init__(self, rows: int, shapes: dict[str, tuple[int, ...]], dtypes: dict[str, str]):
        self.arrays = {h: alloc_rows(rows, shapes[h], STORAGE[dtypes[h]]) for h in shapes}
        self.records = {h: as_records(a) for h, a in self.arrays.items()}
        self.row_ids = np.empty(rows, dtype=np.int64)
