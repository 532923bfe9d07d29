"""``Dataset``: what ``open_dataset`` returns, whether the store is opened directly
(``ActivationDataset``, client/dataset.py) or served over Flight (``RemoteDataset``,
client/remote.py).  Code that works with either should be typed against this protocol; what only
a directly opened store has (``snapshot``, ``store``, ``weights``, the analyses of ``ds.query``)
is not part of it."""
from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    import pyarrow as pa
    import torch

    from actlake.schemas.manifest import Manifest


@runtime_checkable
class QueryAPI(Protocol):
    """``ds.query`` methods both kinds of dataset serve (see client/query.py for the arguments).
    ``address=`` and ``progress=`` run a query where the store is read: a remote dataset's queries
    run on its server, which refuses them (QueryError)."""

    def topk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
             dedup: str | None = None, *, largest: bool = True, encoder: Any = None, address: str | None = None,
             progress: Any = None, tasks: int | None = None) -> pa.Table: ...

    def bottomk(self, hook: str, unit: Any = None, direction: Any = None, k: int = 20, context: int = 8,
                dedup: str | None = None, **kw: Any) -> pa.Table: ...

    def sample_intervals(self, hook: str, unit: int | None = None, bins: int = 11, per_bin: int = 10, *,
                         direction: Any = None, encoder: Any = None, seed: int = 0, context: int = 8,
                         address: str | None = None, progress: Any = None, tasks: int | None = None) -> pa.Table: ...

    def stats(self, hook: Any, *, by: str | None = None, threshold: float = 0.0, unit: Any = None,
              direction: Any = None, encoder: Any = None, histogram_bins: int | None = None, rows: bool = True,
              address: str | None = None, progress: Any = None, tasks: int | None = None) -> dict: ...

    def fetch(self, row_ids: Any = None, *, doc_id: Any = None, context_id: Any = None, context_pos: Any = None,
              doc_pos: Any = None, image_id: Any = None, patch_row: Any = None, patch_col: Any = None,
              hooks: str | list[str] | None = None, context: int = -1) -> pa.Table: ...


@runtime_checkable
class Dataset(Protocol):
    """The dataset API of DESIGN.md's contract: rows, hooks, manifest, random access, provenance,
    documents, shuffled batch streams, torch datasets and queries."""

    @property
    def manifest(self) -> Manifest: ...

    @property
    def uri(self) -> str: ...

    @property
    def num_rows(self) -> int: ...

    @property
    def hooks(self) -> dict[str, dict[str, Any]]: ...

    @property
    def query(self) -> QueryAPI: ...

    def __len__(self) -> int: ...

    def take(self, row_ids: Any, hooks: list[str] | str | None = None) -> dict[str, torch.Tensor]: ...

    def provenance(self, row_ids: Any) -> pa.Table: ...

    def documents(self, doc_ids: Any) -> pa.Table: ...

    def sample(self, n: int, seed: int = 0, hooks: list[str] | str | None = None, filter: Any = None
               ) -> dict[str, torch.Tensor]: ...

    def batches(self, batch_size: int, **kw: Any) -> Iterable[dict[str, torch.Tensor]]: ...

    def torch_dataset(self, batch_size: int, **kw: Any) -> Any: ...
