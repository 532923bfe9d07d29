"""Queries and document look-ups run on the Flight server (``ds.query.*`` / ``ds.documents``).

A ``QueryTicket`` (do_get) runs ``topk`` / ``bottomk`` / ``sample_intervals`` / ``fetch`` and
streams the result table; action ``query.stats`` runs ``stats`` and returns ``pack``-ed arrays
(schemas/wire.py).  The server's own ``QueryEngine`` (client/query.py) validates the arguments,
so a remote query raises the same ``QueryError`` / ``RowIdError`` as a local one.

Security: only the arguments of the public query signatures are accepted; ``address=`` (a Ray
cluster: the server never connects where a client says) and ``progress=`` (a callable) are
refused; ``k``, ``bins × per_bin``, fetched rows, document ids and every result table are capped
at ``Limits.max_query_rows``; at most ``Limits.max_queries`` queries run at once (the others are
refused as busy, not queued)."""
from __future__ import annotations

import inspect
import threading
from typing import TYPE_CHECKING, Any

import numpy as np
import pyarrow as pa

from actlake.client.query import QueryEngine
from actlake.schemas.errors import QueryError, RemoteError
from actlake.schemas.wire import pack, unpack

if TYPE_CHECKING:
    from actlake.client.dataset import ActivationDataset

_CLIENT_SIDE = {"address", "progress", "threads"}
METHODS = {m: frozenset(inspect.signature(getattr(QueryEngine, m)).parameters) - {"self", "kw"} - _CLIENT_SIDE
           for m in ("topk", "bottomk", "sample_intervals", "stats", "fetch")}
METHODS["bottomk"] = METHODS["topk"] - {"largest"}  # bottomk(**kw) passes them on to topk


class QueryBusy(RemoteError):
    """More than ``max_queries`` queries at once (answered as UNAVAILABLE)."""


class QueryRunner:
    """Runs queries for one server under its caps (see the module docstring)."""

    def __init__(self, max_rows: int, max_queries: int):
        self.max_rows = max_rows
        self._slots = threading.BoundedSemaphore(max_queries)
        self.max_queries = max_queries

    def _check(self, method: str, args: dict[str, Any]) -> dict[str, Any]:
        given = set(args)
        if given & _CLIENT_SIDE:
            raise QueryError(f"{sorted(given & _CLIENT_SIDE)[0]}=: not available on a remote dataset (its queries "
                             "run on the server, with the server's settings)")
        bad = given - METHODS[method]
        if bad:
            raise QueryError(f"{method}() got unknown argument(s) {sorted(bad)}")
        args = unpack(args)
        cap = self.max_rows
        k = args.get("k", 20)
        if isinstance(k, int) and k > cap:
            raise QueryError(f"k: {k} exceeds this server's cap of {cap} rows (--max-query-rows)")
        if method == "sample_intervals":
            n = int(args.get("bins", 11)) * int(args.get("per_bin", 10))
            if n > cap:
                raise QueryError(f"bins x per_bin: {n} exceeds this server's cap of {cap} rows (--max-query-rows)")
        if method == "fetch" and args.get("row_ids") is not None and np.size(args["row_ids"]) > cap:
            raise QueryError(f"row_ids: {np.size(args['row_ids'])} rows exceed this server's cap of {cap} "
                             "(--max-query-rows)")
        return args

    def _slot(self) -> None:
        if not self._slots.acquire(blocking=False):
            raise QueryBusy(f"server busy: {self.max_queries} queries running (--max-queries)")

    def _capped(self, table: pa.Table, what: str) -> pa.Table:
        if table.num_rows > self.max_rows:
            raise QueryError(f"{what}: {table.num_rows} result rows exceed this server's cap of {self.max_rows} "
                             "(--max-query-rows); ask for fewer units / keys")
        return table

    def table(self, ds: ActivationDataset, method: str, args: dict[str, Any]) -> pa.Table:
        """``ds.query.<method>(**args)`` for a table-valued method, checked against the caps.

        Raises:
            QueryError / RowIdError / HookError: as the local query.  QueryBusy: too many queries."""
        args = self._check(method, args)
        self._slot()
        try:
            return self._capped(getattr(ds.query, method)(**args), method)
        finally:
            self._slots.release()

    def stats(self, ds: ActivationDataset, args: dict[str, Any]) -> Any:
        """``pack(ds.query.stats(**args))`` (a JSON-safe form of its dict of arrays)."""
        args = self._check("stats", args)
        self._slot()
        try:
            return pack(ds.query.stats(**args))
        finally:
            self._slots.release()

    def documents(self, ds: ActivationDataset, doc_ids: list[int]) -> pa.Table:
        """``ds.documents(doc_ids)`` (at most ``max_rows`` ids)."""
        if len(doc_ids) > self.max_rows:
            raise QueryError(f"documents: {len(doc_ids)} ids exceed this server's cap of {self.max_rows} "
                             "(--max-query-rows)")
        return ds.documents(doc_ids)
