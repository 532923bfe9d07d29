"""One error type for every user-facing failure, so the CLI can print one clear line."""
from __future__ import annotations

from pydantic import ValidationError


class ActlakeError(Exception):
    """An error whose message is meant for the user verbatim (bad input, damaged store, ...)."""


def format_validation_error(err: ValidationError, prefix: str = "") -> str:
    """Collapse a pydantic error into one line that names the offending field(s)."""
    parts = []
    for e in err.errors():
        loc = ".".join(str(x) for x in e["loc"] if x != "__root__") or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        parts.append(f"{prefix}{loc}: {msg}")
    return "; ".join(parts)
