"""A module that runs several times per forward (ALBERT's shared layer) is always detected: refused
without ``:call``, and ``:call=N`` / ``:call=all`` give exactly the N-th call of a direct forward."""
from __future__ import annotations

import pytest
import torch

from actlake.schemas.errors import HookError
from actlake.schemas.hooks import parse_hooks
from actlake.workers.hooks import Capture, resolve_hooks

SHARED = "encoder.albert_layer_groups.0.albert_layers.0"


@pytest.fixture(scope="module")
def albert():
    from transformers import AlbertConfig, AlbertModel

    torch.manual_seed(0)
    cfg = AlbertConfig(vocab_size=100, embedding_size=16, hidden_size=32, num_hidden_layers=3,
                       num_attention_heads=4, intermediate_size=64)
    return AlbertModel(cfg).eval()


def _direct_calls(model, module: str, ids) -> list[torch.Tensor]:
    """Every call's output of ``module`` in one plain forward (no actlake code)."""
    got = []
    h = dict(model.named_modules())[module].register_forward_hook(
        lambda m, a, o: got.append((o[0] if isinstance(o, tuple) else o).detach()))
    with torch.no_grad():
        model(input_ids=ids)
    h.remove()
    return got


def _ids():
    return torch.randint(0, 100, (2, 7), generator=torch.Generator().manual_seed(1))


def test_shared_layer_without_call_is_refused_with_count(albert):
    hooks = resolve_hooks(albert, parse_hooks([SHARED]))
    with Capture(albert, hooks) as cap, pytest.raises(HookError, match="3 times"):
        cap.run(input_ids=_ids())


def test_refused_even_when_another_hook_is_earlier(albert):
    # the early cut must not hide the second call: an earlier hook fires first, the shared one last
    hooks = resolve_hooks(albert, parse_hooks(["embeddings", f"{SHARED}.ffn"]))
    with Capture(albert, hooks) as cap, pytest.raises(HookError, match="ffn"):
        cap.run(input_ids=_ids())


@pytest.mark.parametrize("n", [0, 1, 2])
def test_call_n_equals_direct_forward_nth_call(albert, n):
    ids = _ids()
    want = _direct_calls(albert, SHARED, ids)
    assert len(want) == 3
    hooks = resolve_hooks(albert, parse_hooks([f"{SHARED}:call={n}", f"{SHARED}.attention:q:call={n}"]))
    assert hooks[0].name == f"{SHARED}:call={n}"
    with Capture(albert, hooks) as cap:
        for _ in range(2):  # first forward counts calls uncut; the second is cut after call n
            out = cap.run(input_ids=ids)
            assert torch.equal(out[f"{SHARED}:call={n}"], want[n])
    q_direct = _direct_calls(albert, f"{SHARED}.attention.query", ids)[n]
    assert torch.equal(out[f"{SHARED}.attention:q:call={n}"], q_direct.reshape(2, 7, 4, 8))


def test_call_all_stacks_every_call(albert):
    ids = _ids()
    want = torch.stack(_direct_calls(albert, SHARED, ids), dim=2)
    hooks = resolve_hooks(albert, parse_hooks([f"{SHARED}:call=all"]))
    with Capture(albert, hooks) as cap:
        out = cap.run(input_ids=ids)
    assert out[f"{SHARED}:call=all"].shape == (2, 7, 3, 32)
    assert torch.equal(out[f"{SHARED}:call=all"], want)


def test_call_out_of_range_is_refused(albert):
    hooks = resolve_hooks(albert, parse_hooks([f"{SHARED}:call=3"]))
    with Capture(albert, hooks) as cap, pytest.raises(HookError, match="no call 3"):
        cap.run(input_ids=_ids())


def test_bad_call_suffix_is_a_value_error():
    with pytest.raises(ValueError):
        parse_hooks(["x:call=first"])
