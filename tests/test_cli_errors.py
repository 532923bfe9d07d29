"""Preflight and errors (issue 7, B14–B17): every bad input is refused before anything is written, as one
``error:`` line with a non-zero exit and a typed ActlakeError from the Python API."""
from __future__ import annotations

import json
import os
import shutil

import pytest
import torch
from stores import make_store
from test_bad_input import assert_one_error, extract_args, extract_help, run

import actlake
from actlake.schemas.errors import JobSpecError, ModelError, StoreDamagedError, StoreLocationError
from actlake.service.preflight import position_limit


def job(model, data, out, **kw) -> dict:
    return {"model": str(model), "hooks": ["transformer.h.0"], "data": str(data), "out": str(out),
            "max_tokens": 200, "context_len": 16, "progress": False, **kw}


def assert_nothing_written(out) -> None:
    assert not out.exists() or not any(out.iterdir()), sorted(p.name for p in out.iterdir())


# ---- B14: model limits, from the config, for every family ------------------------------------------------
def _forward_ok(model: torch.nn.Module, n: int) -> bool:
    ids = torch.full((1, n), 3, dtype=torch.long)  # not a pad id (RoBERTa skips pad positions)
    try:
        with torch.no_grad():
            model(input_ids=ids, attention_mask=torch.ones_like(ids))
        return True
    except (IndexError, RuntimeError, ValueError):
        return False


@pytest.mark.parametrize("family", ["gpt2", "bert", "roberta", "gpt_neox", "opt"])
def test_position_limit_is_what_the_model_accepts(family):
    """The limit read from the config is the longest input the real model runs: n runs, n + 1 fails."""
    import transformers as T

    small = dict(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2, intermediate_size=32)
    cfg, cls = {
        "gpt2": (lambda: T.GPT2Config(vocab_size=50, n_embd=16, n_layer=1, n_head=2, n_positions=24), T.GPT2Model),
        "bert": (lambda: T.BertConfig(max_position_embeddings=24, **small), T.BertModel),
        "roberta": (lambda: T.RobertaConfig(max_position_embeddings=24, pad_token_id=1, **small), T.RobertaModel),
        "gpt_neox": (lambda: T.GPTNeoXConfig(max_position_embeddings=24, **small), T.GPTNeoXModel),
        "opt": (lambda: T.OPTConfig(vocab_size=50, hidden_size=16, num_hidden_layers=1, num_attention_heads=2,
                                    ffn_dim=32, word_embed_proj_dim=16, max_position_embeddings=24), T.OPTModel),
    }[family]
    config = cfg()
    limit, key = position_limit(config.to_dict())
    assert key in config.to_dict()
    torch.manual_seed(0)
    model = cls(config).eval()
    assert _forward_ok(model, limit)
    if family in ("gpt2", "bert", "roberta", "opt"):  # learned tables: one more position fails in the model
        assert not _forward_ok(model, limit + 1)
    else:  # rotary: runs past the limit, silently out of distribution; the config's limit still holds
        assert limit == 24


def test_position_limit_nested_and_relative():
    assert position_limit({"model_type": "llava", "text_config": {"max_position_embeddings": 4096}}) == (
        4096, "max_position_embeddings")
    assert position_limit({"model_type": "t5", "n_positions": 512}) is None
    assert position_limit({"model_type": "mystery"}) is None


def test_context_len_beyond_positions_cli(tmp_path, tiny_gpt2, text_corpus):
    n_pos = json.loads((tiny_gpt2 / "config.json").read_text())["n_positions"]
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o", context_len=n_pos + 1))
    assert_one_error(res, str(n_pos), "n_positions")
    assert_nothing_written(tmp_path / "o")
    with pytest.raises(ModelError):
        actlake.extract(job(tiny_gpt2, text_corpus, tmp_path / "o", context_len=n_pos * 2))
    assert_nothing_written(tmp_path / "o")


@pytest.mark.slow
def test_context_len_beyond_smollm2_positions(tmp_path, text_corpus):
    res = run("extract", "--model", "smollm2-135m", "--hooks", "model.layers.0", "--data", str(text_corpus),
              "--out", str(tmp_path / "o"), "--context-len", "10000", "--max-tokens", "20000", "--no-progress")
    assert_one_error(res, "8192")
    assert_nothing_written(tmp_path / "o")


# ---- B17: wrong modality, device, config folder, damaged store --------------------------------------------
def test_image_folder_to_text_model(tmp_path, tiny_gpt2, image_folder):
    res = run(*extract_args(tiny_gpt2, image_folder, tmp_path / "o"))
    assert_one_error(res, "not a vision model")
    assert_nothing_written(tmp_path / "o")
    with pytest.raises(ModelError):
        actlake.extract(job(tiny_gpt2, image_folder, tmp_path / "o"))


def test_text_to_vision_model(tmp_path, tiny_vit, text_corpus):
    res = run(*extract_args(tiny_vit, text_corpus, tmp_path / "o", hooks="encoder.layer.0"))
    assert_one_error(res, "vision model")
    assert "sentencepiece" not in res.stderr
    assert_nothing_written(tmp_path / "o")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the no-GPU refusal")
@pytest.mark.parametrize("device", ["cuda", "cuda:1", "tpu9"])
def test_device_without_gpu(tmp_path, tiny_gpt2, text_corpus, device):
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o", device=device))
    assert_one_error(res, device)
    assert_nothing_written(tmp_path / "o")
    with pytest.raises(JobSpecError):
        actlake.extract(job(tiny_gpt2, text_corpus, tmp_path / "o", device=device))


def test_config_is_a_folder(tmp_path):
    res = run("extract", "--config", str(tmp_path))
    assert_one_error(res, "folder")
    with pytest.raises(JobSpecError):
        actlake.extract(str(tmp_path))


@pytest.mark.parametrize("damage", ["pointer", "checkpoint", "commit"])
def test_garbled_commit_log_is_store_damaged(tmp_path, damage):
    from actlake.store.commitlog import CommitLog
    from actlake.store.fs import open_store

    uri = make_store(str(tmp_path / "s"), fragments=(40, 30))
    store = open_store(uri)
    CommitLog(store).write_checkpoint(CommitLog(store).snapshot())
    target = {"pointer": tmp_path / "s" / "_commits" / "_last_checkpoint.json",
              "checkpoint": tmp_path / "s" / "_commits" / f"{1:020d}.checkpoint.json",
              "commit": tmp_path / "s" / "_commits" / f"{1:020d}.json"}[damage]
    if damage == "commit":  # a commit after the checkpoint, garbled
        (tmp_path / "s" / "_commits" / "_last_checkpoint.json").unlink()
    target.write_text('{"version": 1, "fragm')
    with pytest.raises(StoreDamagedError):
        _ = actlake.open_dataset(uri).num_rows
    assert_one_error(run("info", uri), "damaged")


# ---- B15: a failed run does not block its fix; --overwrite ------------------------------------------------
@pytest.fixture(scope="module")
def committed_ctx32(ray_local, tiny_gpt2, text_corpus, tmp_path_factory):
    """A complete job (context_len 32), extracted once for the module; tests change copies of it (a copy is
    the same job: the location is not part of a job's identity, B16 below)."""
    out = tmp_path_factory.mktemp("ctx32") / "o"
    actlake.extract(job(tiny_gpt2, text_corpus, out, context_len=32))
    return out


def test_location_of_a_job_without_commits_is_reusable(ray_local, tmp_path, tiny_gpt2, text_corpus, committed_ctx32):
    """A first attempt that failed before its first commit (manifest written, no commit) leaves its location
    reusable: the corrected command runs there and writes the corrected spec."""
    out = tmp_path / "o"
    shutil.copytree(committed_ctx32, out)  # the context_len=32 job, extracted here
    shutil.rmtree(out / "_commits")  # the state a failed attempt leaves: a manifest, no commit
    shutil.rmtree(out / "fragments")
    m = json.loads((out / "actlake.json").read_text())
    m["status"], m["num_rows"], m["num_fragments"] = "writing", None, None
    (out / "actlake.json").write_text(json.dumps(m))
    actlake.extract(job(tiny_gpt2, text_corpus, out, context_len=16))
    ds = actlake.open_dataset(str(out))
    assert ds.manifest.job.context_len == 16 and ds.manifest.status == "complete"
    assert int(ds.provenance(list(range(ds.num_rows))).column("context_pos").to_numpy().max()) == 15


def test_committed_location_needs_overwrite(ray_local, tmp_path, tiny_gpt2, text_corpus, committed_ctx32):
    out = tmp_path / "o"
    shutil.copytree(committed_ctx32, out)  # the context_len=32 job, extracted here
    commits = sorted(p.name for p in (out / "_commits").iterdir())
    res = run(*extract_args(tiny_gpt2, text_corpus, out))  # context_len 16
    assert_one_error(res, "--overwrite", "context_len")
    assert sorted(p.name for p in (out / "_commits").iterdir()) == commits
    with pytest.raises(StoreLocationError):
        actlake.extract(job(tiny_gpt2, text_corpus, out))
    from actlake.schemas.job import parse_job
    from actlake.service.runner import run_job

    run_job(parse_job(job(tiny_gpt2, text_corpus, out)), overwrite=True)
    ds = actlake.open_dataset(str(out))
    assert ds.manifest.job.context_len == 16 and ds.manifest.status == "complete"
    assert int(ds.provenance(list(range(ds.num_rows))).column("context_pos").to_numpy().max()) == 15


def test_overwrite_never_deletes_foreign_folders(tmp_path, tiny_gpt2, text_corpus):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o"), "--overwrite")
    assert_one_error(res, "not an actlake dataset")
    assert (tmp_path / "o" / "notes.txt").read_text() == "mine"


# ---- B16: the output location is not part of the job's identity ------------------------------------------
def test_resume_through_any_spelling_and_a_copy(ray_local, tmp_path, tiny_gpt2, text_corpus, monkeypatch):
    out = tmp_path / "o"
    actlake.extract(job(tiny_gpt2, text_corpus, out, fragment_tokens=64))
    full = actlake.open_dataset(str(out))
    want = full.num_rows
    assert len(full.snapshot.fragments) >= 3
    copy = tmp_path / "copied"
    shutil.copytree(out, copy)
    last = sorted((copy / "_commits").glob("*[0-9].json"))[-1]
    last.unlink()  # the copy lost its last commit: an interrupted job
    m = json.loads((copy / "actlake.json").read_text())
    m["status"], m["num_rows"], m["num_fragments"] = "writing", None, None
    (copy / "actlake.json").write_text(json.dumps(m))
    monkeypatch.chdir(tmp_path)
    # relative, with a trailing slash, another folder than the one the job was started in; the model
    # directory and the data spelled relative too (the job was started with absolute ones)
    rel_model, rel_data = os.path.relpath(tiny_gpt2, tmp_path), os.path.relpath(text_corpus, tmp_path)
    actlake.extract(job(rel_model + "/", rel_data, "./copied/", fragment_tokens=64))
    resumed = actlake.open_dataset(str(copy))
    assert resumed.manifest.status == "complete" and resumed.num_rows == want
    for spelling in (str(out) + "/", "o", f"{tmp_path}/./o"):  # already complete: nothing to do, no refusal
        # the URI returned is absolute (the driver resolves a relative --out where it runs)
        want_uri = spelling if os.path.isabs(spelling) else os.path.abspath(spelling)
        assert actlake.extract(job(tiny_gpt2, text_corpus, spelling, fragment_tokens=64)) == want_uri


# ---- Ray-wrapped errors reach the caller as their own type ------------------------------------------------
def test_worker_errors_are_unwrapped(ray_local):
    from ray.exceptions import RayError, RayTaskError

    from actlake.schemas.errors import HookError
    from actlake.service.runner import _unwrap

    @ray_local.remote
    def fail(kind: str):
        if kind == "damaged":
            raise StoreDamagedError("fragments/x/acts/h/c/0", "checksum mismatch")
        if kind == "hook":
            raise HookError("unknown hook 'x'")
        raise ZeroDivisionError("boom")

    for kind, cls in (("damaged", StoreDamagedError), ("hook", HookError), ("other", ZeroDivisionError)):
        with pytest.raises(RayTaskError) as info:
            ray_local.get(fail.remote(kind))
        e = _unwrap(info.value)
        assert type(e) is cls and not isinstance(e, RayError)
    e = _unwrap(_raised(ray_local, fail.remote("damaged")))
    assert (e.path, e.problem) == ("fragments/x/acts/h/c/0", "checksum mismatch")


def _raised(ray, ref):
    try:
        ray.get(ref)
    except Exception as e:  # noqa: BLE001 - the wrapped exception is the value under test
        return e
    raise AssertionError("no exception")


def test_unknown_hook_from_the_worker_is_not_a_ray_error(ray_local, tmp_path, tiny_gpt2, text_corpus):
    from ray.exceptions import RayError

    with pytest.raises(actlake.ActlakeError) as info:
        actlake.extract({**job(tiny_gpt2, text_corpus, tmp_path / "o"), "hooks": ["transformer.h.9"]})
    assert not isinstance(info.value, RayError)
    assert_nothing_written(tmp_path / "o")


# ---- C21: --help shows a default for every option, taken from JobSpec ---------------------------------
def test_help_shows_every_default_from_the_job_spec():
    import click
    from typer.main import get_command

    from actlake.cli import app
    from actlake.schemas.job import JobSpec

    group = get_command(app)
    for name in group.list_commands(None):  # type: ignore[arg-type]
        cmd = group.get_command(None, name)  # type: ignore[arg-type]
        ctx = click.Context(cmd)
        for p in cmd.get_params(ctx):
            if isinstance(p, click.Option) and p.name != "help":
                record = p.get_help_record(ctx)
                assert record and "default:" in record[1], (name, p.name, record)
    help_text = extract_help().stdout
    for field in ("context_len", "batch_size", "fragment_tokens", "chunk_rows"):
        assert f"[default: ({JobSpec.model_fields[field].default})]" in help_text, field
    assert "rows per fragment" not in help_text


@pytest.mark.parametrize("cmd", ["info", "verify"])
def test_info_and_verify_on_a_file(tmp_path, cmd):
    from actlake.schemas.errors import NotADatasetError

    f = tmp_path / "notes.txt"
    f.write_text("not a dataset")
    res = run(cmd, str(f))
    assert res.returncode != 0 and "Traceback" not in res.stderr and "not an actlake dataset" in res.stderr
    with pytest.raises(NotADatasetError):
        _ = actlake.open_dataset(str(f)).manifest
