"""A single-writer lease for stores whose backend has no atomic create (generic fsspec).

Without a conditional write, two committers doing check-then-put can both "win" a log version
and one commit silently vanishes.  So on such stores the committer first takes a lease object
(``_commits/_writer_lease.json``: owner id, expiry); a second writer that finds a live lease owned
by someone else is refused with ``CommitConflictError`` instead of racing.  The lease is renewed
by every commit once half its TTL has passed and released by ``CommitLog.close``; a crashed
writer's lease expires after ``ttl`` seconds.  This is a best-effort fence (acquire is itself
check-then-put, confirmed by reading back), not a consensus protocol: see docs/decisions.md."""
from __future__ import annotations

import json
import os
import socket
import time
import uuid

from actlake.schemas.errors import CommitConflictError
from actlake.store import layout
from actlake.store.fs import StoreFS

TTL_S = 120.0


class WriterLease:
    def __init__(self, store: StoreFS, ttl: float = TTL_S):
        self.store, self.ttl = store, ttl
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._expires = 0.0

    def _current(self) -> dict | None:
        try:
            return json.loads(self.store.read_bytes(layout.WRITER_LEASE))
        except FileNotFoundError:
            return None
        except (json.JSONDecodeError, UnicodeDecodeError):
            return None

    def acquire(self) -> None:
        """Take or renew the lease.

        Raises:
            CommitConflictError: another live writer holds it."""
        now = time.time()
        if self._expires - now > self.ttl / 2:
            return
        cur = self._current()
        if cur and cur.get("owner") != self.owner and float(cur.get("expires_at", 0)) > now:
            raise CommitConflictError(
                f"{self.store.uri} has another active writer (lease held until "
                f"{time.strftime('%H:%M:%S', time.gmtime(float(cur['expires_at'])))} UTC); this store's backend has "
                "no atomic create, so only one writer may commit at a time")
        expires = now + self.ttl
        self.store.write_bytes(layout.WRITER_LEASE, json.dumps({"owner": self.owner, "expires_at": expires}).encode())
        cur = self._current()
        if not cur or cur.get("owner") != self.owner:
            raise CommitConflictError(f"{self.store.uri}: lost the writer lease to a concurrent writer")
        self._expires = expires

    def release(self) -> None:
        cur = self._current()
        if cur and cur.get("owner") == self.owner:
            self.store.delete(layout.WRITER_LEASE)
        self._expires = 0.0
