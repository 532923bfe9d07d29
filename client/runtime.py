"""``StreamRuntime``: the threads, events and memory of one pass over a batch stream.

``BatchStream`` (client/batches.py) plans which rows go into batch k (pure arithmetic); this module
runs that plan: it owns the executors, the events that hand a staging buffer from one window to
the next, the open windows, the output pool, and the order in which all of it is shut down."""
from __future__ import annotations

import sys
import threading
from collections import deque
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import torch

from actlake.client.buffers import OutputPool, WindowBuffers
from actlake.client.chunk_checks import RangeChecks
from actlake.client.windows import FileHandles, StagedWindow, Window

if TYPE_CHECKING:
    import numpy as np

    from actlake.client.access import SnapshotAccess

Filled = list[tuple[dict[str, torch.Tensor], list["np.ndarray"]]]  # per batch: (tensors, output arrays)


class StreamRuntime:
    """Executors, events and buffers of one ``iter(stream)``; a context manager (``close`` on exit).

    Threads:
        ``assemble`` (``assembly_threads``): fill batches; each job fills consecutive batches from
            the windows' runs (the direct path's ``preadv`` run here) into output arrays.
        ``loader`` (one thread): window orders (``shuffle.window_order``) and ``StagedWindow.load``,
            which fans block reads out to ``io``.
        ``io`` (``io_threads``): staged block reads, direct windows' read-ahead advice and whole-chunk
            checks.
        The consumer (the thread iterating the stream) is the only one that submits work, opens and
        retires windows, and touches ``windows``, ``ring``, ``slot_users`` and ``inflight``.

    Ownership (invariants):
        * ``inflight`` holds the assembly jobs in batch order; the consumer takes results in that
          order, so batches come out in plan order whatever the thread timing.
        * A staging buffer belongs to ring slot ``k`` and so to the window ``w`` with
          ``w % len(ring) == k`` that was opened last.  It is written only by that window's load
          (loader and io threads) and read only by the assembly jobs of batches holding runs of it.
          The next window of slot ``k`` starts loading only after every one of those jobs has set
          its event (``hand_over``): a job's event is set when it ends, successfully or not.
        * A window is retired (closed: descriptors released once its read-ahead and checks have
          resolved) when the consumer has received every batch that reads it.
        * An output array belongs to ``pool``; ``pool.get`` lends it to one assembly job, which
          fills it and wraps it in the batch's tensors (``torch.from_numpy``: no copy; every tensor
          and every view of one keeps the array alive).  The pool lends it again only when (a) no
          reference to it exists outside the pool (the trainer has dropped every tensor and view of
          that batch; the job's result and the consumer's locals are gone) and (b) with pinned
          memory, the CUDA event recorded after the non-blocking copy that read it has completed
          (``to_device``).  (a) is read from CPython's reference count (``OutputPool.get``); a
          trainer that keeps a batch keeps its arrays out of the pool, which allocates others (it
          keeps at most ``cap`` per shape).  No array is ever in two live batches.
        * ``ring`` buffers and ``pool`` are borrowed from ``access.buffers`` (exclusively: one
          stream at a time) and given back by ``close`` once no thread can touch them.

    Shutdown (``close``; the same code for every end):
        * normal end: the stream has taken every batch and finished its range checks
          (``finish_checks``, which may raise StoreDamagedError); nothing is in flight, so ``close``
          only joins idle threads, closes windows and returns the buffers.
        * an exception in a worker (a read, a checksum, a load, a copy) reaches the consumer
          through the futures (window load → ``win.ready`` → the job's ``win.wait()`` → the batch's
          future) and is raised from the trainer's ``next()``; the generator's ``with`` block then
          calls ``close``.  Errors of other jobs still in flight are dropped.
        * the consumer abandons the iterator (``break``, ``del``, ``close()``, garbage collection, an
          exception thrown into the generator): ``GeneratorExit`` at the ``yield`` → ``close``.
        ``close`` runs, in order: (1) cancel assembly jobs not started and wait for running ones
        (they read windows and write output arrays); (2) set every slot's reader events (cancelled
        jobs never set theirs, and a staged load waiting for them would block the loader forever);
        (3) shut the loader down (running loads finish, queued ones are cancelled); (4) shut ``io``
        down (afterwards no thread touches a descriptor or a staging buffer); (5) close the
        windows; (6) give the staging buffers and the output pool back to ``access.buffers``.
        * interpreter finalisation (an unfinished stream collected at exit): ``close`` does nothing;
          the executors' threads may be gone already and the OS releases descriptors and memory."""

    def __init__(self, access: SnapshotAccess, *, io_threads: int, assembly_threads: int, ring: int,
                 pool_cap: int, cuda: bool, buffer_key: tuple, make_buffers: Callable[[], WindowBuffers]):
        self.access = access
        self._cuda, self._buffer_key, self._make_buffers = cuda, buffer_key, make_buffers
        self.pool: OutputPool = access.buffers.take(("out", cuda)) or OutputPool(cap=pool_cap, pinned=cuda)
        self.ranges = RangeChecks(access)  # CRC-32C of the byte ranges read, per chunk (verify_reads)
        self.windows: dict[int, Window] = {}
        self.ring: list[WindowBuffers | None] = [None] * ring
        self.slot_users: list[list[threading.Event]] = [[] for _ in range(ring)]
        self.files = FileHandles()
        self.assemble = ThreadPoolExecutor(assembly_threads, thread_name_prefix="actlake-batch")
        self.io = ThreadPoolExecutor(io_threads, thread_name_prefix="actlake-io")
        self.loader = ThreadPoolExecutor(1, thread_name_prefix="actlake-window")
        self.inflight: deque[Future] = deque()
        self._closed = False

    def __enter__(self) -> StreamRuntime:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    # ---- staging --------------------------------------------------------------------------------
    def staging(self, k: int) -> WindowBuffers:
        """The staging buffer of ring slot ``k`` (borrowed from the dataset's cache on first use)."""
        buf = self.ring[k]
        if buf is None:
            buf = self.ring[k] = self.access.buffers.take(self._buffer_key) or self._make_buffers()
        return buf

    def load(self, win: StagedWindow, k: int) -> None:
        """Load ``win`` into ring slot ``k`` on the loader thread, once the batches reading the
        slot's previous window are done."""
        after, self.slot_users[k] = self.slot_users[k], win.readers
        win.ready = self.loader.submit(win.load, self.io, after)

    # ---- batches --------------------------------------------------------------------------------
    def submit(self, fill: Callable[[list, OutputPool], Filled], batches: list, windows: Iterable[Window]) -> None:
        """Queue one assembly job filling ``batches`` (their runs in ``windows``) from the pool."""
        done = threading.Event()
        for win in windows:
            win.readers.append(done)
        self.inflight.append(self.assemble.submit(self._build, fill, batches, done))

    def _build(self, fill: Callable[[list, OutputPool], Filled], batches: list, done: threading.Event) -> Filled:
        """Run one assembly job (in an assembly thread); ``done`` tells staged windows it has read them."""
        try:
            return fill(batches, self.pool)
        finally:
            done.set()

    def next_filled(self) -> Filled:
        """The oldest job's batches (waits for it; raises what the job or a window it read raised)."""
        return self.inflight.popleft().result()

    def to_device(self, out: dict[str, torch.Tensor], arrays: list, device: torch.device) -> dict[str, torch.Tensor]:
        """``out`` copied to ``device`` (non-blocking); with pinned outputs, ``arrays`` are fenced
        until the copies have run (rule (b) of the class docstring)."""
        out = {k: v.to(device, non_blocking=True) for k, v in out.items()}
        if self._cuda:  # the pinned sources may be reused once these copies have run
            event = torch.cuda.Event()
            event.record()
            for a in arrays:
                self.pool.fence(a, event)
        return out

    def retire(self, w: int) -> None:
        """Close window ``w`` (every batch reading it has been received)."""
        self.windows.pop(w).close()

    def finish_checks(self) -> None:
        """Finish the range checks of chunks still open (none once every window is retired)."""
        for key in self.ranges.pending():
            self.ranges.finish(key)

    # ---- shutdown -------------------------------------------------------------------------------
    def close(self, _finalizing: Callable[[], bool] = sys.is_finalizing) -> None:
        """Stop every thread and give the buffers back, in the order of the class docstring."""
        if self._closed or _finalizing():  # an unfinished stream at interpreter exit: the OS cleans up
            return
        self._closed = True
        for f in self.inflight:
            f.cancel()
        self.assemble.shutdown(wait=True, cancel_futures=True)
        for readers in self.slot_users:  # cancelled batches never ran: let pending loads go on
            for e in readers:
                e.set()
        self.loader.shutdown(wait=True, cancel_futures=True)
        self.io.shutdown(wait=True, cancel_futures=True)
        for win in self.windows.values():
            win.close()
        self.windows.clear()
        for buf in self.ring:
            if buf is not None:
                self.access.buffers.give(self._buffer_key, buf)
        self.ring = [None] * len(self.ring)
        self.access.buffers.give(("out", self._cuda), self.pool)
