"""A dataset written by a real extraction (tokenizer packing, job spec with token budgets) opens remotely.

The server once redacted every manifest key containing "token" (`tokenizer`, `max_tokens`, `bos_token`,
...), so no extracted dataset could be opened over Flight; synthetic test stores had no such keys."""
from __future__ import annotations

import torch
from remote_server import TOKEN

import actlake
from actlake.service.flight_server import redact


def test_extracted_dataset_streams_remotely(ray_local, tmp_path, tiny_gpt2, text_corpus, start_server):
    out = tmp_path / "ext"
    actlake.extract({"model": str(tiny_gpt2), "hooks": ["transformer.h.1"], "data": str(text_corpus),
                     "out": str(out), "max_tokens": 600, "context_len": 32, "progress": False})
    local = actlake.open_dataset(str(out))
    manifest = local.manifest.model_dump(mode="json")
    assert redact(manifest) == manifest  # nothing in an extraction's manifest is a secret
    srv = start_server([str(out)])
    remote = actlake.open_dataset(srv.uri("ext"), storage_options={"token": TOKEN})
    assert remote.manifest == local.manifest and remote.num_rows == local.num_rows > 0
    got = [b["transformer.h.1"] for b in remote.batches(64, seed=4, drop_last=False)]
    ref = [b["transformer.h.1"] for b in local.batches(64, seed=4, drop_last=False)]
    assert len(got) == len(ref) and all(torch.equal(a, b) for a, b in zip(got, ref, strict=True))


def test_secret_keys_are_redacted_by_whole_name():
    opts = {"key": "K", "secret": "S", "token": "T", "aws_secret_access_key": "A", "aws_access_key_id": "I",
            "AWS_SESSION_TOKEN": "X", "client_secret": "C", "password": "P", "endpoint_url": "http://127.0.0.1:1",
            "anon": False}
    got = redact({"job": {"storage_options": opts, "max_tokens": 5, "drop_tokens": [0]},
                  "tokenizer": {"packing": {"bos_token": "<s>"}}})
    so = got["job"]["storage_options"]
    assert {k for k, v in so.items() if v == "***"} == set(opts) - {"endpoint_url", "anon"}
    assert got["job"]["max_tokens"] == 5 and got["tokenizer"]["packing"]["bos_token"] == "<s>"
