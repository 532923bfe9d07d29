"""ds.query and ds.documents over Flight: same results and same error types as the store opened
directly, computed by a real `actlake serve` process; caps and refused arguments."""
from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest
from remote_server import TOKEN

import actlake
from actlake.schemas.errors import HookError, QueryError, RowIdError


@pytest.fixture(scope="module")
def pair(store, server):
    return actlake.open_dataset(store), actlake.open_dataset(server.uri("acts"), storage_options={"token": TOKEN})


def _same_table(a: pa.Table, b: pa.Table) -> None:
    assert a.schema.names == b.schema.names
    assert a.num_rows == b.num_rows > 0
    assert a.to_pydict() == b.to_pydict()


@pytest.mark.parametrize("method,kw", [
    ("topk", {"hook": "h", "unit": 1, "k": 7}),
    ("topk", {"hook": "h", "unit": [0, 2], "k": 3, "context": 2}),
    ("topk", {"hook": "h", "direction": np.linspace(-1, 1, 6).astype(np.float32), "k": 5}),
    ("bottomk", {"hook": "h", "unit": 3, "k": 4}),
    ("sample_intervals", {"hook": "h", "unit": 0, "bins": 4, "per_bin": 3, "seed": 2}),
    ("fetch", {"row_ids": [5, 0, 621, 5], "hooks": "h", "context": 1}),
    ("fetch", {"context_id": [3, 7], "context_pos": [1, 2]}),
])
def test_table_queries_match_local(pair, method, kw):
    local, remote = pair
    _same_table(getattr(local.query, method)(**kw), getattr(remote.query, method)(**kw))


def test_stats_match_local_with_dtypes(pair):
    local, remote = pair
    a, b = local.query.stats("h", histogram_bins=5), remote.query.stats("h", histogram_bins=5)
    assert set(a) == set(b) and {"count", "mean", "var", "hist", "row_norm"} <= set(a)
    for k, v in a.items():
        if isinstance(v, dict):
            assert {kk: np.asarray(x).tolist() for kk, x in v.items()} == {kk: np.asarray(x).tolist()
                                                                         for kk, x in b[k].items()}
        else:
            assert b[k].dtype == v.dtype and np.array_equal(v, b[k], equal_nan=True), k
    ga, gb = local.query.stats("h", by="token_id", rows=False), remote.query.stats("h", by="token_id", rows=False)
    assert list(ga) == list(gb) and all(isinstance(key, int) for key in gb)
    assert all(np.array_equal(ga[key]["mean"], gb[key]["mean"]) for key in ga)


def test_documents_match_local(pair):
    local, remote = pair
    for ids in ([0, 3, 0], [10**9], np.array([1.5])):
        try:
            want = local.documents(ids)
        except Exception as e:  # the same error type remotely
            with pytest.raises(type(e)):
                remote.documents(ids)
        else:
            _same_table(want, remote.documents(ids))


@pytest.mark.parametrize("call,err", [
    (lambda q: q.topk("nope", unit=0), QueryError),
    (lambda q: q.topk("h", unit=99), QueryError),
    (lambda q: q.topk("h", unit=0, k=0), QueryError),
    (lambda q: q.topk("h", direction=np.ones(5, np.float32)), QueryError),
    (lambda q: q.sample_intervals("h", unit=[0, 1]), QueryError),
    (lambda q: q.fetch([10**6]), RowIdError),
    (lambda q: q.fetch(doc_id=[10**6]), QueryError),
    (lambda q: q.stats("nope"), QueryError),
])
def test_same_errors_as_local(pair, call, err):
    local, remote = pair
    with pytest.raises(err) as le:
        call(local.query)
    with pytest.raises(err) as re_:
        call(remote.query)
    assert type(re_.value) is type(le.value) or isinstance(re_.value, err)
    assert len(str(re_.value).splitlines()) == 1


def test_server_caps_and_refusals(pair, start_server, store):
    _, remote = pair
    with pytest.raises(QueryError, match="address"):  # never runs a query on a cluster a client names
        remote.query.topk("h", unit=0, address="ray://10.0.0.1:10001")
    with pytest.raises(QueryError, match="not available on a remote"):
        remote.query.correlate("h")
    srv = start_server([store, "--max-query-rows", "5"])
    small = actlake.open_dataset(srv.uri("acts"), storage_options={"token": TOKEN})
    with pytest.raises(QueryError, match="max-query-rows"):
        small.query.topk("h", unit=0, k=6)
    with pytest.raises(QueryError, match="max-query-rows"):  # result rows: 2 units x 3
        small.query.topk("h", unit=[0, 1], k=3)
    with pytest.raises(QueryError, match="max-query-rows"):
        small.documents(list(range(6)))
    assert small.query.topk("h", unit=0, k=5).num_rows == 5
    with pytest.raises(HookError):
        small.take([0], hooks="nope")


def test_query_needs_the_token(server):
    from actlake.schemas.errors import RemoteError

    with pytest.raises(RemoteError, match="token"):
        actlake.open_dataset(server.uri("acts"), storage_options={"token": "wrong"})


def test_both_datasets_satisfy_the_protocol(pair):
    from actlake.client.protocol import Dataset, QueryAPI

    for ds in pair:
        assert isinstance(ds, Dataset) and isinstance(ds.query, QueryAPI)
    local, remote = pair
    assert (local.num_rows, local.hooks) == (remote.num_rows, remote.hooks)
