"""Issue 10 (seams): ``SnapshotAccess``'s one lock rule (client/access.py) — every cache is safe to use
from many threads at once, and no read, decode or checksum ever runs while the lock is held."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from stores import make_store

import actlake
from actlake.client import access as access_mod
from actlake.client.filters import RowFilter
from actlake.store.fragment import FragmentReader

FRAGS = (40, 33, 64, 1, 17, 50, 29, 31, 8, 12, 45, 20)  # more fragments than the provenance LRU keeps


@pytest.fixture(scope="module")
def uri(tmp_path_factory) -> str:
    return make_store(str(tmp_path_factory.mktemp("locks") / "ds"), fragments=FRAGS, chunk_rows=16)


class OwnedLock:
    """A lock that knows which thread holds it (to prove that no I/O runs under it)."""

    def __init__(self):
        self._lock = threading.Lock()
        self.owner: int | None = None

    def __enter__(self):
        self._lock.acquire()
        self.owner = threading.get_ident()
        return self

    def __exit__(self, *exc):
        self.owner = None
        self._lock.release()


def _hammer(fn, args: list, threads: int = 8, repeat: int = 20) -> list:
    """Call ``fn(*a)`` for every ``a`` in ``args`` (shuffled, ``repeat`` times) from ``threads`` threads."""
    order = np.random.default_rng(0).permutation(len(args) * repeat) % len(args)
    barrier = threading.Barrier(threads)

    def run(part: list[int]):
        barrier.wait()
        return [(i, fn(*args[i])) for i in part]

    with ThreadPoolExecutor(threads) as pool:
        parts = list(pool.map(run, [order[t::threads].tolist() for t in range(threads)]))
    return [r for p in parts for r in p]


def test_every_thread_gets_the_one_reader_of_a_fragment(uri):
    acc = actlake.open_dataset(uri).access
    got = _hammer(acc.reader, [(f,) for f in range(len(FRAGS))])
    for f in range(len(FRAGS)):
        assert len({id(r) for i, r in got if i == f}) == 1
        assert all(r is acc.reader(f) for i, r in got if i == f)


def test_provenance_lru_under_threads_returns_the_right_tables_and_stays_bounded(uri):
    ds = actlake.open_dataset(uri)
    acc = ds.access
    want = {f: acc.reader(f).read_provenance() for f in range(len(FRAGS))}
    got = _hammer(acc.provenance_of, [(f,) for f in range(len(FRAGS))])
    assert len(got) == 20 * len(FRAGS)
    for f, t in got:
        assert t.equals(want[f])
    assert len(acc._prov) <= access_mod.PROVENANCE_CACHE
    # the public path over the same cache: provenance of every row, in a scrambled order, from threads
    ids = np.random.default_rng(1).permutation(ds.num_rows)
    spans = [(a, a + 37) for a in range(0, ds.num_rows, 37)]
    for i, t in _hammer(lambda a, b: ds.provenance(ids[a:b]), spans, repeat=3):
        rows = t.column("row_id").to_numpy()
        assert np.array_equal(rows, ids[spans[i][0]:spans[i][1]])
        assert (t.column("context_id").to_numpy() == rows // 10).all()  # make_store: context = row // 10


def test_filter_masks_and_kept_counts_under_threads_match_a_serial_pass(uri, monkeypatch):
    monkeypatch.setattr(access_mod, "MASK_CACHE", 5)  # evictions while threads read
    flt = RowFilter(min_position=2, exclude_token_ids=(3, 4))
    serial = actlake.open_dataset(uri).access
    want = {f: serial.filter_mask(f, flt) for f in range(len(FRAGS))}
    acc = actlake.open_dataset(uri).access
    for f, m in _hammer(acc.filter_mask, [(f, flt) for f in range(len(FRAGS))]):
        assert np.array_equal(m, want[f])
    assert len(acc._masks) <= 5
    kept = _hammer(acc.kept_per_block, [(flt, 8)], threads=4, repeat=2)
    assert all(k is kept[0][1] for _, k in kept)  # first writer wins: everyone gets the kept array
    assert np.array_equal(kept[0][1], serial.kept_per_block(flt, 8))


def test_verification_state_is_shared_and_complete_under_threads(uri):
    acc = actlake.open_dataset(uri).access
    keys = [(f, "h", c) for f, n in enumerate(FRAGS) for c in range(-(-n // 16))]
    _hammer(acc.verify_chunk, keys, repeat=3)
    assert acc.verified() == frozenset(keys)
    assert all(acc.is_verified(k) for k in keys)
    off = actlake.open_dataset(uri, verify_reads=False).access
    _hammer(off.verify_chunk, keys, repeat=1)
    assert off.verified() == frozenset()  # verify_reads=False: nothing checked, nothing recorded


def test_no_read_or_checksum_runs_under_the_lock(uri, monkeypatch):
    ds = actlake.open_dataset(uri)
    acc = ds.access
    lock = acc._lock = OwnedLock()  # type: ignore[assignment]
    calls: list[str] = []

    def guard(name: str, fn):
        def wrapped(*a, **kw):
            assert lock.owner != threading.get_ident(), f"{name} ran under the access lock"
            calls.append(name)
            return fn(*a, **kw)
        return wrapped

    for name in ("read_provenance", "read_chunk", "verify_chunk_file", "read_rows_into", "checksums"):
        monkeypatch.setattr(FragmentReader, name, guard(name, getattr(FragmentReader, name)))
    flt = RowFilter(max_position=5)
    ds.provenance(np.arange(ds.num_rows))
    ds.take(np.arange(0, ds.num_rows, 3))
    acc.kept_per_block(flt, 8)
    ds.sample(20, filter={"max_position": 5})
    for direct, kw in ((True, {}), (False, {}), (False, {"filter": {"max_position": 5}})):
        s = ds.batches(16, drop_last=False, with_provenance=True, **kw)
        s._direct = direct  # direct: whole-chunk checks on I/O threads; staged: read_rows_into on I/O threads
        assert sum(len(b["h"]) for b in s) > 0
    assert {"read_provenance", "read_chunk", "verify_chunk_file"} <= set(calls)
