"""What travels between the Flight client and server: tickets, action bodies, dataset names.

Every message is versioned JSON (``{"v": WIRE_VERSION, ...}``) validated by pydantic on arrival,
so a malformed or foreign ticket is one clear error, never a half-started stream.  Dataset names
are keys into the server's served set, never paths: ``NAME_PATTERN`` excludes '/', '\\', a leading
dot (so no '..'), and anything but ``[A-Za-z0-9._-]``."""
from __future__ import annotations

import base64
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter, ValidationError, field_validator

from actlake.schemas.errors import RemoteError, format_validation_error
from actlake.schemas.stream import StreamSpec

WIRE_VERSION = 1
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
MAX_MESSAGE_BYTES = 8 << 20  # a ticket or action body larger than this is refused before parsing

# action types (Flight do_action); their bodies are JSON, their results one JSON document
ACTION_INFO = "info"  # {"dataset"} -> {"name", "num_rows", "hooks", "manifest", "snapshot_version"}
ACTION_PLAN = "plan"  # {"dataset", "spec"} -> {"state": stream.state_dict() at step 0, "num_batches"}
ACTION_STATS = "stats"  # {} -> {"streams", "streams_opened", "rss_bytes", "datasets"}
ACTION_QUERY_STATS = "query.stats"  # {"dataset", "args"} -> pack(ds.query.stats(**args))
QUERY_TABLES = ("topk", "bottomk", "sample_intervals", "fetch")  # QueryTicket methods (results: tables)
ACTIONS = {ACTION_INFO: "dataset metadata: rows, hooks, manifest",
           ACTION_QUERY_STATS: "ds.query.stats(**args), run on the server",
           ACTION_PLAN: "a stream's state_dict at step 0 and its length, for a StreamSpec",
           ACTION_STATS: "open streams and server memory (for operators and tests)"}


def check_name(name: str) -> str:
    """Return ``name`` if it may name a served dataset.

    Raises:
        RemoteError: the name has a '/', '..', a leading dot, or characters outside [A-Za-z0-9._-].
    """
    if not isinstance(name, str) or not NAME_PATTERN.fullmatch(name):
        raise RemoteError(f"invalid dataset name {name!r}: names are 1-128 characters of [A-Za-z0-9._-], "
                          "starting with a letter or digit")
    return name


class _Msg(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    v: Literal[1] = WIRE_VERSION
    dataset: str

    @field_validator("dataset")
    @classmethod
    def _name(cls, v: str) -> str:
        if not NAME_PATTERN.fullmatch(v):
            raise ValueError(f"invalid dataset name {v!r}")
        return v


class StreamTicket(_Msg):
    """A batch stream: ``spec`` fixes the order; ``state`` (a state_dict of the same stream) the start."""

    kind: Literal["stream"] = "stream"
    spec: StreamSpec
    state: dict[str, Any] | None = None


class TakeTicket(_Msg):
    """``ds.take(row_ids, hooks)``: one record batch per request (the client splits large requests)."""

    kind: Literal["take"] = "take"
    row_ids: list[int]
    hooks: tuple[str, ...] | None = None


class ProvenanceTicket(_Msg):
    """``ds.provenance(row_ids)``."""

    kind: Literal["provenance"] = "provenance"
    row_ids: list[int]


class SampleTicket(_Msg):
    """``ds.sample(n, seed, hooks, filter)``."""

    kind: Literal["sample"] = "sample"
    n: int
    seed: int = 0
    hooks: tuple[str, ...] | None = None
    filter: dict[str, Any] | None = None


class QueryTicket(_Msg):
    """``ds.query.<method>(**args)`` run on the server (``args`` packed by ``pack``); one table back."""

    kind: Literal["query"] = "query"
    method: Literal["topk", "bottomk", "sample_intervals", "fetch"]
    args: dict[str, Any] = {}


class DocumentsTicket(_Msg):
    """``ds.documents(doc_ids)``."""

    kind: Literal["documents"] = "documents"
    doc_ids: list[int]


Ticket = Annotated[StreamTicket | TakeTicket | ProvenanceTicket | SampleTicket | QueryTicket | DocumentsTicket,
                   Field(discriminator="kind")]
_TICKET = TypeAdapter(Ticket)


def encode(msg: BaseModel | dict[str, Any]) -> bytes:
    """A ticket or action body as compact JSON bytes."""
    d = msg.model_dump(mode="json") if isinstance(msg, BaseModel) else {"v": WIRE_VERSION, **msg}
    return json.dumps(d, separators=(",", ":")).encode()


def _load(data: bytes, what: str) -> Any:
    if len(data) > MAX_MESSAGE_BYTES:
        raise RemoteError(f"bad {what}: {len(data)} bytes (at most {MAX_MESSAGE_BYTES})")
    try:
        d = json.loads(data)
    except (ValueError, UnicodeDecodeError):
        raise RemoteError(f"bad {what}: not actlake JSON") from None
    if not isinstance(d, dict) or d.get("v") != WIRE_VERSION:
        raise RemoteError(f"bad {what}: not an actlake v{WIRE_VERSION} message")
    return d


def decode_ticket(data: bytes) -> StreamTicket | TakeTicket | ProvenanceTicket | SampleTicket | QueryTicket | \
        DocumentsTicket:
    """Parse a Flight ticket.

    Raises:
        RemoteError: not JSON, wrong version, unknown kind, or fields that do not validate.
    """
    d = _load(data, "ticket")
    try:
        return _TICKET.validate_python(d)
    except ValidationError as e:
        raise RemoteError(f"bad ticket: {format_validation_error(e)}") from None


def decode_body(data: bytes) -> dict[str, Any]:
    """Parse an action body (a JSON object with ``v``); dataset names are checked by the caller.

    Raises:
        RemoteError: not a JSON object of this wire version.
    """
    return _load(data or encode({}), "action body")


def pack(v: Any) -> Any:
    """A query argument or result as JSON-safe data that ``unpack`` restores exactly: numpy arrays
    (and array-likes such as tensors, via ``__array__``) keep dtype, shape and bytes (base64), dicts
    keep non-string keys (e.g. token ids of ``stats(by=...)``), numpy scalars become Python numbers."""
    if isinstance(v, dict):
        if all(isinstance(k, str) for k in v):
            return {"__dict__": {k: pack(x) for k, x in v.items()}}
        return {"__map__": [[pack(k), pack(x)] for k, x in v.items()]}
    if isinstance(v, (list, tuple)):
        return [pack(x) for x in v]
    if hasattr(v, "__array__") and not isinstance(v, (str, bytes)):
        import numpy as np

        a = np.asarray(v)
        if a.ndim == 0:
            return a.item()
        if a.dtype == object:
            raise RemoteError(f"cannot send an array of Python objects ({a.shape})")
        a = np.ascontiguousarray(a)
        return {"__nd__": [a.dtype.str, list(a.shape), base64.b64encode(a.tobytes()).decode()]}
    item = getattr(v, "item", None)  # a numpy scalar
    return item() if callable(item) and not isinstance(v, (str, bytes)) else v


def unpack(v: Any) -> Any:
    """Inverse of ``pack``.

    Raises:
        RemoteError: a malformed packed array."""
    if isinstance(v, list):
        return [unpack(x) for x in v]
    if isinstance(v, dict):
        if "__nd__" in v:
            import numpy as np

            try:
                dtype, shape, data = v["__nd__"]
                dt = np.dtype(dtype)
                if dt.kind == "O":
                    raise TypeError("object arrays are not sent")
                return np.frombuffer(base64.b64decode(data), dtype=dt).reshape(shape).copy()
            except (TypeError, ValueError) as e:
                raise RemoteError(f"bad packed array: {e}") from None
        if "__map__" in v:
            return {unpack(k) if not isinstance(k, list) else tuple(unpack(k)): unpack(x) for k, x in v["__map__"]}
        if "__dict__" in v:
            return {k: unpack(x) for k, x in v["__dict__"].items()}
        return {k: unpack(x) for k, x in v.items()}
    return v
