"""C19: every documented or printed command runs as written.

Code blocks are taken from README.md and docs/*.md, the example's documented command from
examples/train_sae.py, and the "Stream it:" snippet from a real ``actlake extract``.  Cheap commands run
for real (in a scratch folder holding tiny stores at the paths the docs name); ``actlake extract`` lines
that would extract a real model for minutes run their whole preflight instead (flags, job spec, output
location, source, model config and position limit: everything but the forward passes); every
``actlake``/``python examples/train_sae.py`` line in any doc parses with the real argument parsers."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from cli_zygote import run_cli

ROOT = Path(__file__).resolve().parents[1]
DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
EXAMPLE = ROOT / "examples" / "train_sae.py"
# servers and cluster commands (they block, or need a Ray head / a model): documented lines are parsed
# with the real argument parsers here and exercised end to end by tests/remote and tests/service.
NOT_RUN_HERE = {"serve", "submit", "jobs", "hooks"}
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "RAY_AUTH_MODE": "disabled", "COLUMNS": "200"}


def code_blocks(md: Path, lang: str) -> list[str]:
    return re.findall(rf"^```{lang}\n(.*?)^```", md.read_text(), flags=re.S | re.M)


def shell_commands(block: str) -> list[list[str]]:
    """Lines of a shell block as argv lists (continuations joined, comments dropped)."""
    out = []
    for line in block.replace("\\\n", " ").splitlines():
        argv = shlex.split(line, comments=True)
        if argv:
            out.append(argv)
    return out


def documented_commands() -> list[tuple[str, list[str]]]:
    cmds = [(md.name, argv) for md in DOCS for lang in ("bash", "sh", "shell", "console")
            for block in code_blocks(md, lang) for argv in shell_commands(block)]
    doc = EXAMPLE.read_text().split('"""')[1].replace("\\\n", " ")
    lines = "\n".join(ln for ln in doc.splitlines() if ln.strip().startswith("python examples/"))
    cmds += [("train_sae.py", argv) for argv in shell_commands(lines)]
    return cmds


def write_demo_like_store(uri: str, hooks: dict[str, int], rows: int = 4096 + 512) -> str:
    """A tiny store with the given hook names (name -> width): stands in for a slow real extraction."""
    from actlake.store.writer import DatasetWriter

    w = DatasetWriter(uri, {h: ((d,), "float32") for h, d in hooks.items()}, chunk_rows=512)
    rng = np.random.default_rng(0)
    for start in range(0, rows, 2048):
        n = min(2048, rows - start)
        rid = np.arange(start, start + n)
        prov = pa.table({"doc_id": rid // 64, "context_id": rid // 16, "context_pos": (rid % 16).astype(np.int32),
                         "token_id": (rid % 97).astype(np.int32)})
        w.add({h: rng.standard_normal((n, d)).astype(np.float32) for h, d in hooks.items()}, prov)
    return w.close()


def _cli_command(argv: list[str]):
    """The click command and parsed context for an ``actlake …`` argv (raises on unknown flags)."""
    from typer.main import get_command

    from actlake.cli import app

    group = get_command(app)
    sub = group.get_command(None, argv[1])  # type: ignore[arg-type]
    assert sub is not None, f"unknown actlake command {argv[1]!r}"
    return sub, sub.make_context(argv[1], argv[2:])


def test_every_documented_command_parses():
    """Each documented ``actlake``/``make``/``python examples/train_sae.py`` line names real flags and values."""
    sys.path.insert(0, str(EXAMPLE.parent))
    from test_train_example import load_example

    ex = load_example()
    targets = set(re.findall(r"^([\w-]+):", (ROOT / "Makefile").read_text(), flags=re.M))
    seen = set()
    for where, argv in documented_commands():
        seen.add(argv[0])
        if argv[0] == "actlake":
            if "--help" in argv:
                continue  # run for real in test_documented_commands_run
            _cli_command(argv)
        elif argv[0] == "make":
            assert set(argv[1:]) <= targets, (where, argv)
        elif argv[:2] == ["python", "examples/train_sae.py"]:
            ex.parse_args(argv[2:])
        elif argv[0] == "python" and argv[1].startswith("examples/"):  # the workflow scripts (docs/workflows.md)
            import importlib.util
            spec = importlib.util.spec_from_file_location(f"doc_{Path(argv[1]).stem}", ROOT / argv[1])
            mod = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(mod)
            mod.build_parser().parse_args(argv[2:])
        else:
            pytest.fail(f"{where}: a documented command this test does not know how to check: {argv}")
    assert {"actlake", "make", "python"} <= seen


def test_example_command_names_a_demo_hook():
    from actlake.schemas.job import DEMO_JOB

    for where, argv in documented_commands():
        if where == "train_sae.py" and "./actlake-data/demo" in argv:
            assert argv[argv.index("--hook") + 1] in DEMO_JOB["hooks"], argv


@pytest.fixture()
def scratch(tmp_path, monkeypatch):
    """A folder with a tiny stand-in for ./actlake-data/demo (the demo's hook names)."""
    from actlake.schemas.job import DEMO_JOB

    monkeypatch.chdir(tmp_path)
    write_demo_like_store("./actlake-data/demo", {h: 8 for h in DEMO_JOB["hooks"]})
    return tmp_path


def test_documented_commands_run(scratch):
    """README's Python and shell blocks, run as written in the scratch folder."""
    from actlake.schemas.job import load_job
    from actlake.service.preflight import preflight
    from actlake.store.fs import open_store

    readme = ROOT / "README.md"
    for block in code_blocks(readme, "python"):
        res = subprocess.run([sys.executable, "-c", block], cwd=scratch, env=ENV, capture_output=True, text=True,
                             timeout=300)
        assert res.returncode == 0, (block, res.stderr[-3000:])
    for block in code_blocks(readme, "yaml"):
        (scratch / "job.yaml").write_text(block)
    ran = 0
    for argv in shell_commands("\n".join(code_blocks(readme, "bash"))):
        if argv[0] != "actlake":
            continue  # make targets: the harness itself
        if argv[1] in NOT_RUN_HERE:
            continue  # parsed by test_every_documented_command_parses; run by tests/remote, tests/service
        if argv[1] == "extract" and "--help" not in argv:
            sub, ctx = _cli_command(argv)  # the real command's flag parsing, then everything but the forwards
            p = ctx.params
            flags = {k: p[k] for k in ("max_tokens", "max_images", "context_len", "batch_size", "dtype",
                                       "compression", "fragment_tokens", "chunk_rows", "num_workers", "device")}
            job = load_job(p["config"], model=p["model"], hooks=p["hooks"], data=p["data"], out=p["out_uri"], **flags)
            preflight(job, open_store(job.out), address=p["address"])
            assert not Path(job.out).exists()
        else:
            if not (scratch / "actlake-data" / "mine").exists():  # what the extract line above would write
                write_demo_like_store("./actlake-data/mine", {"model.layers.0.mlp.down_proj:input": 8})
            # its own process in the scratch folder, forked from a CLI already imported (tests/cli_zygote.py)
            res = run_cli(argv[1:], env=ENV, cwd=scratch, timeout=300)
            assert res.returncode == 0, (argv, res.stderr[-3000:])
            assert "Traceback" not in res.stderr
        ran += 1
    assert ran >= 5


def test_example_command_runs(scratch):
    """examples/train_sae.py's documented command on the tiny demo stand-in (fewer steps)."""
    for where, argv in documented_commands():
        if where != "train_sae.py":
            continue
        args = list(argv)
        args[args.index("--steps") + 1] = "3"
        res = subprocess.run([sys.executable, str(EXAMPLE), *args[2:], "--log-every", "1"], cwd=scratch, env=ENV,
                             capture_output=True, text=True, timeout=300)
        assert res.returncode == 0, res.stderr[-3000:]
        assert (scratch / "runs" / "sae.pt").exists()
        return
    pytest.fail("examples/train_sae.py documents no command")


def test_printed_snippet_runs(tmp_path, tiny_gpt2, text_corpus):
    """A real ``actlake extract``: what it prints after "Stream it:" runs as pasted and reads a batch."""
    out = tmp_path / "o"
    res = subprocess.run([sys.executable, "-m", "actlake.cli", "extract", "--model", str(tiny_gpt2), "--hooks",
                          "transformer.h.0,transformer.h.1.mlp", "--data", str(text_corpus), "--out", str(out),
                          "--max-tokens", "300", "--context-len", "16", "--no-progress"],
                         env={**ENV, "COLUMNS": "60"},  # a narrow terminal must not wrap the snippet
                         capture_output=True, text=True, timeout=400)
    assert res.returncode == 0, res.stderr[-3000:]
    assert "tokenizer" in res.stdout and "on disk" in res.stdout and "prepend bos" in res.stdout
    snippet = res.stdout.split("Stream it:", 1)[1]
    ran = subprocess.run([sys.executable, "-c", snippet], cwd=tmp_path, env=ENV, capture_output=True, text=True,
                         timeout=300)
    assert ran.returncode == 0, (snippet, ran.stderr[-3000:])
    import actlake

    ds = actlake.open_dataset(str(out))
    bs = int(re.search(r"batch_size=(\d+)", snippet).group(1))
    assert 0 < bs <= ds.num_rows
    assert f"'transformer.h.0': ({bs}, 64)" in ran.stdout and f"'transformer.h.1.mlp': ({bs}, 64)" in ran.stdout


def test_snippet_for_every_store_size(tmp_path):
    """The snippet reads a batch from stores smaller and larger than its default batch.  The four snippets run
    in one fresh interpreter (one torch import), each as printed in a namespace of its own."""
    from actlake.cli import snippet

    sizes = (1, 37, 4096, 5000)
    codes = [snippet(write_demo_like_store(str(tmp_path / f"s{rows}"), {"h": 4}, rows=rows), rows, "h")
             for rows in sizes]
    each = ("import sys\n"
            "for code in sys.argv[1:]:\n"
            "    exec(compile(code, '<snippet>', 'exec'), {'__name__': '__main__'})\n"
            "    print('-- end of snippet --', flush=True)\n")
    res = subprocess.run([sys.executable, "-c", each, *codes], env=ENV, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-2000:]
    outs = res.stdout.split("-- end of snippet --\n")
    assert len(outs) == len(sizes) + 1 and outs[-1] == "", res.stdout
    for rows, out in zip(sizes, outs[:-1], strict=True):
        assert f"({min(rows, 4096) if rows in (1, 4096, 5000) else 32}, 4)" in out, (rows, out)


def test_runtime_flags_keep_the_demo(tmp_path):
    """``actlake extract --no-progress`` (flags, no model) is the demo; shown by a refusal in its preflight
    (a context longer than SmolLM2's 8,192 positions), so nothing runs and nothing is written."""
    res = subprocess.run([sys.executable, "-m", "actlake.cli", "extract", "--no-progress", "--batch-size", "4",
                          "--context-len", "9000"], cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=300)
    assert res.returncode != 0 and "Traceback" not in res.stderr
    assert "demo" in res.stderr and "smollm2-135m" in res.stderr
    assert [ln for ln in res.stderr.splitlines() if ln.startswith("error:")] and "8192" in res.stderr
    assert not (tmp_path / "actlake-data").exists()
