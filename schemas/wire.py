"""What travels between the Flight client and server: tickets, action bodies, dataset names.

Every message is versioned JSON (``{"v": WIRE_VERSION, ...}``) validated by pydantic on arrival,
so a malformed or foreign ticket is one clear error, never a half-started stream.  Dataset names
are keys into the server's served set, never paths: ``NAME_PATTERN`` excludes '/', '\\', a leading
dot (so no '..'), and anything but ``[A-Za-z0-9._-]``."""
from __future__ import annotations

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
ACTIONS = {ACTION_INFO: "dataset metadata: rows, hooks, manifest",
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


Ticket = Annotated[StreamTicket | TakeTicket | ProvenanceTicket | SampleTicket, Field(discriminator="kind")]
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


def decode_ticket(data: bytes) -> StreamTicket | TakeTicket | ProvenanceTicket | SampleTicket:
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
