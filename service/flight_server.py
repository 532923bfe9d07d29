"""Arrow Flight server: serves shuffled training batches and row access of local/S3 stores by name.

Protocol (schemas/wire.py): ``do_get`` with a JSON ticket streams a batch stream (one Arrow
record batch per training batch), or answers take / provenance / sample; ``do_action`` answers
``info`` / ``plan`` / ``stats``; ``list_flights`` / ``get_flight_info`` describe the served set.

Each batch column is ``fixed_size_binary(row_bytes)`` holding rows in the storage dtype (bf16
as its uint16 bits); field metadata ``actlake.dtype`` / ``actlake.shape`` say how to view it.
The column's data buffer *is* the loader's batch output (no copy on the server; gRPC sends it).

Security: with a token, a server middleware refuses every RPC whose ``authorization`` header is
not ``Bearer <token>`` (UNAUTHENTICATED; compared with ``hmac.compare_digest``).  Clients name
datasets, never paths: names are keys of the served set (``check_name``).  Store credentials
stay in the server process: manifests are sent with secret-looking keys redacted, URIs never.

Memory: rows per request <= ``Limits.max_batch_rows``; batches read ahead per stream <=
``Limits.max_readahead``; shuffle window <= ``Limits.max_buffer_rows``; open streams <=
``Limits.max_streams``.  A stream whose client goes away is closed by the generator's
``finally`` (gRPC ends the call; pyarrow drops the generator), which returns the loader's
threads and buffers."""
from __future__ import annotations

import hmac
import json
import os
import re
import threading
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Iterator

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import torch

from actlake.schemas.errors import ActlakeError, RemoteError, StreamStateError
from actlake.schemas.stream import StreamSpec
from actlake.schemas.wire import (ACTION_INFO, ACTION_PLAN, ACTION_QUERY_STATS, ACTION_STATS, ACTIONS,
                                  DocumentsTicket, ProvenanceTicket, QueryTicket, SampleTicket, StreamTicket,
                                  TakeTicket, check_name, decode_body, decode_ticket, encode)
from actlake.service.flight_query import QueryBusy, QueryRunner
from actlake.store.dtypes import STORAGE

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset

# Key names that hold secrets in storage options and credential configs (s3fs, gcsfs, adlfs, boto),
# matched whole and case-insensitively: a substring match ("token") also redacted manifest fields
# such as `tokenizer`, `max_tokens`, `bos_token`, and the client could no longer parse the manifest.
SECRET_KEY = re.compile(r"(aws_)?(secret|secret_key|secret_access_key|access_key|access_key_id|session_token)|key|"
                        r"token|password|passwd|credentials?|client_secret|private_key|api_key|account_key|"
                        r"sas_token|access_token|refresh_token|auth_token|bearer_token", re.I)


@dataclass(frozen=True)
class Limits:
    """What one client can make the server hold (see ``actlake serve --help``)."""

    max_batch_rows: int = 65536  # rows per batch / take / provenance / sample request
    max_readahead: int = 8  # batches assembled ahead per stream
    max_buffer_rows: int = 1 << 20  # shuffle window (rows staged per window) a client may ask for
    max_streams: int = 64  # concurrent do_get calls
    max_query_rows: int = 65536  # k, bins x per_bin, fetched rows, document ids, rows of a query result
    max_queries: int = 4  # queries running at once (more are refused as busy)


def rss_bytes() -> int:
    """Resident set size of this process in bytes (Linux /proc; 0 elsewhere)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        return 0


def limit_malloc_arenas(n: int | None = None) -> bool:
    """Cap glibc's malloc arenas for this process at ``n`` (default: the CPU count, at least 2).

    Every stream runs its loader in fresh threads, and glibc gives new threads arenas of their own
    (up to 8 per core), each keeping the memory freed in it resident: a server that opened and
    abandoned streams grew ~2 MB per stream until every arena was warm (measured with
    tests/remote/test_remote_lifecycle.py's churn; flat with 2 arenas).  Call it early, before the
    process has started many threads (glibc fixes its arena limit once it has more than 8).
    Returns False where there is no glibc ``mallopt`` (the limit is then the allocator's own)."""
    import ctypes
    import ctypes.util

    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    m_arena_max = -8  # <malloc.h> M_ARENA_MAX
    return bool(mallopt(m_arena_max, int(n or max(2, os.cpu_count() or 2))))


def redact(obj: Any) -> Any:
    """A copy of a JSON-like value with the values of secret-looking keys replaced by '***'."""
    if isinstance(obj, dict):
        return {k: "***" if isinstance(k, str) and SECRET_KEY.fullmatch(k) and v is not None else redact(v)
                for k, v in obj.items()}
    if isinstance(obj, list):
        return [redact(v) for v in obj]
    return obj


def _storage_array(t: torch.Tensor) -> np.ndarray:
    """A CPU tensor's bytes as a C-contiguous numpy array of its storage dtype (a view when possible)."""
    if t.dtype == torch.bfloat16:
        t = t.view(torch.int16)
    return np.ascontiguousarray(t.numpy())


def batch_schema(ds: "ActivationDataset", hooks: list[str], with_row_id: bool) -> pa.Schema:
    """Schema of a batch: per hook ``fixed_size_binary(row_bytes)`` (+ ``row_id`` int64)."""
    fields = []
    for h in hooks:
        info = ds.manifest.hooks[h]
        row_bytes = int(np.prod(info.shape, dtype=np.int64)) * STORAGE[info.dtype].itemsize
        fields.append(pa.field(h, pa.binary(row_bytes), nullable=False,
                               metadata={"actlake.dtype": info.dtype, "actlake.shape": json.dumps(list(info.shape))}))
    if with_row_id:
        fields.append(pa.field("row_id", pa.int64(), nullable=False))
    return pa.schema(fields)


def to_record_batch(batch: dict[str, torch.Tensor], schema: pa.Schema) -> pa.RecordBatch:
    """Wrap a batch ``{hook: tensor[B, ...]}`` (+ ``row_id``) as one record batch without copying."""
    cols = []
    n = -1
    for field in schema:
        a = _storage_array(batch[field.name])
        n = len(a)
        if field.name == "row_id":
            cols.append(pa.array(a))
        else:
            cols.append(pa.Array.from_buffers(field.type, n, [None, pa.py_buffer(a.reshape(-1).view(np.uint8))]))
    return pa.RecordBatch.from_arrays(cols, schema=schema)


class TokenAuthFactory(flight.ServerMiddlewareFactory):
    """Refuses every call whose ``authorization`` header is not ``Bearer <token>`` (constant time)."""

    def __init__(self, token: str):
        super().__init__()
        self._expected = f"Bearer {token}".encode()

    def start_call(self, info, headers):
        values = headers.get("authorization") or [""]
        got = values[0] if isinstance(values[0], bytes) else str(values[0]).encode()
        if not hmac.compare_digest(got, self._expected):
            raise flight.FlightUnauthenticatedError("actlake: missing or wrong token")
        return None


class ActlakeFlightServer(flight.FlightServerBase):
    """Serve opened datasets by name.

    Args:
        datasets: name -> opened ``ActivationDataset`` (names must pass ``check_name``).
        location: ``grpc://host:port`` or ``grpc+tls://host:port`` (port 0: any free port).
        token: if set, required on every call (see ``TokenAuthFactory``).
        tls: (certificate PEM bytes, key PEM bytes) for ``grpc+tls``.
        limits: caps on what one request may make the server hold.
        log: where to report served streams (one line each; never a token or a credential).
    """

    def __init__(self, datasets: dict[str, "ActivationDataset"], location: str, token: str | None = None,
                 tls: tuple[bytes, bytes] | None = None, limits: Limits = Limits(), log=None):
        for name in datasets:
            check_name(name)
        self._datasets = dict(datasets)
        self._limits = limits
        self._log = log or (lambda msg: None)
        self._lock = threading.Lock()
        self._ds_locks = {n: threading.Lock() for n in datasets}
        self._streams = 0
        self._opened = 0
        self._queries = QueryRunner(limits.max_query_rows, limits.max_queries)
        self.closing = threading.Event()
        middleware = {"auth": TokenAuthFactory(token)} if token else {}
        super().__init__(location, tls_certificates=[tls] if tls else None, middleware=middleware)

    # ---- helpers ------------------------------------------------------------------------------
    def _get(self, name: str) -> "ActivationDataset":
        ds = self._datasets.get(name)
        if ds is None:
            raise flight.FlightServerError(f"unknown dataset {name!r}; this server serves {sorted(self._datasets)}")
        return ds

    def _rows_cap(self, n: int, what: str) -> None:
        if n > self._limits.max_batch_rows:
            raise flight.FlightServerError(f"{what} of {n} rows exceeds this server's cap of "
                                           f"{self._limits.max_batch_rows} (--max-batch-rows)")

    def _check_spec(self, spec: StreamSpec) -> None:
        self._rows_cap(spec.batch_size, "batch_size")
        if spec.buffer_rows is not None and spec.buffer_rows > self._limits.max_buffer_rows:
            raise flight.FlightServerError(f"buffer_rows {spec.buffer_rows} exceeds this server's cap of "
                                           f"{self._limits.max_buffer_rows} (--max-buffer-rows)")

    def _stream(self, ds: "ActivationDataset", t: StreamTicket):
        self._check_spec(t.spec)
        s = ds.batches(**t.spec.kwargs(), prefetch_batches=self._limits.max_readahead)
        if t.state is not None:  # compared as JSON (the ticket's tuples arrived as lists)
            mine = s.state_dict()
            diff = {k: (t.state.get(k), v) for k, v in mine.items()
                    if k != "step" and _json(t.state.get(k)) != _json(v)}
            if diff:
                raise StreamStateError(f"state_dict is for a different stream: {diff}")
            s.load_state_dict({**mine, "step": t.state.get("step", 0)})
        return s

    # ---- Flight methods -----------------------------------------------------------------------
    def do_get(self, context, ticket):
        try:
            t = decode_ticket(ticket.ticket)
            ds = self._get(t.dataset)
            if isinstance(t, StreamTicket):
                with self._lock:
                    if self._streams >= self._limits.max_streams:
                        raise flight.FlightUnavailableError(
                            f"server busy: {self._streams} streams open (--max-streams {self._limits.max_streams})")
                    self._streams += 1
                    self._opened += 1
                try:
                    stream = self._stream(ds, t)
                    schema = batch_schema(ds, stream.hooks, t.spec.with_provenance)
                except BaseException:
                    with self._lock:
                        self._streams -= 1
                    raise
                self._log(f"stream {t.dataset} rank {t.spec.rank}/{t.spec.world_size} epoch {t.spec.epoch} "
                          f"from step {stream.step} of {len(stream)}")
                return flight.GeneratorStream(schema, self._serve_stream(stream, schema, context))
            if isinstance(t, QueryTicket):  # no dataset lock: queries read through their own readers
                return flight.RecordBatchStream(self._queries.table(ds, t.method, t.args))
            if isinstance(t, DocumentsTicket):
                return flight.RecordBatchStream(self._queries.documents(ds, t.doc_ids))
            return flight.RecordBatchStream(self._answer(ds, t))
        except flight.FlightError:
            raise
        except Exception as e:
            raise _refusal(e, self._log) from None

    def _serve_stream(self, stream, schema: pa.Schema, context) -> Iterator[pa.RecordBatch]:
        it = iter(stream)
        end = "client gone"
        try:
            for batch in it:
                if self.closing.is_set():
                    end = "server shutting down"
                    raise flight.FlightUnavailableError("server shutting down")
                if context.is_cancelled():
                    return
                yield to_record_batch(batch, schema)
            end = "complete"
        finally:
            close = getattr(it, "close", None)
            if close is not None:
                close()  # joins the loader's threads and returns its buffers
            with self._lock:
                self._streams -= 1
            self._log(f"stream ended at step {stream.step} of {len(stream)} ({end})")

    def _answer(self, ds: "ActivationDataset", t) -> pa.Table:
        with self._ds_locks[t.dataset]:
            if isinstance(t, TakeTicket):
                self._rows_cap(len(t.row_ids), "take")
                out = ds.take(t.row_ids, list(t.hooks) if t.hooks is not None else None)
                return pa.Table.from_batches([to_record_batch(out, batch_schema(ds, list(out), False))])
            if isinstance(t, ProvenanceTicket):
                self._rows_cap(len(t.row_ids), "provenance")
                return ds.provenance(t.row_ids)
            assert isinstance(t, SampleTicket)
            self._rows_cap(t.n, "sample")
            out = ds.sample(t.n, seed=t.seed, hooks=list(t.hooks) if t.hooks is not None else None, filter=t.filter)
            hooks = [h for h in out if h != "row_id"]
            return pa.Table.from_batches([to_record_batch(out, batch_schema(ds, hooks, "row_id" in out))])

    def do_action(self, context, action):
        try:
            body = decode_body(action.body.to_pybytes() if action.body is not None else b"")
            kind = action.type
            if kind == ACTION_STATS:
                with self._lock:
                    d = {"streams": self._streams, "streams_opened": self._opened}
                d.update(rss_bytes=rss_bytes(), datasets=sorted(self._datasets))
            elif kind == ACTION_INFO:
                name = check_name(body.get("dataset", ""))
                d = self._info(name, self._get(name))
            elif kind == ACTION_QUERY_STATS:
                name = check_name(body.get("dataset", ""))
                d = self._queries.stats(self._get(name), body.get("args") or {})
            elif kind == ACTION_PLAN:
                t = StreamTicket(dataset=body.get("dataset", ""), spec=body.get("spec"))
                s = self._stream(self._get(t.dataset), t)
                d = {"state": s.state_dict(), "num_batches": len(s)}
            else:
                raise flight.FlightServerError(f"unknown action {kind!r}; actions: {sorted(ACTIONS)}")
        except flight.FlightError:
            raise
        except Exception as e:
            raise _refusal(e, self._log) from None
        return [flight.Result(json.dumps(d).encode())]

    def list_actions(self, context):
        return list(ACTIONS.items())

    def _info(self, name: str, ds: "ActivationDataset") -> dict[str, Any]:
        return {"name": name, "num_rows": ds.num_rows, "snapshot_version": ds.snapshot.version,
                "hooks": {h: {**v, "shape": list(v["shape"])} for h, v in ds.hooks.items()},
                "manifest": redact(ds.manifest.model_dump(mode="json"))}

    def _flight_info(self, name: str) -> flight.FlightInfo:
        ds = self._datasets[name]
        schema = batch_schema(ds, list(ds.manifest.hooks), False)
        spec = StreamSpec(batch_size=min(4096, self._limits.max_batch_rows))
        ticket = flight.Ticket(encode(StreamTicket(dataset=name, spec=spec)))
        row_bytes = sum(f.type.byte_width for f in schema)
        return flight.FlightInfo(schema, flight.FlightDescriptor.for_path(name), [flight.FlightEndpoint(ticket, [])],
                                 ds.num_rows, ds.num_rows * row_bytes)

    def list_flights(self, context, criteria):
        for name in sorted(self._datasets):
            yield self._flight_info(name)

    def get_flight_info(self, context, descriptor):
        path = [p.decode() if isinstance(p, bytes) else p for p in (descriptor.path or [])]
        if len(path) != 1:
            raise flight.FlightServerError("describe a dataset by a path of one name")
        try:
            name = check_name(path[0])
        except RemoteError as e:
            raise flight.FlightServerError(str(e)) from None
        self._get(name)
        return self._flight_info(name)

    def get_schema(self, context, descriptor):
        return flight.SchemaResult(self.get_flight_info(context, descriptor).schema)

    def stop(self) -> None:
        """End every stream at its next batch, then stop serving (call from a non-RPC thread)."""
        self.closing.set()
        self.shutdown()


def _json(v: Any) -> Any:
    return json.loads(json.dumps(v))


def _refusal(e: Exception, log) -> flight.FlightError:
    """A user error (bad argument, unknown hook/row, foreign state) as a FlightServerError naming its
    type in ``extra_info``; anything else as an internal error, logged without its arguments."""
    if isinstance(e, QueryBusy):
        return flight.FlightUnavailableError(str(e))
    if isinstance(e, (ActlakeError, ValueError, KeyError, IndexError)):
        msg = str(e.args[0]) if isinstance(e, KeyError) and e.args else str(e)
        return flight.FlightServerError(msg, extra_info=type(e).__name__.encode())
    log(f"internal error: {type(e).__name__}")
    return flight.FlightInternalError(f"internal server error ({type(e).__name__})")
