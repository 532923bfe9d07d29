"""deploy/: every YAML parses, job specs validate, images and Ray versions agree with the package,
and every command that runs actlake names a subcommand / flags that exist."""
from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest
import yaml

import actlake
from actlake.schemas.job import parse_job

DEPLOY = Path(__file__).resolve().parents[1] / "deploy"
YAMLS = sorted(DEPLOY.rglob("*.yaml"))


def _docs() -> list[tuple[Path, dict]]:
    return [(p, d) for p in YAMLS for d in yaml.safe_load_all(p.read_text()) if d is not None]


def _walk(node, key: str):
    """Every value stored under ``key`` anywhere in a parsed YAML tree."""
    if isinstance(node, dict):
        for k, v in node.items():
            if k == key:
                yield v
            yield from _walk(v, key)
    elif isinstance(node, list):
        for v in node:
            yield from _walk(v, key)


def _check_actlake_command(cmd: str) -> None:
    """`actlake SUB [SUB2] --flags` must exist in the typer app; `python -m actlake.service.driver` in argparse."""
    argv = shlex.split(cmd)
    if argv[:3] == ["python", "-m", "actlake.service.driver"]:
        from actlake.service.driver import main

        with pytest.raises(SystemExit) as e:  # --help exits 0 only if every other flag parsed
            main(argv[3:] + ["--help"])
        assert e.value.code == 0, cmd
        flags = {a.split("=")[0] for a in argv[3:] if a.startswith("--")}
        known = {"--spec-env", "--address", "--detached", "--lease-s", "--discover-s"}
        assert flags <= known, (cmd, flags - known)
        return
    if argv[0] != "actlake":
        return
    import typer

    from actlake.cli import app

    group = typer.main.get_command(app)
    sub = group.commands[argv[1]]  # KeyError = unknown subcommand
    rest = argv[2:]
    if hasattr(sub, "commands"):
        sub, rest = sub.commands[argv[2]], argv[3:]
    opts = {o for p in sub.params for o in getattr(p, "opts", [])}
    for a in rest:
        if a.startswith("-"):
            assert a.split("=")[0] in opts, (cmd, a)


def test_every_yaml_parses_and_is_kind_consistent():
    docs = _docs()
    kinds = {d.get("kind") for _, d in docs}
    assert {"RayCluster", "RayJob", "ConfigMap"} <= kinds
    assert any("available_node_types" in d for _, d in docs)


def test_job_specs_validate():
    specs = [parse_job(yaml.safe_load((DEPLOY / "job.example.yaml").read_text()))]
    for _, d in _docs():
        if d.get("kind") == "ConfigMap":
            specs += [parse_job(yaml.safe_load(v)) for k, v in d["data"].items() if k.endswith(".yaml")]
    assert len(specs) >= 2 and all(s.plan == "shards" for s in specs)


def test_images_and_versions_agree_with_the_package():
    import ray

    images = set()
    for _, d in _docs():
        images |= {v for v in _walk(d, "image") if isinstance(v, str)}
        images |= {v for v in _walk(d, "head_image") if isinstance(v, str)}
        for v in _walk(d, "rayVersion"):
            assert v == ray.__version__
    assert images == {f"actlake:{actlake.__version__}-gpu", f"actlake:{actlake.__version__}-cpu"}
    for f in ("Dockerfile", "Dockerfile.cpu"):
        text = (DEPLOY / f).read_text()
        base = re.search(r"ARG RAY_IMAGE=rayproject/ray:([\d.]+)-py(\d)(\d+)", text)
        assert base and base.group(1) == ray.__version__, f
        tag = re.search(r"-t (actlake:\S+)", text)
        assert tag and tag.group(1) in images, f


def test_commands_and_entrypoints_exist_in_the_cli():
    cmds = []
    for p, d in _docs():
        cmds += [v for v in _walk(d, "entrypoint") if isinstance(v, str)]
        for key in ("head_start_ray_commands", "worker_start_ray_commands", "setup_commands"):
            cmds += [c for v in _walk(d, key) for c in v]
    for p in [*YAMLS, DEPLOY / "Dockerfile", DEPLOY / "Dockerfile.cpu", DEPLOY.parent / "docs" / "operations.md"]:
        cmds += re.findall(r"(actlake (?:submit|jobs|extract|verify|info)[^\n`]*)", p.read_text())
    assert any("actlake.service.driver" in c for c in cmds) and any(c.startswith("actlake submit") for c in cmds)
    for c in cmds:
        _check_actlake_command(c.split("#")[0].strip())
