"""The remote side of a batch stream: received record batches as tensors, and the prefetching reader.

``RemoteBatchStream`` mirrors ``client/batches.py``'s ``BatchStream`` contract (iterate, ``len``,
``state_dict`` / ``load_state_dict``) over a Flight ``do_get`` (service/flight_server.py)."""
from __future__ import annotations

import atexit
import json
import queue
import threading
import time
import warnings
import weakref
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import torch

from actlake.schemas import errors as E
from actlake.schemas.stream import StreamSpec
from actlake.schemas.wire import ACTION_PLAN, StreamTicket, encode
from actlake.store.dtypes import STORAGE, TORCH

# torch warns that a tensor over a read-only array may not be written; a received batch's bytes belong
# to that batch alone, so in-place use is safe.  One filter for this module's calls, set once at import
# (``warnings.catch_warnings`` per call is not thread-safe, and batches are converted on threads).
warnings.filterwarnings("ignore", "The given NumPy array is not writable", UserWarning, __name__)

if TYPE_CHECKING:
    from actlake.client.remote import RemoteDataset

_TYPED = {c.__name__: c for c in (E.HookError, E.RowIdError, E.StreamStateError, E.QueryError, E.JobSpecError,
                                  E.ArgumentError)}
_TYPED.update(KeyError=E.HookError, IndexError=E.RowIdError)


def _raise(e: flight.FlightError, what: str) -> None:
    """Re-raise a Flight error as one actlake error (RemoteError unless the server named a user error)."""
    msg = str(e).split(". Detail:", 1)[0].removeprefix("Flight error: ").strip()
    msg = msg.split("gRPC client debug context", 1)[0].strip().rstrip(".")
    if isinstance(e, flight.FlightUnauthenticatedError) or "Detail: Unauthenticated" in str(e):
        raise E.RemoteError(f"{what}: the server refused the token (set storage_options={{'token': ...}} "
                            "or ACTLAKE_TOKEN)") from None
    kind = (e.extra_info or b"").decode(errors="replace")
    cls = _TYPED.get(kind)
    if cls is not None:
        raise cls(msg) from None
    raise E.RemoteError(f"{what}: {msg}") from None



def column_tensor(col: pa.Array | pa.ChunkedArray, field: pa.Field) -> torch.Tensor:
    """A received column as a tensor over its Arrow buffer (no copy when it is one chunk).

    ``fixed_size_binary`` columns with ``actlake.dtype``/``actlake.shape`` metadata become
    ``tensor[N, *shape]`` of that dtype (bf16 from its uint16 bits); int64 columns ``tensor[N]``."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks != 1 else col.chunk(0)
    meta = field.metadata or {}
    if b"actlake.dtype" not in meta:
        return torch.from_numpy(col.to_numpy(zero_copy_only=False))
    dtype = TORCH[meta[b"actlake.dtype"].decode()]
    shape = tuple(json.loads(meta[b"actlake.shape"]))
    n, width = len(col), field.type.byte_width
    if n == 0:
        return torch.empty((0, *shape), dtype=dtype)
    buf = col.buffers()[1]
    start = col.offset * width
    storage = np.int16 if dtype == torch.bfloat16 else STORAGE[meta[b"actlake.dtype"].decode()]
    a = np.frombuffer(buf, dtype=storage, count=n * width // dtype.itemsize, offset=start)
    t = torch.from_numpy(a)  # a view of the received bytes, no copy (its warning is filtered below)
    return (t.view(torch.bfloat16) if dtype == torch.bfloat16 else t).view(n, *shape)


def table_tensors(t: pa.Table | pa.RecordBatch) -> dict[str, torch.Tensor]:
    return {f.name: column_tensor(t.column(i), f) for i, f in enumerate(t.schema)}


class RemoteBatchStream:
    """A remote ``BatchStream``: iterate for batches; ``state_dict()`` / ``load_state_dict()`` resume.

    The state is the server's own stream state (the local loader's ``state_dict`` at the same step),
    fetched once when the stream is created (action ``plan``)."""

    def __init__(self, ds: RemoteDataset, spec: StreamSpec, device=None, prefetch_batches: int = 4):
        self.ds, self.spec = ds, spec
        self.device = torch.device(device) if device is not None else None
        self.prefetch_batches = max(1, prefetch_batches)
        plan = ds._action(ACTION_PLAN, {"dataset": ds.name, "spec": spec.model_dump(mode="json")})
        self._state0: dict[str, Any] = _local_form(plan["state"])
        self.num_batches = int(plan["num_batches"])
        self.hooks = ds._check_hooks(list(spec.hooks) if spec.hooks is not None else None)
        self.step = int(self._state0.get("step", 0))

    def __len__(self) -> int:
        return self.num_batches

    def state_dict(self) -> dict[str, Any]:
        """Batches consumed so far plus everything that defines the order (equal to the local stream's)."""
        return {**self._state0, "step": self.step}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Jump to the saved step (the server re-plans arithmetically; nothing is replayed).

        Raises:
            StreamStateError: the state belongs to another stream, or its step is out of range.
        """
        mine = {k: v for k, v in self._state0.items() if k != "step"}
        diff = {k: (state.get(k), v) for k, v in mine.items() if _norm(state.get(k)) != _norm(v)}
        if diff:
            raise E.StreamStateError(f"state_dict is for a different stream: {diff}")
        step = int(state["step"])
        if not 0 <= step <= self.num_batches:
            raise E.StreamStateError(f"step {step} outside [0, {self.num_batches}]")
        self.step = step

    def __iter__(self) -> Iterator[dict[str, torch.Tensor]]:
        if self.step >= self.num_batches:
            return
        reader = _Reader(self, self.step)
        try:
            while self.step < self.num_batches:
                item = reader.get()
                if isinstance(item, BaseException):
                    raise item
                if self.device is not None and self.device.type != "cpu":
                    item = {k: v.to(self.device, non_blocking=True) for k, v in item.items()}
                self.step += 1
                yield item
        finally:
            reader.close()


def _local_form(state: dict[str, Any]) -> dict[str, Any]:
    """A state_dict received as JSON in the form the local loader writes it (its filter as
    ``RowFilter.model_dump()``, whose tuples JSON turned into lists), so both compare equal."""
    if isinstance(state.get("filter"), dict):
        from actlake.client.filters import RowFilter

        state = {**state, "filter": RowFilter.model_validate(state["filter"]).model_dump()}
    return state


def _norm(v: Any) -> Any:
    return json.loads(json.dumps(v)) if isinstance(v, (tuple, list, dict)) else v


class _Reader:
    """One background thread that reads a stream from ``step`` into a bounded queue.

    Invariants: the queue holds batches ``step, step+1, ...`` in order, then possibly one
    exception (the stream's end is known from ``num_batches``).  On a lost connection it
    reconnects with a ticket for the next batch not yet queued (so nothing is lost or repeated),
    retrying for ``reconnect_s``.  ``close()`` sets the stop flag, cancels the call (the server
    frees the stream) and joins the thread."""

    def __init__(self, stream: RemoteBatchStream, step: int):
        self.s, self.next = stream, step
        self.q: queue.Queue = queue.Queue(maxsize=stream.prefetch_batches)
        self.stop = threading.Event()
        self.call: flight.FlightStreamReader | None = None
        self.lock = threading.Lock()
        self.thread = threading.Thread(target=self._run, name="actlake-remote", daemon=True)
        _LIVE.add(self)
        self.thread.start()

    def _open(self) -> flight.FlightStreamReader:
        s = self.s
        state = {**s._state0, "step": self.next}
        t = StreamTicket(dataset=s.ds.name, spec=s.spec, state=state)
        call = s.ds.client.do_get(flight.Ticket(encode(t)), s.ds._options())
        with self.lock:
            self.call = call
        if self.stop.is_set():
            call.cancel()
        return call

    def _put(self, item: Any) -> bool:
        while not self.stop.is_set():
            try:
                self.q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def _run(self) -> None:
        s, deadline = self.s, None
        while not self.stop.is_set() and self.next < s.num_batches:
            try:
                call = self._open()
                while self.next < s.num_batches and not self.stop.is_set():
                    chunk = call.read_chunk().data
                    deadline = None  # progress: a later loss gets a fresh reconnect budget
                    if not self._put(table_tensors(chunk)):
                        return
                    self.next += 1
                if self.next >= s.num_batches:
                    return
            except flight.FlightUnavailableError as e:
                if self.stop.is_set():
                    return
                deadline = deadline or time.monotonic() + s.ds.reconnect_s
                s.ds._client = None  # a fresh channel: a failed one waits out gRPC's reconnect backoff
                if time.monotonic() > deadline:
                    self._put(E.RemoteError(f"{s.ds.uri}: server unavailable for {s.ds.reconnect_s:.0f} s: "
                                            f"{str(e).splitlines()[0]}"))
                    return
                time.sleep(0.2)
            except flight.FlightError as e:
                if self.stop.is_set():
                    return
                try:
                    _raise(e, f"{s.ds.uri}: stream")
                except E.ActlakeError as err:
                    self._put(err)
                return
            except (pa.ArrowException, StopIteration) as e:
                if not self.stop.is_set():
                    self._put(E.RemoteError(f"{s.ds.uri}: stream ended early at batch {self.next}: {e}"))
                return
            except BaseException as e:  # never leave the consumer waiting
                self._put(e)
                return

    def get(self) -> Any:
        while True:
            try:
                return self.q.get(timeout=0.5)
            except queue.Empty:
                if not self.thread.is_alive() and self.q.empty():
                    return E.RemoteError(f"{self.s.ds.uri}: stream reader stopped")

    def close(self) -> None:
        self.stop.set()
        with self.lock:
            if self.call is not None:
                try:
                    self.call.cancel()
                except Exception:
                    pass
        self.thread.join(timeout=10)
        _LIVE.discard(self)


# Readers of streams a program left open (an iterator neither exhausted nor closed).  They are
# closed before the interpreter tears down: a reader thread still inside a gRPC call while the
# Flight client's C++ objects are destroyed aborts the process ("terminate called without an
# active exception", exit status 134) after the program's own work is done.
_LIVE: weakref.WeakSet[_Reader] = weakref.WeakSet()


@atexit.register
def _close_open_readers() -> None:
    for r in list(_LIVE):
        r.close()
