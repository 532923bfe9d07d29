"""Shared fixtures: a real embedded Ray on 127.0.0.2, tiny real models built from configs, real data."""
from __future__ import annotations

import os
import sysconfig
from pathlib import Path

import pytest

os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@pytest.fixture(scope="session")
def ray_local():
    """One embedded Ray for the whole session (run_job reuses it instead of starting its own)."""
    import ray

    from actlake.service.cluster import ensure_ray

    ensure_ray(num_cpus=2)
    yield ray
    ray.shutdown()


def _corpus_files(n: int) -> list[Path]:
    root = Path(sysconfig.get_paths()["stdlib"])
    names = ["textwrap.py", "string.py", "shlex.py", "bisect.py", "heapq.py", "colorsys.py", "fnmatch.py",
             "keyword.py", "queue.py", "sched.py"]
    return [root / n_ for n_ in names[:n]]


@pytest.fixture(scope="session")
def text_corpus(tmp_path_factory) -> Path:
    """A folder of real text documents (a few stdlib modules)."""
    d = tmp_path_factory.mktemp("corpus")
    for i, f in enumerate(_corpus_files(6)):
        (d / f"{i:02d}_{f.stem}.txt").write_text(f.read_text())
    return d


@pytest.fixture(scope="session")
def tiny_gpt2(tmp_path_factory, text_corpus) -> Path:
    """A 3-layer GPT-2 with a word-level tokenizer trained here on the corpus; saved as an HF dir."""
    from tokenizers import Tokenizer, models, pre_tokenizers, trainers
    from transformers import GPT2Config, GPT2LMHeadModel, PreTrainedTokenizerFast
    import torch

    tok = Tokenizer(models.WordLevel(unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    trainer = trainers.WordLevelTrainer(vocab_size=2000, special_tokens=["<unk>", "<bos>", "<eos>", "<pad>"])
    tok.train([str(p) for p in sorted(text_corpus.iterdir())], trainer)
    fast = PreTrainedTokenizerFast(tokenizer_object=tok, unk_token="<unk>", bos_token="<bos>",
                                   eos_token="<eos>", pad_token="<pad>")
    torch.manual_seed(0)
    cfg = GPT2Config(vocab_size=len(fast), n_positions=128, n_embd=64, n_layer=3, n_head=4,
                     bos_token_id=fast.bos_token_id, eos_token_id=fast.eos_token_id)
    model = GPT2LMHeadModel(cfg).eval()
    d = tmp_path_factory.mktemp("tiny-gpt2")
    model.save_pretrained(d)
    fast.save_pretrained(d)
    return d


@pytest.fixture(scope="session")
def image_folder(tmp_path_factory) -> Path:
    """Real photographs bundled with scikit-image, in an ImageFolder layout (sub-folder = label)."""
    from PIL import Image
    from skimage import data

    d = tmp_path_factory.mktemp("images")
    picks = {"animal": ["chelsea", "cat"], "object": ["coffee", "rocket"], "person": ["astronaut"]}
    for label, names in picks.items():
        (d / label).mkdir()
        for n in names:
            arr = getattr(data, n)()
            Image.fromarray(arr).convert("RGB").save(d / label / f"{n}.png")
    return d


@pytest.fixture(scope="session")
def tiny_vit(tmp_path_factory) -> Path:
    from transformers import ViTConfig, ViTImageProcessor, ViTModel
    import torch

    torch.manual_seed(0)
    cfg = ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=4,
                    intermediate_size=64)
    d = tmp_path_factory.mktemp("tiny-vit")
    ViTModel(cfg).eval().save_pretrained(d)
    ViTImageProcessor(size={"height": 32, "width": 32}).save_pretrained(d)
    return d



# ---- pytest-xdist (`make test` runs `pytest -n 2 --dist loadscope`) ----------------------------------------
# Modules that start real multi-process Ray clusters on 127.0.0.3+ (Jobs API head, cluster_utils nodes, a
# user's `ray start`): they run on one worker, one after another, never two clusters of theirs at once.
RAY_CLUSTER_MODULES = {"tests/service/test_submit.py", "tests/service/test_elastic.py", "tests/test_embedded_ray.py",
                       "tests/service/test_submit_auth.py"}


def pytest_xdist_make_scheduler(config, log):
    """``--dist loadscope``: one test module is one unit of work (its module-scoped fixtures are built once,
    on one worker), and RAY_CLUSTER_MODULES are one unit together; units are handed out in collection order
    (modules with ``slow`` tests first, see below) as workers become free."""
    if config.getvalue("dist") != "loadscope":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class ModuleScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            module = nodeid.split("::", 1)[0]
            return "ray-clusters" if module in RAY_CLUSTER_MODULES else module

    config.option.loadscopereorder = False  # keep the order below, not "most tests first"
    return ModuleScheduling(config, log)


def pytest_collection_modifyitems(config, items):
    """On an xdist worker: modules holding ``slow`` tests (and the Ray-cluster modules) first, so the long
    units overlap instead of one of them running alone at the end.  Stable: each module stays contiguous.
    A plain (serial) run keeps pytest's collection order."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return
    first = {it.nodeid.split("::", 1)[0] for it in items if it.get_closest_marker("slow")} | RAY_CLUSTER_MODULES
    items.sort(key=lambda it: it.nodeid.split("::", 1)[0] not in first)


# ---- nothing written into the checkout ------------------------------------------------------------------
# A test that writes a store relative to the working directory (a relative --out resolved in the wrong
# process) leaves it in the repository, where a later `git add -A` commits it: the run fails instead.
REPO = Path(__file__).resolve().parents[1]


def _untracked() -> set[str] | None:
    import subprocess

    try:
        r = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--untracked-files=normal"],
                           capture_output=True, text=True, timeout=60)
    except (OSError, subprocess.SubprocessError):
        return None
    if r.returncode:
        return None
    return {ln[3:] for ln in r.stdout.splitlines() if ln.startswith("?? ")}


def pytest_sessionstart(session):
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        session.config._actlake_untracked = _untracked()


def pytest_sessionfinish(session, exitstatus):
    before = getattr(session.config, "_actlake_untracked", None)
    if before is None or os.environ.get("PYTEST_XDIST_WORKER"):
        return
    new = sorted((_untracked() or set()) - before)
    if new:
        tr = session.config.pluginmanager.get_plugin("terminalreporter")
        msg = f"tests left files in the checkout (write under tmp_path instead): {', '.join(new)}"
        if tr is not None:
            tr.write_line(msg, red=True)
        session.exitstatus = pytest.ExitCode.TESTS_FAILED
