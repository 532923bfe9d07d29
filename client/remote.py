"""``RemoteDataset``: the ``ActivationDataset`` API over an actlake Flight server (``grpc://host:port/name``).

The server runs the real loader; a remote stream's batches are bit-identical, in the same order,
to ``ds.batches(...)`` on the store opened directly, and its ``state_dict()`` equals the local
stream's at the same step (the server computes it), so a checkpoint taken remotely resumes
locally and vice versa.  Batches arrive as Arrow record batches (service/flight_server.py) and
become tensors over the received buffers (``np.frombuffer`` + ``torch.from_numpy``: no copy after the network
receive); a reader thread keeps ``prefetch`` batches queued so the trainer never waits on a
round trip.  If the server goes away mid-stream, the reader reconnects and resumes at the next
batch (the ticket carries the stream's state), for up to ``reconnect_s`` seconds."""
from __future__ import annotations

import json
import os
import queue
import threading
import time
import warnings
from typing import TYPE_CHECKING, Any, Iterator
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import torch

from actlake.schemas import errors as E
from actlake.schemas.manifest import Manifest
from actlake.schemas.stream import StreamSpec
from actlake.schemas.wire import (ACTION_INFO, ACTION_PLAN, ACTION_STATS, ProvenanceTicket, SampleTicket, StreamTicket,
                                  TakeTicket, check_name, encode)
from actlake.store.dtypes import STORAGE, TORCH

if TYPE_CHECKING:
    from actlake.client.torch_data import TorchBatches

# Tensors are views over received Arrow buffers, which Arrow marks read-only (nothing else uses them)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

_TYPED = {c.__name__: c for c in (E.HookError, E.RowIdError, E.StreamStateError, E.QueryError, E.JobSpecError)}
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


def parse_uri(uri: str) -> tuple[str, str]:
    """``grpc://host:port/name`` → (Flight location, dataset name).

    Raises:
        RemoteError: no host/port, or a name that is not one plain dataset name (no paths).
    """
    parts = urlsplit(uri)
    if parts.scheme not in ("grpc", "grpc+tls") or not parts.hostname or parts.port is None:
        raise E.RemoteError(f"remote dataset URIs look like grpc://HOST:PORT/NAME, got {uri!r}")
    if parts.query or parts.fragment or parts.username or parts.password:
        raise E.RemoteError(f"remote dataset URI {uri!r} may not have a query, fragment or user info")
    name = parts.path[1:] if parts.path.startswith("/") else parts.path
    check_name(name)
    return f"{parts.scheme}://{parts.netloc}", name


class RemoteDataset:
    """A dataset served by ``actlake serve``; the same API as ``ActivationDataset``.

    Args:
        uri: ``grpc://host:port/name`` or ``grpc+tls://host:port/name``.
        storage_options: ``token`` (default: env ``ACTLAKE_TOKEN``), ``tls_root_certs`` (PEM bytes
            or a path; default: the system roots), ``timeout`` (seconds per metadata call, 30),
            ``reconnect_s`` (how long a stream retries a lost server, 30).

    Raises:
        RemoteError: unreachable server, refused token, unknown dataset.
    """

    def __init__(self, uri: str, storage_options: dict[str, Any] | None = None):
        opts = dict(storage_options or {})
        self.location, self.name = parse_uri(uri)
        self._uri = uri
        token = opts.pop("token", None) or os.environ.get("ACTLAKE_TOKEN")
        self._headers = [(b"authorization", f"Bearer {token}".encode())] if token else []
        roots = opts.pop("tls_root_certs", None) or os.environ.get("ACTLAKE_TLS_ROOT_CERTS")
        if isinstance(roots, str) and os.path.exists(roots):
            with open(roots, "rb") as f:
                roots = f.read()
        self._roots = roots.encode() if isinstance(roots, str) else roots
        self.timeout = float(opts.pop("timeout", 30.0))
        self.reconnect_s = float(opts.pop("reconnect_s", 30.0))
        if opts:
            raise E.RemoteError(f"unknown storage_options for a remote dataset: {sorted(opts)}")
        self._client: flight.FlightClient | None = None
        self._pid = -1
        info = self._action(ACTION_INFO, {"dataset": self.name})
        self.manifest: Manifest = Manifest.model_validate(info["manifest"])
        self._num_rows = int(info["num_rows"])
        self._hooks = {h: {**v, "shape": tuple(v["shape"])} for h, v in info["hooks"].items()}
        self.snapshot_version = info["snapshot_version"]

    # ---- connection ---------------------------------------------------------------------------
    @property
    def client(self) -> flight.FlightClient:
        """The Flight client of this process (a forked DataLoader worker opens its own)."""
        if self._client is None or self._pid != os.getpid():
            kw = {"tls_root_certs": self._roots} if self._roots else {}
            self._client, self._pid = flight.FlightClient(self.location, **kw), os.getpid()
        return self._client

    def _options(self, timeout: float | None = None) -> flight.FlightCallOptions:
        return flight.FlightCallOptions(headers=self._headers, timeout=timeout)

    def _action(self, kind: str, body: dict[str, Any]) -> Any:
        try:
            results = list(self.client.do_action(flight.Action(kind, encode(body)), self._options(self.timeout)))
        except flight.FlightError as e:
            _raise(e, f"{self._uri}: {kind}")
        except pa.ArrowException as e:
            raise E.RemoteError(f"{self._uri}: {kind}: {e}") from None
        return json.loads(results[0].body.to_pybytes())

    def _get(self, ticket, what: str) -> pa.Table:
        try:
            return self.client.do_get(flight.Ticket(encode(ticket)), self._options(self.timeout)).read_all()
        except flight.FlightError as e:
            _raise(e, f"{self._uri}: {what}")
        except pa.ArrowException as e:
            raise E.RemoteError(f"{self._uri}: {what}: {e}") from None
        raise AssertionError  # unreachable

    def stats(self) -> dict[str, Any]:
        """The server's open streams and memory: ``{"streams", "streams_opened", "rss_bytes", "datasets"}``."""
        return self._action(ACTION_STATS, {})

    # ---- metadata -----------------------------------------------------------------------------
    @property
    def uri(self) -> str:
        return self._uri

    @property
    def num_rows(self) -> int:
        return self._num_rows

    def __len__(self) -> int:
        return self._num_rows

    @property
    def hooks(self) -> dict[str, dict[str, Any]]:
        """name → {"shape": per-row shape tuple, "dtype": logical dtype, "codec"}."""
        return {h: dict(v) for h, v in self._hooks.items()}

    def __repr__(self) -> str:
        return f"RemoteDataset({self._uri!r}, rows={self._num_rows:,}, hooks={list(self._hooks)})"

    def _check_hooks(self, hooks: list[str] | str | None) -> list[str]:
        if hooks is None:
            return list(self._hooks)
        hooks = [hooks] if isinstance(hooks, str) else list(hooks)
        bad = [h for h in hooks if h not in self._hooks]
        if bad:
            raise E.HookError(f"unknown hook(s) {bad}; this dataset has {list(self._hooks)}")
        return hooks

    # ---- random access ------------------------------------------------------------------------
    def take(self, row_ids, hooks: list[str] | str | None = None) -> dict[str, torch.Tensor]:
        """Rows by global id, in the order given: ``{hook: tensor[N, *shape]}`` of the logical dtype.

        Raises:
            HookError: unknown hook.  RowIdError: an id outside [0, num_rows).  RemoteError: the server refused.
        """
        hooks = self._check_hooks(hooks)
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        parts = [self._get(TakeTicket(dataset=self.name, row_ids=ids[i:i + 65536].tolist(), hooks=tuple(hooks)), "take")
                 for i in range(0, max(len(ids), 1), 65536)]
        cols = [table_tensors(p) for p in parts]
        return {h: cols[0][h] if len(cols) == 1 else torch.cat([c[h] for c in cols]) for h in hooks}

    def provenance(self, row_ids) -> pa.Table:
        """Provenance rows (``row_id`` first) for the given global row ids, in the order given."""
        ids = np.asarray(row_ids, dtype=np.int64).reshape(-1)
        parts = [self._get(ProvenanceTicket(dataset=self.name, row_ids=ids[i:i + 65536].tolist()), "provenance")
                 for i in range(0, max(len(ids), 1), 65536)]
        return pa.concat_tables(parts) if len(parts) > 1 else parts[0]

    def sample(self, n: int, seed: int = 0, hooks: list[str] | str | None = None, filter: Any = None
               ) -> dict[str, torch.Tensor]:
        """``n`` random rows (``row_id`` included), the same rows as ``ActivationDataset.sample``."""
        if hasattr(filter, "model_dump"):
            filter = filter.model_dump(mode="json")
        hooks_ = tuple(self._check_hooks(hooks)) if hooks is not None else None
        return table_tensors(self._get(SampleTicket(dataset=self.name, n=n, seed=seed, hooks=hooks_, filter=filter),
                                       "sample"))

    # ---- streaming ----------------------------------------------------------------------------
    def batches(self, batch_size: int, hooks: list[str] | str | None = None, shuffle: bool = True, seed: int = 0,
                epoch: int = 0, rank: int = 0, world_size: int = 1, drop_last: bool = True, device=None,
                with_provenance: bool = False, filter: Any = None, prefetch_batches: int = 4, **kw
                ) -> "RemoteBatchStream":
        """Batches ``{hook: tensor[B, ...]}`` (+ ``row_id`` int64[B] with provenance), identical to
        ``ActivationDataset.batches`` with the same arguments; ``prefetch_batches`` are kept queued.

        Raises:
            ValueError (StreamStateError / pydantic): bad batch_size, rank, world_size.
            HookError: unknown hook.  RemoteError: the server refused the stream (e.g. over its caps).
        """
        for k in ("io_threads", "prefetch"):  # the server's loader settings, not the client's
            kw.pop(k, None)
        if hooks is not None:
            self._check_hooks(hooks)
        spec = StreamSpec.from_kwargs(batch_size, hooks, shuffle, seed, epoch, rank, world_size, drop_last,
                                      with_provenance, filter, **kw)
        return RemoteBatchStream(self, spec, device, prefetch_batches)

    def torch_dataset(self, batch_size: int, **kw) -> "TorchBatches":
        """A ``torch.utils.data.IterableDataset`` of whole batches, as ``ActivationDataset.torch_dataset``."""
        from actlake.client.torch_data import TorchBatches

        return TorchBatches(self, batch_size, **kw)  # type: ignore[arg-type]


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
    t = torch.from_numpy(a)  # read-only view of the received bytes
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
