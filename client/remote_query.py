"""``RemoteDataset.query``: ``ds.query`` of a dataset served by ``actlake serve``, run on the server.

Same methods, arguments and results as ``client/query.py``'s ``QueryEngine`` for ``topk``,
``bottomk``, ``sample_intervals``, ``stats`` and ``fetch``; the server validates with the local
engine, so errors are the same types (``QueryError``, ``RowIdError``, ``HookError``).  Arrays
(``direction``, ``encoder``, ``row_ids``, keys) travel packed (schemas/wire.py ``pack``) and results
as Arrow tables (``stats``: its dict of numpy arrays, dtypes kept).  Not available remotely:
``address=`` (the server runs the query) and ``progress=``; the analyses (``correlate``, ``pca``,
…) need the store itself."""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

import pyarrow as pa

from actlake.schemas.errors import QueryError
from actlake.schemas.wire import ACTION_QUERY_STATS, QueryTicket, pack, unpack

if TYPE_CHECKING:
    from actlake.client.remote import RemoteDataset


def _no_local_only(kw: dict[str, Any]) -> dict[str, Any]:
    for k in ("address", "progress"):
        if kw.get(k) is not None:
            raise QueryError(f"{k}=: not available on a remote dataset (its queries run on the server)")
        kw.pop(k, None)
    return kw


class RemoteQuery:
    """Queries of one remote dataset (``RemoteDataset.query``)."""

    def __init__(self, ds: RemoteDataset):
        self.ds = ds

    def _table(self, method: str, args: dict[str, Any]) -> pa.Table:
        args = {k: pack(v) for k, v in _no_local_only(args).items()}
        return self.ds._get(QueryTicket(dataset=self.ds.name, method=method, args=args), f"query.{method}")  # type: ignore[arg-type]

    def topk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
             dedup: str | None = None, **kw: Any) -> pa.Table:
        """As ``QueryEngine.topk`` (client/query.py), run on the server."""
        return self._table("topk", {"hook": hook, "unit": unit, "direction": direction, "k": k, "context": context,
                                    "dedup": dedup, **kw})

    def bottomk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
                dedup: str | None = None, **kw: Any) -> pa.Table:
        """As ``QueryEngine.bottomk``, run on the server."""
        return self._table("bottomk", {"hook": hook, "unit": unit, "direction": direction, "k": k,
                                       "context": context, "dedup": dedup, **kw})

    def sample_intervals(self, hook: str, unit: int | None = None, bins: int = 11, per_bin: int = 10,
                         **kw: Any) -> pa.Table:
        """As ``QueryEngine.sample_intervals``, run on the server."""
        return self._table("sample_intervals", {"hook": hook, "unit": unit, "bins": bins, "per_bin": per_bin, **kw})

    def fetch(self, row_ids: Any = None, **kw: Any) -> pa.Table:
        """As ``QueryEngine.fetch``, run on the server."""
        return self._table("fetch", {"row_ids": row_ids, **kw})

    def stats(self, hook: Any, **kw: Any) -> dict:
        """As ``QueryEngine.stats`` (a dict of numpy arrays, or of such dicts), run on the server."""
        args = {k: pack(v) for k, v in _no_local_only({"hook": hook, **kw}).items()}
        return unpack(self.ds._action(ACTION_QUERY_STATS, {"dataset": self.ds.name, "args": args}))

    def __getattr__(self, name: str) -> Any:
        if name.startswith("_"):
            raise AttributeError(name)
        raise QueryError(f"query.{name}: not available on a remote dataset (it needs the store itself: open it "
                         "directly, or run it where the store is)")
