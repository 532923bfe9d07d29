"""examples/train_sae.py learns a known sparse dictionary from a real store, and resumes exactly."""
from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from actlake.store.writer import DatasetWriter

EXAMPLE = Path(__file__).resolve().parents[1] / "examples" / "train_sae.py"
HOOK = "blocks.0.mlp:output"
D, N_DIRS, ACTIVE = 64, 256, 4


def load_example():
    spec = importlib.util.spec_from_file_location("train_sae_example", EXAMPLE)
    mod = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = mod  # dataclasses resolve annotations through sys.modules
    spec.loader.exec_module(mod)
    return mod


def write_sparse_store(uri: str, rows: int = 32768, fragment_rows: int = 8192, chunk_rows: int = 1024,
                       seed: int = 0) -> str:
    """Every row is a positive mix of ACTIVE of N_DIRS fixed random unit directions: a TopK SAE with
    k = ACTIVE and N_DIRS latents can reconstruct it almost exactly once it finds the directions."""
    rng = np.random.default_rng(seed)
    dirs = rng.standard_normal((N_DIRS, D))
    dirs /= np.linalg.norm(dirs, axis=1, keepdims=True)
    w = DatasetWriter(uri, {HOOK: ((D,), "float32")}, chunk_rows=chunk_rows)
    for start in range(0, rows, fragment_rows):
        n = min(fragment_rows, rows - start)
        which = np.argsort(rng.random((n, N_DIRS)), axis=1)[:, :ACTIVE]
        coef = rng.uniform(0.5, 1.5, (n, ACTIVE))
        x = np.einsum("na,nad->nd", coef, dirs[which]).astype(np.float32)
        rid = np.arange(start, start + n)
        prov = pa.table({"doc_id": rid // 256, "context_id": rid // 64, "context_pos": (rid % 64).astype(np.int32),
                         "token_id": (rid % 1000).astype(np.int32)})
        w.add({HOOK: x}, prov)
    return w.close()


@pytest.fixture(scope="module")
def store(tmp_path_factory) -> str:
    return write_sparse_store(str(tmp_path_factory.mktemp("sparse") / "ds"))


@pytest.fixture(scope="module")
def ex():
    return load_example()


@pytest.fixture(autouse=True)
def one_torch_thread():
    """Tiny matmuls: extra intra-op threads only spin against each other (and the loader's thread)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_topk_recovers_sparse_structure(store, ex):
    cfg = ex.TrainConfig(store, k=ACTIVE, expansion=N_DIRS // D, lr=1e-2, batch_size=512, steps=300, log_every=10,
                         dead_window=20_000)
    lines: list[str] = []
    hist = ex.train(cfg, log=lines.append)
    first, last = hist[0], hist[-1]
    assert first["fvu"] > 0.5, first  # the random SAE explains little
    assert last["fvu"] < 0.3 and last["fvu"] < 0.35 * first["fvu"], (first, last)
    assert ACTIVE - 0.1 <= last["l0"] <= ACTIVE, last  # TopK: exactly k active (minus any non-positive)
    assert 0.0 <= last["dead"] < 0.5
    assert last["mse"] > 0 and len(lines) == 30 and "nmse" in lines[-1] and "dead" in lines[-1]


def test_relu_l1_learns_and_gets_sparser(store, ex):
    cfg = ex.TrainConfig(store, arch="relu", l1=0.02, expansion=N_DIRS // D, lr=1e-2, batch_size=512, steps=200,
                         log_every=20)
    hist = ex.train(cfg, log=lambda s: None)
    assert hist[-1]["fvu"] < 0.3 and hist[-1]["fvu"] < 0.75 * hist[0]["fvu"], (hist[0], hist[-1])
    assert hist[-1]["l0"] < 0.5 * hist[0]["l0"] and hist[-1]["l0"] < 0.25 * N_DIRS, (hist[0], hist[-1])


def test_resume_continues_exactly(store, ex, tmp_path):
    """Checkpoint at step 70 (mid-epoch 1), resume to 140: same weights and logs as one straight run."""
    kw = dict(k=ACTIVE, expansion=2, lr=1e-2, batch_size=512, log_every=35, checkpoint_every=35)
    straight = tmp_path / "straight.pt"
    full = ex.train(ex.TrainConfig(store, steps=140, checkpoint=str(straight), **kw), log=lambda s: None)
    ckpt = tmp_path / "resumed.pt"
    ex.train(ex.TrainConfig(store, steps=70, checkpoint=str(ckpt), **kw), log=lambda s: None)
    lines: list[str] = []
    rest = ex.train(ex.TrainConfig(store, steps=140, checkpoint=str(ckpt), **kw), log=lines.append)
    assert lines[0] == f"resumed {ckpt} at step 70"
    a, b = torch.load(straight, weights_only=False), torch.load(ckpt, weights_only=False)
    assert b["step"] == 140 and b["epoch"] == a["epoch"] == 2 and b["stream"] == a["stream"]
    for name, t in a["sae"].items():
        torch.testing.assert_close(b["sae"][name], t, rtol=1e-5, atol=1e-6)
    key = ("step", "mse", "fvu", "l0", "dead")
    assert [r[k] for r in rest for k in key] == pytest.approx([r[k] for r in full[2:] for k in key], rel=1e-4)


def test_dead_latent_resampling_uses_side_samples(store, ex):
    """Far more latents than directions leaves many dead; resampling from ds.sample revives them."""
    if not hasattr(__import__("actlake").open_dataset(store), "sample"):
        pytest.skip("this actlake version has no ds.sample()")
    lines: list[str] = []
    cfg = ex.TrainConfig(store, k=ACTIVE, expansion=16, lr=1e-2, batch_size=512, steps=120, log_every=40,
                         dead_window=5_000, resample_every=60, resample_rows=4096)
    hist = ex.train(cfg, log=lines.append)
    resampled = [int(s.split()[3]) for s in lines if "resampled" in s]
    assert len(resampled) == 1 and resampled[0] > 0, lines
    assert hist[-1]["fvu"] < hist[0]["fvu"]


def test_cli(store, ex, tmp_path, capsys):
    ex.main([store, "--hook", HOOK, "--steps", "20", "--batch-size", "256", "--k", "4", "--expansion", "2",
             "--log-every", "10", "--checkpoint", str(tmp_path / "cli.pt"), "--device", "cpu"])
    out = capsys.readouterr().out.splitlines()
    assert len(out) == 2 and out[-1].split()[:2] == ["step", "20"] and "L0" in out[-1]
    assert (tmp_path / "cli.pt").exists()
    with pytest.raises(SystemExit):
        ex.main([store, "--arch", "gated"])
