"""Bad queries fail with QueryError naming the argument, before any chunk is read."""
from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import actlake
from actlake.schemas.errors import QueryError, RowIdError
from actlake.store.writer import DatasetWriter

from query_stores import text_store


@pytest.fixture(scope="module")
def chunkless(tmp_path_factory):
    """A store whose activation chunks were all deleted: any query that reads data would fail with a
    damaged-store error, so a QueryError proves validation ran first."""
    uri, x, _ = text_store(str(tmp_path_factory.mktemp("q") / "s"))
    for d in Path(uri).glob("fragments/*/acts/*/c"):
        shutil.rmtree(d)
    return actlake.open_dataset(uri)


D = 8
BAD = [
    ("hook", dict(hook="nope", unit=0)),
    ("unit", dict(hook="h", unit=D)),
    ("unit", dict(hook="h", unit=[0, -1])),
    ("unit", dict(hook="h")),  # neither unit nor direction
    ("direction", dict(hook="h", direction=np.ones(D + 1, np.float32))),
    ("direction", dict(hook="h", direction=np.ones((2, D), np.int64))),
    ("direction", dict(hook="h", direction=np.ones((2, 2, D), np.float32))),
    ("direction", dict(hook="h", direction=np.full(D, np.nan, np.float32))),
    ("k", dict(hook="h", unit=0, k=0)),
    ("k", dict(hook="h", unit=0, k=-3)),
    ("encoder.W_enc", dict(hook="h", encoder={"W_enc": np.ones((D + 2, 5), np.float32)})),
    ("encoder.b_enc", dict(hook="h", encoder={"W_enc": np.ones((D, 5), np.float32), "b_enc": np.ones(4)})),
    ("encoder", dict(hook="h", encoder={"W_enc": np.ones((D, 5)), "activation": "topk"})),
    ("dedup", dict(hook="h", unit=0, dedup="doc")),
]


@pytest.mark.parametrize("arg,kw", BAD, ids=[f"{a}-{i}" for i, (a, _) in enumerate(BAD)])
def test_bad_topk_names_the_argument(chunkless, arg, kw):
    with pytest.raises(QueryError) as e:
        chunkless.query.topk(**kw)
    assert str(e.value).startswith(arg)


def test_bad_stats_intervals_fetch(chunkless):
    q = chunkless.query
    with pytest.raises(QueryError, match="^by"):
        q.stats("h", by="colour")
    with pytest.raises(QueryError, match="^hook"):
        q.stats("missing")
    with pytest.raises(QueryError, match="^bins"):
        q.sample_intervals("h", unit=0, bins=0)
    with pytest.raises(QueryError, match="^per_bin"):
        q.sample_intervals("h", unit=0, per_bin=0)
    with pytest.raises(QueryError, match="^unit"):
        q.sample_intervals("h", unit=[0, 1])
    with pytest.raises(RowIdError):
        q.fetch([0, 10 ** 9])
    with pytest.raises(QueryError, match="^fetch"):
        q.fetch(doc_pos=[1])
    with pytest.raises(QueryError, match="^image_id"):
        q.fetch(image_id=1, patch_row=0, patch_col=0)
    with pytest.raises(QueryError, match="^hooks"):
        q.fetch([0], hooks="zz")
    with pytest.raises(QueryError, match="^direction"):
        q.stats("h", unit=0, direction=np.ones(D, np.float32))
    # a good query on this store does read, and fails as damaged (not as a QueryError)
    with pytest.raises(actlake.ActlakeError) as e:
        q.topk("h", unit=0)
    assert not isinstance(e.value, QueryError)


def test_empty_store(tmp_path):
    w = DatasetWriter(str(tmp_path / "empty"), {"h": ((4,), "float32")})
    ds = actlake.open_dataset(w.close())
    with pytest.raises(QueryError, match="^dataset"):
        ds.query.topk("h", unit=0)
    with pytest.raises(QueryError, match="^dataset"):
        ds.query.stats("h")


def test_client_query_imports_neither_ray_nor_service():
    code = ("import sys, actlake\nds = actlake.open_dataset\nimport actlake.client.query\n"
            "bad = [m for m in sys.modules if m.split('.')[0] == 'ray'\n"
            "       or m.startswith(('actlake.service', 'actlake.workers'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
