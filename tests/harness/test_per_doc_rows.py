"""``per_doc`` in one pass: each batch row gets its own document's group, batches stay full.

Every row must come out bit-equal to a run that applies that row's group to the same
batches (one group, hooked), and rows of documents without neurons equal the plain
model's. Reuses the tiny Llama, neuron set and prompts of ``test_prefix_cache``.
"""

# ruff: noqa: F811  (the fixtures come from test_prefix_cache)
from __future__ import annotations

import pytest
import torch
from lm_eval.api.instance import Instance
from test_prefix_cache import GEN_KWARGS, _prompts, _requests, neuron_file, tiny_dir  # noqa: F401

from relneuron_eval.core.interventions import HookState, UnitEdit
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness.lm_model import RelNeuronLM

GROUPS = ("capital", "currency", "hq")
ANSWERS = (" Paris", " the Yen and", " Munich")


def _ll_requests(extra: list[tuple[str, str, str]] = ()) -> list[Instance]:
    items = [(g, p, a) for g, p in _prompts() for a in ANSWERS] + list(extra)
    return [
        Instance("loglikelihood", {"group": g}, (p, a), idx=0, metadata=("t", i, 1))
        for i, (g, p, a) in enumerate(items)
    ]


def _lm(tiny_dir, batch_size: int = 8, **args) -> RelNeuronLM:
    common = {"pretrained": str(tiny_dir), "device": "cpu", "batch_size": batch_size}
    return RelNeuronLM(**common, prefix_cache=False, **args)


def _by_group(tiny_dir, neuron_file, requests, kind: str, batch_size: int = 8, **args) -> list:
    """Each request's output from a run of its own group only (plain for no group)."""
    runs = {None: getattr(_lm(tiny_dir, batch_size), kind)(requests)}
    for group in GROUPS:
        set_args = {"neuron_set": str(neuron_file), "groups": group, "strategy": "hook"}
        lm = _lm(tiny_dir, batch_size, **set_args, **args)
        runs[group] = getattr(lm, kind)(requests)
    groups = [r.doc["group"] if r.doc["group"] in GROUPS else None for r in requests]
    return [runs[g][i] for i, g in enumerate(groups)]


@pytest.mark.parametrize(
    "args", [{}, {"positions": "last"}, {"mode": "set", "value": 3.0}], ids=["all", "last", "set"]
)
@pytest.mark.parametrize("kind", ["loglikelihood", "generate_until"])
def test_rows_equal_their_own_groups_run(tiny_dir, neuron_file, args, kind):
    requests = _ll_requests() if kind == "loglikelihood" else _requests(GEN_KWARGS)
    lm = _lm(tiny_dir, neuron_set=str(neuron_file), per_doc="group", **args)
    got = getattr(lm, kind)(requests)
    assert got == _by_group(tiny_dir, neuron_file, requests, kind, **args)
    assert got != getattr(_lm(tiny_dir), kind)(requests)  # the edits matter here


def _forwards(lm: RelNeuronLM, kind: str, requests) -> int:
    calls = [0]

    def count(module, args):
        calls[0] += 1

    handle = lm.model.register_forward_pre_hook(count)
    try:
        getattr(lm, kind)(requests)
    finally:
        handle.remove()
    return calls[0]


def test_full_batches_as_plain(tiny_dir, neuron_file):
    """Before: one call per group bucket, 4 half-empty loglikelihood batches of 8 rows
    became 7 (and generation likewise)."""
    per_doc = _lm(tiny_dir, neuron_set=str(neuron_file), per_doc="group")
    plain = _lm(tiny_dir)
    requests = _ll_requests()
    assert _forwards(per_doc, "loglikelihood", requests) == _forwards(
        plain, "loglikelihood", requests
    )
    gen = _requests(GEN_KWARGS[:1])
    per_doc_gen = _forwards(per_doc, "generate_until", gen)
    assert per_doc_gen <= _forwards(plain, "generate_until", gen)  # stops may differ


@pytest.mark.parametrize("kind", ["loglikelihood", "generate_until"])
def test_same_input_in_two_groups(tiny_dir, neuron_file, kind):
    """A batch row is known by its input: equal inputs of two groups run in separate
    rounds (HFLM would also merge them into one row)."""
    prompt = "The capital of Chad is"
    if kind == "loglikelihood":
        requests = _ll_requests([("currency", prompt, " Paris"), ("hq", prompt, " Paris")])
    else:
        requests = _requests(GEN_KWARGS[:1])
        requests += [
            Instance("generate_until", {"group": g}, (prompt, dict(GEN_KWARGS[0])), 0, ("t", 0, 1))
            for g in ("currency", "hq", "currency")
        ]
    lm = _lm(tiny_dir, batch_size=1, neuron_set=str(neuron_file), per_doc="group")
    got = getattr(lm, kind)(requests)
    assert got == _by_group(tiny_dir, neuron_file, requests, kind, batch_size=1)
    if kind == "loglikelihood":
        assert got[-1] != got[-2]


def test_row_table_set_mode_beams_and_last_position():
    state = HookState("last")
    key = ("mlp.act", 0)
    state.group_edits = [{}, {key: UnitEdit((1,), None, 5.0)}, {key: UnitEdit((2, 3), None, 5.0)}]
    x = torch.zeros(4, 3, 6)
    state.row_groups = torch.tensor([1, 2])  # two prompts, two beams each
    out = state.transform(key, x, 1)
    assert out[:, :2].eq(0).all()
    assert out[:, 2].tolist() == [[0, 0, 5, 0, 0, 0]] * 2 + [[0, 0, 0, 5, 5, 0]] * 2
    state.row_groups = None  # e.g. HFLM's batch-size probe: nothing edited
    assert state.transform(key, x, 1) is x
    state.row_groups = torch.tensor([1, 2, 0])
    with pytest.raises(RelNeuronError, match="3 documents"):
        state.transform(key, x, 1)
