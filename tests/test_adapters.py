"""Trainer adapters: real training steps through SAELens' and sparsify's own loops on a real store.

dictionary-learning cannot be installed next to this project's torch (see docs/trainers.md); its test
runs only where the package is importable and is skipped otherwise."""
from __future__ import annotations

import subprocess
import sys

import pytest
import torch

import actlake
from actlake.client.adapters import ActivationIterator
from stores import make_store
from test_train_example import ACTIVE, D, HOOK, N_DIRS, write_sparse_store


@pytest.fixture(scope="module")
def sparse(tmp_path_factory):
    return actlake.open_dataset(write_sparse_store(str(tmp_path_factory.mktemp("sparse") / "ds"), rows=16384))


@pytest.fixture(scope="module")
def two_hooks(tmp_path_factory):
    """Column 0 of hook "h" is the row id, and hook "g:input" is -row id: rows identify themselves."""
    return actlake.open_dataset(make_store(str(tmp_path_factory.mktemp("two") / "ds")))


@pytest.fixture(autouse=True)
def quiet_single_thread(monkeypatch):
    monkeypatch.setenv("WANDB_MODE", "disabled")  # never reach for a wandb server
    before = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny SAEs: extra intra-op threads only contend
    yield
    torch.set_num_threads(before)


def _side(ds) -> torch.Tensor:
    return ds.take(list(range(2048)), hooks=[HOOK])[HOOK].float()


def _fvu(recon: torch.Tensor, x: torch.Tensor) -> float:
    return float((recon - x).pow(2).sum() / (x - x.mean(0)).pow(2).sum())


def test_adapters_import_no_peer_and_no_ray():
    code = ("import sys, actlake.client.adapters\n"
            "bad = [m for m in sys.modules if m.split('.')[0] in "
            "('sae_lens', 'sparsify', 'dictionary_learning', 'nnsight', 'ray')]\n"
            "bad += [m for m in sys.modules if m.startswith(('actlake.workers', 'actlake.service'))]\n"
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_activation_iterator_epochs_alignment_and_resume(two_hooks):
    it = ActivationIterator(two_hooks, ["h", "g:input"], 64, seed=3)
    n = it.steps_per_epoch
    first = [next(it) for _ in range(n)]
    assert it.position == (1, 0)
    for b in first:  # flattened float32, hooks row-aligned
        assert b["h"].dtype == torch.float32 and b["h"].shape == (64, 6) and b["g:input"].shape == (64, 3)
        assert torch.equal(b["g:input"][:, 0], -b["h"][:, 0])
    ids = torch.cat([b["h"][:, 0] for b in first])
    assert len(ids.unique()) == len(ids) == n * 64  # without replacement within an epoch
    nxt = [next(it) for _ in range(n + 3)]  # runs on into epochs 1 and 2, each a fresh permutation
    assert it.position == (2, 3)
    assert not torch.equal(nxt[0]["h"], first[0]["h"])
    state = it.state_dict()
    want = [next(it)["h"] for _ in range(2)]
    again = ActivationIterator(two_hooks, ["h", "g:input"], 64, seed=3)
    again.load_state_dict(state)
    assert all(torch.equal(next(again)["h"], w) for w in want)
    single = ActivationIterator(two_hooks, "h", 64, seed=3, epochs=1)
    assert [b.shape for b in single] == [(64, 6)] * n  # one hook → bare tensors; bounded → stops
    with pytest.raises(ValueError, match="no full batch"):
        ActivationIterator(two_hooks, "h", 10_000)


# ---- SAELens (sae-lens, installed by the dev extra) ----------------------------------------------
def test_saelens_sae_trainer_trains_from_the_stream(sparse):
    pytest.importorskip("sae_lens")
    from sae_lens import TopKTrainingSAE, TopKTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig

    from actlake.client.adapters import saelens_trainer

    torch.manual_seed(0)
    sae = TopKTrainingSAE(TopKTrainingSAEConfig(d_in=D, d_sae=N_DIRS, k=ACTIVE))
    x = _side(sparse)
    with torch.no_grad():
        before = _fvu(sae(x), x)
    cfg = SAETrainerConfig(total_training_samples=256 * 250, train_batch_size_samples=256, lr=3e-3, device="cpu")
    trainer = saelens_trainer(sparse, HOOK, sae, cfg)
    trained = trainer.fit()
    with torch.no_grad():
        after = _fvu(trained(x), x)
    assert before > 0.8 and after < 0.6 * before, (before, after)
    assert trainer.n_training_steps == 250
    steps = trainer.data_provider.steps_per_epoch
    assert trainer.data_provider.position == divmod(250, steps)  # every batch came from the stream


def test_saelens_multi_sae_trainer_gets_row_aligned_hooks(two_hooks):
    pytest.importorskip("sae_lens")
    from sae_lens import StandardTrainingSAE, StandardTrainingSAEConfig
    from sae_lens.config import SAETrainerConfig
    from sae_lens.training.multi_sae_trainer import MultiSAETrainer

    from actlake.client.adapters import saelens_data_provider

    saes = {"h": StandardTrainingSAE(StandardTrainingSAEConfig(d_in=6, d_sae=12)),
            "g": StandardTrainingSAE(StandardTrainingSAEConfig(d_in=3, d_sae=6))}
    w0 = {k: s.W_dec.detach().clone() for k, s in saes.items()}
    cfg = SAETrainerConfig(total_training_samples=32 * 10, train_batch_size_samples=32, lr=1e-3, lr_end=1e-4)
    provider = saelens_data_provider(two_hooks, ["h", "g:input"], 32)
    MultiSAETrainer(cfg, saes, {"h": "h", "g": "g:input"}, provider).fit()
    assert provider.position == (0, 10)
    assert all(not torch.equal(saes[k].W_dec, w0[k]) for k in saes)


# ---- EleutherAI sparsify (eai-sparsify, installed by the dev extra) --------------------------------
def test_sparsify_trainer_trains_and_resumes(sparse, tmp_path):
    pytest.importorskip("sparsify")
    from sparsify import SaeConfig, TrainConfig

    from actlake.client.adapters import sparsify_trainer

    def config() -> TrainConfig:
        return TrainConfig(SaeConfig(expansion_factor=N_DIRS // D, k=ACTIVE), batch_size=256, log_to_wandb=False,
                           save_dir=str(tmp_path), run_name="run", save_every=10**9)

    trainer = sparsify_trainer(sparse, config(), epochs=3)
    name = trainer.model.hookpoints[HOOK]
    assert trainer.cfg.hookpoints == [name] == ["blocks_0_mlp_output"]
    steps = trainer.model.stream.steps_per_epoch
    x = _side(sparse)
    with torch.no_grad():
        before = float(trainer.saes[name](x).fvu)
    trainer.fit()  # sparsify's own loop: hooks, b_dec init, SignSGD + schedule-free, checkpoint
    with torch.no_grad():
        after = float(trainer.saes[name](x).fvu)
    assert trainer.global_step == 3 * steps and trainer.model.stream.position == (3, 0)
    assert after < 0.5 * before, (before, after)

    # Resume from sparsify's checkpoint into a longer run: its dataset.select() becomes a stream seek.
    resumed = sparsify_trainer(sparse, config(), epochs=4)
    resumed.load_state(str(tmp_path / "run"))
    seeks: list[tuple[int, int]] = []
    seek = resumed.model.stream.seek
    resumed.model.stream.seek = lambda e, s: (seeks.append((e, s)), seek(e, s))[1]
    resumed.fit()
    assert seeks == [(3, 0)] and resumed.global_step == 4 * steps
    assert resumed.model.stream.position == (4, 0)


def test_sparsify_rejects_what_stored_activations_cannot_do(sparse):
    pytest.importorskip("sparsify")
    from sparsify import SaeConfig, TrainConfig

    from actlake.client.adapters import sparsify_trainer

    with pytest.raises(ValueError, match="fvu"):
        sparsify_trainer(sparse, TrainConfig(SaeConfig(), loss_fn="ce", log_to_wandb=False))
    with pytest.raises(ValueError, match="exclude_tokens"):
        sparsify_trainer(sparse, TrainConfig(SaeConfig(), exclude_tokens=[0], log_to_wandb=False))


# ---- dictionary_learning (not installable here: runs only where it is importable) -----------------
def test_dictionary_learning_trainsae_from_the_stream(sparse, tmp_path):
    pytest.importorskip("dictionary_learning", reason="dictionary-learning is not installable alongside "
                        "this project's torch (it pulls torch 2.15 + CUDA); see docs/trainers.md")
    from dictionary_learning.trainers.top_k import AutoEncoderTopK, TopKTrainer
    from dictionary_learning.training import trainSAE

    from actlake.client.adapters import dictionary_learning_data

    data = dictionary_learning_data(sparse, HOOK, batch_size=256, device="cpu")
    steps = 200
    trainer_cfg = dict(trainer=TopKTrainer, dict_class=AutoEncoderTopK, activation_dim=D, dict_size=N_DIRS, k=ACTIVE,
                       steps=steps, layer=0, lm_name="actlake", lr=3e-3, warmup_steps=10, device="cpu", seed=0)
    trainSAE(data=data, trainer_configs=[trainer_cfg], steps=steps, device="cpu", save_dir=str(tmp_path))
    ae = AutoEncoderTopK.from_pretrained(str(tmp_path / "trainer_0" / "ae.pt"), k=ACTIVE, device="cpu")
    x = _side(sparse)
    with torch.no_grad():
        assert _fvu(ae(x), x) < 0.5
    assert data.position[0] * data.steps_per_epoch + data.position[1] == steps + 1  # trainSAE reads one extra
