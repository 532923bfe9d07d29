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
import warnings
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import numpy as np
import pyarrow as pa
import pyarrow.flight as flight
import torch

from actlake.client.remote_stream import RemoteBatchStream, _raise, table_tensors
from actlake.schemas import errors as E
from actlake.schemas.manifest import Manifest
from actlake.schemas.stream import StreamSpec
from actlake.schemas.wire import (
    ACTION_INFO,
    ACTION_STATS,
    DocumentsTicket,
    ProvenanceTicket,
    SampleTicket,
    TakeTicket,
    check_name,
    encode,
)

if TYPE_CHECKING:
    from actlake.client.remote_query import RemoteQuery
    from actlake.client.torch_data import TorchBatches

# Tensors are views over received Arrow buffers, which Arrow marks read-only (nothing else uses them)
warnings.filterwarnings("ignore", message="The given NumPy array is not writable", category=UserWarning)

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
    """A dataset served by ``actlake serve``: the ``Dataset`` protocol (client/protocol.py) that
    ``ActivationDataset`` satisfies too, with the same results for the same arguments.

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
        try:
            self.manifest: Manifest = Manifest.model_validate(info["manifest"])
        except ValueError as e:  # pydantic.ValidationError: a server of another version, or a bug
            first = str(e).strip().splitlines()
            raise E.RemoteError(f"{uri}: the server sent a manifest this client cannot read "
                                f"({'; '.join(first[:3])})") from None
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

    def documents(self, doc_ids) -> pa.Table:
        """As ``ActivationDataset.documents``: ``doc_id``, ``source``, ``index``, ``label`` per id, in order.

        Raises:
            RowIdError: ids that are not integers or that no committed fragment holds.
            QueryError: more ids than the server's ``--max-query-rows``."""
        raw = np.asarray(doc_ids).reshape(-1)
        if raw.size and not np.issubdtype(raw.dtype, np.integer):
            raise E.RowIdError(f"doc ids must be integers, got {raw.dtype}")
        return self._get(DocumentsTicket(dataset=self.name, doc_ids=raw.astype(np.int64).tolist()), "documents")

    @property
    def query(self) -> RemoteQuery:
        """``ds.query`` run on the server: topk, bottomk, sample_intervals, stats, fetch (client/remote_query.py)."""
        from actlake.client.remote_query import RemoteQuery

        return self.__dict__.setdefault("_query", RemoteQuery(self))  # pyright: ignore[reportArgumentType]

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
                ) -> RemoteBatchStream:
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
        # same class at run time; pyright takes client/remote.py and its actlake.client link for two modules
        return RemoteBatchStream(self, spec, device, prefetch_batches)  # pyright: ignore[reportArgumentType]

    def torch_dataset(self, batch_size: int, **kw) -> TorchBatches:
        """A ``torch.utils.data.IterableDataset`` of whole batches, as ``ActivationDataset.torch_dataset``."""
        from actlake.client.torch_data import TorchBatches

        return TorchBatches(self, batch_size, **kw)  # type: ignore[arg-type]
