"""Bad input: one clear error line, exit code != 0, nothing partial visible to readers."""
from __future__ import annotations

import functools
import os
import subprocess
import sys

import pytest

import actlake
from cli_zygote import run_cli

CLI = [sys.executable, "-m", "actlake.cli"]


def _env() -> dict[str, str]:
    return {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}


def run(*args: str, fresh: bool = False) -> subprocess.CompletedProcess:
    """``python -m actlake.cli ARGS``: a process of its own, forked from an interpreter that has imported the
    CLI already (tests/cli_zygote.py: same exit status, stdout, stderr, environment and directory, without ~3 s
    of imports per command); ``fresh=True``: a new interpreter (for checks of the entry point's imports)."""
    if fresh:
        return subprocess.run(CLI + list(args), capture_output=True, text=True, env=_env(), timeout=300)
    return run_cli(list(args), env=_env(), timeout=300)


@functools.cache
def extract_help() -> subprocess.CompletedProcess:
    """``actlake extract --help`` from the console entry point, run once per session (two modules read it)."""
    return run("extract", "--help", fresh=True)


def assert_one_error(res: subprocess.CompletedProcess, *needles: str) -> None:
    assert res.returncode != 0
    assert "Traceback" not in res.stderr, res.stderr[-3000:]
    errors = [ln for ln in res.stderr.splitlines() if ln.startswith("error:")]
    assert len(errors) == 1, res.stderr[-3000:]
    for n in needles:
        assert n in errors[0], errors[0]


def extract_args(model, data, out, hooks="transformer.h.0", **extra) -> list[str]:
    args = ["extract", "--model", str(model), "--hooks", hooks, "--data", str(data), "--out", str(out),
            "--max-tokens", "200", "--context-len", "16", "--no-progress"]
    for k, v in extra.items():
        args += [f"--{k.replace('_', '-')}", str(v)]
    return args


def test_unknown_model_path(tmp_path, text_corpus):
    res = run(*extract_args(tmp_path / "no-such-model", text_corpus, tmp_path / "o"))
    assert_one_error(res, "model path not found")
    assert not (tmp_path / "o").exists()


def test_unknown_hook_lists_closest_names(tmp_path, tiny_gpt2, text_corpus):
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o", hooks="transformer.h.0.mlp.actt"))
    assert_one_error(res, "unknown hook", "transformer.h.0.mlp.act")
    assert not (tmp_path / "o" / "actlake.json").exists()


def test_empty_source(tmp_path, tiny_gpt2):
    (tmp_path / "empty").mkdir()
    res = run(*extract_args(tiny_gpt2, tmp_path / "empty", tmp_path / "o"))
    assert_one_error(res, "source is empty")
    assert not (tmp_path / "o").exists()


def test_bad_dtype(tmp_path, tiny_gpt2, text_corpus):
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o", dtype="int8"))
    assert_one_error(res, "dtype", "bf16, fp16, fp32")


def test_bad_job_file_names_the_field(tmp_path):
    cfg = tmp_path / "job.yaml"
    cfg.write_text("model: x\nhooks: [a]\ndata: stdlib\nout: /tmp/x\ncontext_len: -3\n")
    res = run("extract", "--config", str(cfg))
    assert_one_error(res, "context_len")


def test_existing_output_with_different_job_spec(ray_local, tmp_path, tiny_gpt2, text_corpus):
    out = tmp_path / "o"
    actlake.extract({"model": str(tiny_gpt2), "hooks": ["transformer.h.0"], "data": str(text_corpus),
                     "out": str(out), "max_tokens": 200, "context_len": 16, "progress": False})
    before = sorted(p.name for p in (out / "_commits").iterdir())
    res = run(*[a if a != "16" else "32" for a in extract_args(tiny_gpt2, text_corpus, out)])
    assert_one_error(res, "different job spec", "context_len")
    assert sorted(p.name for p in (out / "_commits").iterdir()) == before


def test_output_is_some_other_folder(tmp_path, tiny_gpt2, text_corpus):
    (tmp_path / "o").mkdir()
    (tmp_path / "o" / "notes.txt").write_text("mine")
    res = run(*extract_args(tiny_gpt2, text_corpus, tmp_path / "o"))
    assert_one_error(res, "not an actlake dataset")


@pytest.mark.parametrize("cmd", ["info", "verify"])
def test_unreadable_store(tmp_path, cmd):
    if cmd == "info":
        assert_one_error(run(cmd, str(tmp_path / "nothing")), "not an actlake dataset")
    else:
        res = run(cmd, str(tmp_path / "nothing"))
        assert res.returncode != 0 and "not an actlake dataset" in res.stderr  # NotADatasetError: one error line
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "actlake.json").write_text("{not json")
    res = run(cmd, str(tmp_path / "bad"))
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "not valid JSON" in res.stderr


def test_help_everywhere():
    """--help from a fresh interpreter (the entry point's imports and the typer app); every command's --help
    also runs in-process in tests/test_cli_surface.py."""
    for res in (run("--help", fresh=True), extract_help()):
        assert res.returncode == 0 and "Usage" in res.stdout


def _jsonl_bad_at(path, good_before: int, good_after: int, text: str) -> None:
    import json

    good = json.dumps({"text": text})
    lines = [good] * good_before + ['{"text": "unterminated'] + [good] * good_after
    path.write_text("\n".join(lines) + "\n")


def test_job_failing_before_its_first_commit_leaves_nothing(tmp_path, tiny_gpt2, text_corpus):
    """A source error found by the workers (not by preflight) before any commit: one error line, and
    neither a dataset stub nor a directory this run created is left; a directory the user made stays."""
    text = sorted(text_corpus.iterdir())[0].read_text()[:3000]
    _jsonl_bad_at(tmp_path / "bad.jsonl", 2, 3, text)
    res = run(*extract_args(tiny_gpt2, tmp_path / "bad.jsonl", tmp_path / "o"))
    assert_one_error(res, "bad.jsonl:3", "not valid JSON")
    assert not (tmp_path / "o").exists()
    (tmp_path / "mine").mkdir()
    res = run(*extract_args(tiny_gpt2, tmp_path / "bad.jsonl", tmp_path / "mine"))
    assert_one_error(res, "bad.jsonl:3")
    assert (tmp_path / "mine").is_dir() and not any((tmp_path / "mine").iterdir())


def test_encoder_decoder_model_is_refused_with_the_way_out(tmp_path, tiny_gpt2, text_corpus):
    """T5 (encoder-decoder): one error line before anything is written, from `extract` and `hooks`
    alike, naming the way out (save the encoder alone), instead of a ValueError from the forward."""
    from transformers import AutoTokenizer, T5Config, T5ForConditionalGeneration

    tok = AutoTokenizer.from_pretrained(tiny_gpt2)
    t5 = T5ForConditionalGeneration(T5Config(vocab_size=len(tok), d_model=16, d_kv=4, d_ff=32, num_layers=1,
                                             num_heads=4, decoder_start_token_id=0))
    t5.save_pretrained(tmp_path / "t5")
    tok.save_pretrained(tmp_path / "t5")
    res = run(*extract_args(tmp_path / "t5", text_corpus, tmp_path / "o", hooks="encoder.block.0"))
    assert_one_error(res, "encoder-decoder", "T5EncoderModel")
    assert not (tmp_path / "o").exists()
    res = run("hooks", str(tmp_path / "t5"))
    assert_one_error(res, "encoder-decoder")
