"""Disk use: only real rows are stored (no chunk padding), and the recorded sizes, ``verify`` and the
bytes on disk agree; non-finite activations are detected per fragment."""
from __future__ import annotations

import os

import numpy as np
import pyarrow as pa
import pytest
import zarr

import actlake
from actlake.schemas.errors import NonFiniteError
from actlake.schemas.hooks import HookInfo
from actlake.store import layout
from actlake.store.fragment import apply_nonfinite_policy, write_fragment
from actlake.store.fs import open_store
from actlake.store.verify import committed_sizes, verify_store
from actlake.store.writer import DatasetWriter


def _du(root) -> int:
    """Bytes of every file under the fragments folder (what the fragments take on disk)."""
    return sum(os.path.getsize(os.path.join(d, f)) for d, _, fs in os.walk(root / layout.FRAGMENTS) for f in fs)


def _prov(n: int, start: int = 0) -> pa.Table:
    return pa.table({"doc_id": np.arange(start, start + n) // 7, "context_id": np.arange(start, start + n) // 16,
                     "context_pos": np.arange(n, dtype=np.int32) % 16})


@pytest.mark.parametrize("codec", ["none", "zstd"])
def test_small_store_takes_its_real_size(tmp_path, codec):
    hooks = {f"h{i}": ((64,), "float32") for i in range(6)}
    w = DatasetWriter(str(tmp_path), hooks, chunk_rows=8192, codec=codec)
    rng = np.random.default_rng(0)
    sizes = [2032, 8192 + 100, 3 * 8192]  # one short chunk, a short last chunk, exact chunks
    data = {h: [] for h in hooks}
    start = 0
    for n in sizes:
        arrays = {h: rng.standard_normal((n, 64)).astype(np.float32) for h in hooks}
        w.add(arrays, _prov(n, start))
        start += n
        for h in hooks:
            data[h].append(arrays[h])
    w.close()
    rows = sum(sizes)
    real = rows * 64 * 4 * len(hooks)
    on_disk = _du(tmp_path)
    rep = verify_store(open_store(str(tmp_path)))
    ds = actlake.open_dataset(str(tmp_path))
    total, per_hook = committed_sizes(ds.snapshot, ds.manifest.hooks)
    assert rep.ok and rep.bytes == on_disk == total  # recorded, verified and on-disk sizes agree
    assert rep.hook_bytes == per_hook
    if codec == "none":
        # activations take their real size: no padding (before: 2032 rows took a full 8,192-row chunk)
        assert real <= sum(per_hook.values()) < real * 1.01
        assert on_disk < real * 1.05
    # reading gives back exactly the written rows, short last chunks included
    full = {h: np.concatenate(v) for h, v in data.items()}
    got = ds.take(np.arange(rows), hooks=["h0", "h5"])
    for h in ("h0", "h5"):
        np.testing.assert_array_equal(got[h].numpy(), full[h])
    seen = np.concatenate([b["row_id"].numpy() for b in ds.batches(512, hooks="h1", seed=1, with_provenance=True,
                                                                    drop_last=False)])
    assert np.array_equal(np.sort(seen), np.arange(rows))


def test_fragments_stay_readable_by_plain_zarr(tmp_path):
    w = DatasetWriter(str(tmp_path), {"h": ((8,), "float32")}, chunk_rows=64)
    a = np.arange(50 * 8, dtype=np.float32).reshape(50, 8)
    b = np.arange(150 * 8, dtype=np.float32).reshape(150, 8) + 1000
    ra, rb = w.add({"h": a}, _prov(50)), w.add({"h": b}, _prov(150, 50))
    w.close()
    one = zarr.open_group(str(tmp_path / ra.path / layout.ACTS), mode="r")["h"]
    np.testing.assert_array_equal(one[:], a)  # a one-chunk fragment is a plain zarr array of its rows
    many = zarr.open_group(str(tmp_path / rb.path / layout.ACTS), mode="r")["h"]
    assert many.shape == (150, 8) and many.attrs["actlake_last_chunk_rows"] == 22
    np.testing.assert_array_equal(many[:128], b[:128])  # full chunks through zarr
    last = np.fromfile(tmp_path / rb.path / layout.chunk_key("h", 2, 2), dtype="<f4").reshape(-1, 8)
    np.testing.assert_array_equal(last, b[128:])  # the last chunk holds only its 22 rows


def _info(dtype: str) -> HookInfo:
    return HookInfo(name="h", module="h", io="output", array="h", shape=[4], dtype=dtype,
                    storage_dtype={"bfloat16": "uint16"}.get(dtype, dtype))


def test_fp16_overflow_is_an_error_by_default_and_nothing_is_written(tmp_path):
    import torch

    from actlake.store.dtypes import tensor_to_storage

    x = torch.tensor([[1.0, 70000.0, -1e6, 2.0], [float("nan"), 0.5, 3.0, 4.0]])
    stored = tensor_to_storage(x, "float16")  # what the worker's cast gives
    store = open_store(str(tmp_path))
    with pytest.raises(NonFiniteError, match="bf16"):
        write_fragment(store, "fragments/u0-a", {"h": stored}, _prov(2), {"h": _info("float16")}, 16, nonfinite="error")
    assert not (tmp_path / "fragments").exists()
    with pytest.warns(UserWarning, match="inf/NaN"):
        rec = write_fragment(store, "fragments/u0-b", {"h": stored}, _prov(2), {"h": _info("float16")}, 16,
                             nonfinite="warn")
    assert rec.nonfinite == {"h": 3}
    clamped, n = apply_nonfinite_policy("h", stored, "float16", "clamp")
    assert n == 3 and np.isfinite(clamped).all()
    assert clamped.tolist() == [[1.0, 65504.0, -65504.0, 2.0], [0.0, 0.5, 3.0, 4.0]]
    # bf16 (stored as uint16 bits) is checked too: its range holds 70,000 but not a model's inf/NaN
    bits = tensor_to_storage(torch.tensor([[1.0, 7e4, float("inf"), float("-inf")], [float("nan"), 1, 2, 3]]), "bfloat16")
    fixed, n = apply_nonfinite_policy("h", bits, "bfloat16", "clamp")
    back = torch.from_numpy(fixed.view(np.int16)).view(torch.bfloat16).float()
    assert n == 3 and torch.isfinite(back).all() and back[0, 2] > 3e38 and back[0, 3] < -3e38 and back[1, 0] == 0


def test_worker_detects_fp16_overflow_from_the_model(tmp_path, tiny_gpt2, text_corpus):
    """A real model whose activations exceed fp16's range: default error naming bf16; warn counts."""
    import torch
    from transformers import GPT2LMHeadModel

    from actlake.schemas.job import JobSpec
    from actlake.service.coordinator import generate_units
    from actlake.workers.model_worker import ModelWorker

    big = tmp_path / "big"
    m = GPT2LMHeadModel.from_pretrained(tiny_gpt2)
    with torch.no_grad():
        m.transformer.h[0].mlp.c_proj.weight.mul_(1e8)  # block output ~3e6 > 65,504
    m.save_pretrained(big)
    for f in os.listdir(tiny_gpt2):
        if "token" in f or f.endswith(".txt"):
            (big / f).write_bytes((tiny_gpt2 / f).read_bytes())
    for policy in ("error", "warn"):
        job = JobSpec(model=str(big), hooks=["transformer.h.0"], data=str(text_corpus), out=str(tmp_path / policy),
                      dtype="fp16", context_len=16, max_tokens=64, nonfinite=policy, progress=False)
        w = ModelWorker(job, "w0")
        w.describe()
        unit = next(generate_units(job, w.lm.tokenizer))
        if policy == "error":
            with pytest.raises(NonFiniteError):
                w.process(unit)
        else:
            with pytest.warns(UserWarning, match="inf/NaN"):
                rec = w.process(unit)
            assert rec.nonfinite["transformer.h.0"] > 0
