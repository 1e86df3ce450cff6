"""``relneuron find`` end to end on the embedded SmolLM2-135M, plus the ranking by hand.

The CLI runs are small (a few discovery facts of two relations, 3-shot prompts) but
real: the real model answers, the real activations are ranked. An interrupted run
must leave no output and resume to the same file; two ``accelerate launch`` CPU
processes (gloo) must give the same file as one process.

The checkpoint, few-shot and help tests run a tiny random Llama on a made-up spec
whose objects are partly the model's own greedy answers, so a run has positives.
"""

from __future__ import annotations

import gzip
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from sklearn.metrics import average_precision_score

from relneuron_eval.core.neuron_set import ModelShape, load
from relneuron_eval.discovery.activations import ActivationStore, Layout
from relneuron_eval.discovery.relation_specific import make_labellings, rank_units, to_neurons

RELNEURON = [sys.executable, "-m", "relneuron_eval.cli"]
RS_ARGS = [
    "find",
    "relation-specific",
    "--relations",
    "country_capital_city,landmark_on_continent",
    "--max-facts",
    "4",
    "--fewshot",
    "3",
    "--top-k",
    "40",
    "--min-positives",
    "2",
    "--batch-size",
    "4",
    "--no-progress",
]
KN_ARGS = [
    "find",
    "knowledge-neurons",
    "--relations",
    "country_capital_city",
    "--max-facts",
    "4",  # the model answers 2 of the first 4 under every prompt (the check drops 2)
    "--fewshot",
    "3",
    "--steps",
    "4",
    "--layers",
    "22-29",
    "--no-progress",
]


def _env() -> dict[str, str]:
    return {
        **os.environ,
        "HF_HUB_OFFLINE": "1",
        "HF_DATASETS_OFFLINE": "1",
        "OMP_NUM_THREADS": "1",
        "TOKENIZERS_PARALLELISM": "false",
    }


def _run(args: list[str], check: bool = True) -> subprocess.CompletedProcess:
    proc = subprocess.run([*RELNEURON, *args], env=_env(), capture_output=True, text=True)
    if check and proc.returncode != 0:
        raise AssertionError(f"relneuron {args[:2]} failed:\n{proc.stderr[-3000:]}")
    return proc


def _launch_two(args: list[str]) -> subprocess.CompletedProcess:
    from relneuron_eval.benchmarks.data_parallel import accelerate_prefix

    cmd = [
        *accelerate_prefix(2, module="relneuron_eval.cli"),
        *args,
        "--device",
        "cpu",
    ]
    env = {**_env(), "ACCELERATE_USE_CPU": "1"}
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stderr[-4000:]
    return proc


def _lines(path: Path) -> list[str]:
    raw = path.read_bytes()
    text = gzip.decompress(raw).decode() if raw[:2] == b"\x1f\x8b" else raw.decode()
    return text.splitlines()


@pytest.fixture(scope="module")
def single_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("rs") / "one.jsonl"
    proc = _run([*RS_ARGS, "--out", str(out)])
    assert "country_capital_city" in proc.stdout  # the summary table
    return out


@pytest.mark.slow
def test_relation_specific_output(single_run):
    neuron_set = load(single_run)
    assert neuron_set.groups() == ["country_capital_city", "landmark_on_continent"]
    method = neuron_set.method
    assert method["name"] == "relation-specific"
    assert method["data"]["split"] == "discovery" and method["params"]["top_k"] == 40
    assert method["params"]["correct"] == "match"  # the default criterion, named
    assert "acc_match" in method["params"]["correct_rule"]
    assert neuron_set.model["num_layers"] == 30 and neuron_set.model["intermediate_size"] == 1536
    for group in neuron_set.groups():
        members = [n for n in neuron_set if n.group == group]
        assert len(members) == 40
        assert {n.site for n in members} <= {"mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"}
        scores = [n.score for n in members]
        assert scores == sorted(scores, reverse=True) and 0 < scores[-1] <= 1
    assert not list(single_run.parent.glob(".*.work")), "work folder left behind"


@pytest.mark.slow
def test_interrupted_run_leaves_nothing_and_resumes_to_the_same_file(single_run, tmp_path):
    out = tmp_path / "resumed.jsonl"
    proc = _run([*RS_ARGS, "--out", str(out), "--stop-after", "1"], check=False)
    assert proc.returncode != 0
    assert not out.exists()
    work = tmp_path / ".resumed.jsonl.work"
    done = np.load(work / "done.npy")
    assert 0 < done.sum() < len(done)  # some batches were kept for the resume
    _run([*RS_ARGS, "--out", str(out)])
    assert _lines(out) == _lines(single_run)
    assert not work.exists()


@pytest.mark.slow
def test_two_processes_equal_one(single_run, tmp_path):
    out = tmp_path / "two.jsonl"
    _launch_two([*RS_ARGS, "--out", str(out)])
    assert _lines(out) == _lines(single_run)


@pytest.mark.slow
def test_knowledge_neurons_two_processes_and_resume_equal_one(tmp_path):
    one, two, resumed = (tmp_path / f"{n}.jsonl.gz" for n in ("one", "two", "resumed"))
    proc = _run([*KN_ARGS, "--out", str(one)])
    assert "knowledge neurons:" in proc.stdout
    neuron_set = load(one)
    assert neuron_set.method["name"] == "knowledge-neurons"
    assert all(n.site == "mlp.act" for n in neuron_set)
    fact_groups = [g for g in neuron_set.groups() if "/" in g]
    assert fact_groups and all(g.startswith("country_capital_city/") for g in fact_groups)
    data = neuron_set.method["data"]
    assert neuron_set.method["params"]["correct"] == "match"  # the default, named
    assert neuron_set.method["params"]["drop_objects"] == 3  # the measured default refinement
    assert data["facts_checked"] == 4 and data["facts"] + len(data["facts_dropped"]) == 4
    assert not set(fact_groups) & set(data["facts_dropped"])
    assert f"{data['facts']} of 4 facts answered correctly" in proc.stderr
    _launch_two([*KN_ARGS, "--out", str(two)])
    assert _lines(two) == _lines(one)
    assert _run([*KN_ARGS, "--out", str(resumed), "--stop-after", "1"], check=False).returncode
    assert not resumed.exists()
    _run([*KN_ARGS, "--out", str(resumed)])
    assert _lines(resumed) == _lines(one)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--relations", "no_such_relation"], "unknown relation(s) ['no_such_relation']"),
        (["--top-k", "200000"], "larger than the 109,440 units"),
        (["--sites", "mlp.nope"], "unknown or no site(s)"),
        (["--relations", "country_capital_city"], "at least 2 relations"),
    ],
)
def test_bad_input_is_one_clear_error_and_writes_nothing(tmp_path, args, message):
    out = tmp_path / "x.jsonl"
    base = [a for a in RS_ARGS]
    for flag, value in zip(args[::2], args[1::2], strict=True):
        if flag in base:
            base[base.index(flag) + 1] = value
        else:
            base += [flag, value]
    proc = _run([*base, "--out", str(out)], check=False)
    assert proc.returncode == 2
    assert message in proc.stderr
    assert proc.stderr.count("error:") == 1 and "Traceback" not in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_existing_output_is_not_overwritten(tmp_path):
    out = tmp_path / "keep.jsonl"
    out.write_text("precious\n")
    proc = _run([*RS_ARGS, "--out", str(out)], check=False)
    assert proc.returncode == 2 and "--force" in proc.stderr
    assert out.read_text() == "precious\n"


def test_ranking_matches_sklearn_by_hand(tmp_path):
    """Activations planted in a store; the driver's ranking must equal sklearn's AP."""
    shape = ModelShape(num_layers=2, intermediate_size=12, hidden_size=5)
    layout = Layout.for_shape(shape, ("mlp.up_proj", "mlp.down_proj"))
    rng = np.random.default_rng(0)
    relations = ["a"] * 10 + ["b"] * 10 + ["c"] * 10
    correct = rng.random(30) < 0.6
    store = ActivationStore.open(tmp_path / "store", layout, 30, {"test": 1})
    values = {layer: rng.normal(size=(30, layout.units_per_layer)) for layer in range(2)}
    values[1][:, 3] += np.array([r == "a" for r in relations]) * 2.0  # a planted unit for "a"
    store.write_batch(
        list(range(30)), {k: v.astype(np.float32) for k, v in values.items()}, correct
    )
    labellings = make_labellings(relations, correct, ["a", "b"], ratio=2, seed=1, min_positives=2)
    best = rank_units(store, labellings, top_k=5, progress=False)
    neurons = to_neurons(best, store)
    for rel, lab in labellings.items():
        every = np.concatenate([values[0][lab.rows], values[1][lab.rows]], axis=1)
        expected = [
            average_precision_score(lab.positive, every[:, j].astype(np.float32))
            for j in range(every.shape[1])
        ]
        order = sorted(range(len(expected)), key=lambda j: (-expected[j], j))[:5]
        got = [n for n in neurons if n.group == rel]
        assert [round(n.score, 4) for n in got] == [round(expected[j], 4) for j in order]
        for n, j in zip(got, order, strict=True):
            layer, col = divmod(j, layout.units_per_layer)
            assert (n.layer, *layout.unit_of(col)) == (n.layer, n.site, n.index)
            assert n.layer == layer
    top_a = next(n for n in neurons if n.group == "a")
    assert (top_a.layer, top_a.site, top_a.index) == (1, "mlp.up_proj", 3)
    # negatives: `ratio` times the positives, drawn only from the other relations
    for rel, lab in labellings.items():
        negatives = lab.rows[~lab.positive]
        assert all(relations[i] != rel for i in negatives)
        assert len(negatives) == min(20, 2 * int(lab.positive.sum()))
    assert json.dumps(store.meta)  # the store's metadata stays JSON


# ------------------------------------------- tiny model: checkpoints, few-shot, help
TINY_TEMPLATES = {
    "alpha": "{subject} is linked to",
    "beta": "The home of {subject} is",
    "gamma": "{subject} works with",
}
TINY_ARGS = ["find", "relation-specific", "--top-k", "20", "--min-positives", "2"]
# the objects are the model's greedy first 2 tokens, so the paper's criterion sees them
TINY_ARGS += ["--batch-size", "4", "--no-progress", "--correct", "prefix2"]


def _write_tiny_spec(folder: Path, objects: dict[str, str]) -> None:
    """Three relations of 40 made-up facts; ``objects`` overrides the default 'zzz'."""
    ok, every = ["relations:"], ["relations:"]
    for rel, template in TINY_TEMPLATES.items():
        rows = [
            {"subject": f"{rel.title()} item {i}", "object": objects.get(f"{rel}/{i}", "zzz")}
            for i in range(40)
        ]
        (folder / f"{rel}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
        entry = [
            f"  - name: {rel}",
            f"    facts: {rel}.jsonl",
            "    templates:",
            f'      discovery: ["{template}"]',
            f'      eval: ["Also: {template}"]',
        ]
        every += entry
        ok += entry if rel != "gamma" else []
    (folder / "spec_ok.yaml").write_text("\n".join(ok) + "\n")
    (folder / "spec_all.yaml").write_text("\n".join(every) + "\n")


@pytest.fixture(scope="module")
def tiny_spec(tmp_path_factory) -> tuple[Path, Path]:
    """(model, folder): a tiny random Llama and a spec whose facts it partly "knows".

    Two of every three discovery facts of alpha and beta get the model's own greedy
    answer (to the CLI's default 3-shot prompts) as their object; gamma gets none.
    """
    import torch
    from tools_helpers import tiny_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.data import facts
    from relneuron_eval.discovery.activations import _next_tokens
    from relneuron_eval.discovery.data import discovery_prompts

    model_path = tiny_model()
    model = AutoModelForCausalLM.from_pretrained(model_path).eval()
    tokenizer = AutoTokenizer.from_pretrained(model_path)
    folder = tmp_path_factory.mktemp("tiny-spec")
    _write_tiny_spec(folder, {})
    prompts = discovery_prompts(
        facts.load_spec(folder / "spec_all.yaml"), fewshot=None, demos="per-relation"
    )
    objects = {}
    with torch.no_grad():
        for p in prompts:
            ids = tokenizer(p.text)["input_ids"]
            first = _next_tokens(model, [ids], 0)[0]
            answer = tokenizer.decode([first, _next_tokens(model, [[*ids, first]], 0)[0]]).strip()
            number = int(p.fact_id.rsplit("/", 1)[1])
            if p.relation != "gamma" and number % 3 and answer == facts.clean_text(answer):
                objects[p.fact_id] = answer
    _write_tiny_spec(folder, objects)
    return model_path, folder


def _tiny(tiny_spec, out: Path, *extra: str, spec: str = "spec_ok.yaml", check: bool = True):
    model, folder = tiny_spec
    args = [*TINY_ARGS, "--model", str(model), "--relations", str(folder / spec)]
    return _run([*args, "--out", str(out), *extra], check=check)


@pytest.fixture(scope="module")
def tiny_stopped(tiny_spec, tmp_path_factory) -> Path:
    """The work folder of a run stopped after one batch (4 of 40 prompts)."""
    out = tmp_path_factory.mktemp("tiny-stopped") / "stopped.jsonl"
    proc = _tiny(tiny_spec, out, "--stop-after", "1", check=False)
    assert proc.returncode != 0 and not out.exists()
    work = out.with_name(f".{out.name}.work")
    assert np.load(work / "done.npy").sum() == 4
    return work


def _interrupted(tiny_stopped: Path, out: Path) -> Path:
    """A copy of the stopped run's work folder, as the work folder of ``out``."""
    import shutil

    return Path(shutil.copytree(tiny_stopped, out.with_name(f".{out.name}.work")))


@pytest.fixture(scope="module")
def tiny_reference(tiny_spec, tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("tiny-ref") / "ref.jsonl"
    _tiny(tiny_spec, out)
    return out


def _truncate_layer(work: Path) -> str:
    victim = work / "layer_001.npy"
    victim.write_bytes(victim.read_bytes()[:-1000])
    return "layer_001.npy is damaged"


def _truncate_meta(work: Path) -> str:
    victim = work / "meta.json"
    victim.write_text(victim.read_text()[:40])
    return "meta.json is unreadable"


def _flip_a_finished_row(work: Path) -> str:
    row = int(np.flatnonzero(np.load(work / "done.npy"))[0])
    layer = np.load(work / "layer_000.npy", mmap_mode="r+")
    layer[row, 5] += 1.0  # in place: the file keeps its size and header
    layer.flush()
    return "1 of 4 finished prompts fail their checksum"


@pytest.mark.slow
@pytest.mark.parametrize("damage", [_truncate_layer, _truncate_meta, _flip_a_finished_row])
def test_damaged_checkpoint_is_noticed_and_recomputed(
    tiny_spec, tiny_stopped, tiny_reference, tmp_path, damage
):
    out = tmp_path / "resumed.jsonl"
    notice = damage(_interrupted(tiny_stopped, out))
    proc = _tiny(tiny_spec, out)
    assert "Traceback" not in proc.stderr
    notices = [line for line in proc.stderr.splitlines() if line.startswith("notice:")]
    assert len(notices) == 1 and notice in notices[0], proc.stderr
    assert _lines(out) == _lines(tiny_reference)


@pytest.mark.slow
def test_options_that_keep_the_activations_keep_the_checkpoint(tiny_spec, tiny_stopped, tmp_path):
    out = tmp_path / "changed.jsonl"
    work = _interrupted(tiny_stopped, out)
    finished = int(np.load(work / "done.npy").sum())
    # everything after the stored numbers may change: no recomputation, no notice
    again = ["--skip-unscorable", "--batch-size", "2", "--top-k", "10", "--min-positives", "1"]
    proc = _tiny(tiny_spec, out, *again, "--negatives-ratio", "2")
    assert "notice" not in proc.stderr, proc.stderr
    params = load(out).method["params"]
    assert params["batch_size"] == {"2": 40 - finished, "4": finished}  # kept rows: size 4
    assert (params["top_k"], params["ratio"], params["skip_unscorable"]) == (10, 2, True)
    # what does change the stored numbers still starts afresh, and says so
    _interrupted(tiny_stopped, tmp_path / "dtype.jsonl")
    proc = _tiny(tiny_spec, tmp_path / "dtype.jsonl", "--store-dtype", "float16")
    assert "made for other inputs (config, dtype differ); starting afresh" in proc.stderr
    assert load(tmp_path / "dtype.jsonl").method["params"]["batch_size"] == 4


@pytest.mark.slow
def test_too_few_positives_names_every_option_before_the_activation_pass(tiny_spec, tmp_path):
    out = tmp_path / "x.jsonl"
    proc = _tiny(tiny_spec, out, spec="spec_all.yaml", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert proc.stderr.count("error:") == 1
    assert "gamma: 0 of 20 discovery prompts answered correctly, 2 needed" in proc.stderr
    for option in ("--fewshot", "--min-positives", "--skip-unscorable"):
        assert option in proc.stderr
    done = np.load(out.with_name(".x.jsonl.work") / "done.npy")
    assert done.sum() == 0  # stopped by the answers-only check: no activations computed
    proc = _tiny(tiny_spec, out, "--skip-unscorable", spec="spec_all.yaml")
    neuron_set = load(out)
    assert neuron_set.groups() == ["alpha", "beta"]
    assert neuron_set.method["data"]["relations_skipped"] == ["gamma"]


KN_TINY = ["find", "knowledge-neurons", "--max-facts", "6", "--steps", "2", "--no-progress"]


def _kn_tiny(model: Path, spec: Path, out: Path, *extra: str, check: bool = True):
    args = [*KN_TINY, "--model", str(model), "--relations", str(spec), "--out", str(out)]
    return _run([*args, *extra], check=check)


@pytest.mark.slow
def test_knowledge_neurons_attribute_only_answered_facts(tiny_spec, tmp_path):
    """The tiny model "knows" the facts whose object is its own greedy answer (prefix2)."""
    from relneuron_eval.discovery.data import relation_prompts, resolve_relations

    model, folder = tiny_spec
    candidates = []
    for rel in resolve_relations(str(folder / "spec_ok.yaml")).values():
        prompts = relation_prompts(rel, "discovery", fewshot=None, demos="per-relation")
        ids = list(dict.fromkeys(p.fact_id for p in prompts))[:6]
        candidates += [(p.fact_id, p.object) for p in prompts if p.fact_id in ids]
    unknown = [fact_id for fact_id, obj in candidates if obj == "zzz"]
    assert 0 < len(unknown) < len(candidates)  # the check has something to keep and to drop
    out = tmp_path / "kn.jsonl"
    proc = _kn_tiny(model, folder / "spec_ok.yaml", out, "--correct", "prefix2")
    kept = len(candidates) - len(unknown)
    assert f"{kept} of {len(candidates)} facts answered correctly" in proc.stderr
    method = load(out).method
    assert method["params"]["correct"] == "prefix2"
    assert method["data"]["facts_dropped"] == unknown and method["data"]["facts"] == kept
    assert not {g for g in load(out).groups() if "/" in g} & set(unknown)
    off = tmp_path / "off.jsonl"
    proc = _kn_tiny(model, folder / "spec_ok.yaml", off, "--correct", "off")
    assert f"all {len(candidates)} facts attributed" in proc.stderr
    assert load(off).method["params"]["correct"] == "off"
    assert load(off).method["data"]["facts"] == len(candidates)


@pytest.mark.slow
def test_knowledge_neurons_with_no_answered_fact_fail_before_attribution(tiny_spec, tmp_path):
    model, _ = tiny_spec
    _write_tiny_spec(tmp_path, {})  # every object "zzz": nothing is answered
    out = tmp_path / "out" / "kn.jsonl"
    out.parent.mkdir()
    proc = _kn_tiny(model, tmp_path / "spec_ok.yaml", out, "--correct", "prefix2", check=False)
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "none of the 12 facts is answered correctly (--correct prefix2)" in proc.stderr
    assert "--correct off" in proc.stderr
    assert list(out.parent.iterdir()) == []  # no output, no work folder


@pytest.mark.slow
def test_knowledge_neuron_layers_outside_the_model_are_named_as_typed(tiny_spec, tmp_path):
    model, folder = tiny_spec
    out = tmp_path / "kn.jsonl"
    proc = _kn_tiny(model, folder / "spec_ok.yaml", out, "--layers", "1-9000", check=False)
    assert proc.returncode == 2 and proc.stderr.count("error:") == 1
    assert "--layers=1-9000 is outside this model's layers 0-1" in proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_fewshot_default_is_the_tasks_prompting(tiny_reference):
    from relneuron_eval.cli import build_parser
    from relneuron_eval.discovery.data import discovery_prompts, resolve_relations

    params = load(tiny_reference).method["params"]
    assert (params["fewshot"], params["demos"]) == (3, "per-relation")  # the tasks' 3-shot
    assert params["correct"] == "prefix2" and "first 2 tokens" in params["correct_rule"]
    parse = build_parser(["find"]).parse_args
    base = ["find", "relation-specific", "--out", "x.jsonl"]
    assert (parse(base).fewshot, parse(base).demos) == (None, "per-relation")
    assert (
        parse([*base, "--fewshot", "0"]).fewshot,
        parse([*base, "--fewshot", "task"]).fewshot,
    ) == (0, None)
    relations = resolve_relations("country_capital_city,landmark_on_continent")
    default = discovery_prompts(relations, fewshot=None, demos="per-relation")
    assert all(p.text.count("\n") == 3 for p in default)
    for rel in relations.values():  # the same 3 demos, all from the fewshot split
        demos = {
            p.text.rsplit("\n", 1)[0]
            for p in default
            if p.relation == rel.name and p.template_index == 0
        }
        assert len(demos) == 1
        subjects = {f.subject for f in rel.facts_in("fewshot")}
        assert all(any(s in line for s in subjects) for line in demos.pop().split("\n"))
    # the old settings stay reproducible with explicit options
    zero = discovery_prompts(relations, fewshot=0)
    assert all("\n" not in p.text for p in zero)
    shipped = discovery_prompts(relations, fewshot=3, demos="per-prompt")
    assert shipped == discovery_prompts(relations, fewshot=3)  # the library's old default
    assert len({p.text.rsplit("\n", 1)[0] for p in shipped}) > 1  # demos drawn per prompt


def test_help_shows_defaults_for_every_subcommand():
    proc = _run(["find", "relation-specific", "--help"])
    text = " ".join(proc.stdout.split())
    for expected in (
        "(default: task)",
        "(default: per-relation)",
        "(default: 10)",
        "(default: 16)",
    ):
        assert expected in text
    import argparse

    from relneuron_eval.cli import SUBCOMMANDS, _says_default, build_parser

    def parsers(parser):
        yield parser
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for child in action.choices.values():
                    yield from parsers(child)

    for name in SUBCOMMANDS:
        for parser in parsers(build_parser([name])):
            help_text = " ".join(parser.format_help().split())
            assert "default: None" not in help_text and "default: False" not in help_text
            formatter = parser._get_formatter()
            for action in parser._actions:
                if _says_default(action):  # a default worth showing is shown, once
                    shown = formatter._expand_help(action).lower()
                    assert shown.count("default") == 1, (parser.prog, action.dest, shown)


def test_shipped_set_prompts_are_reproducible_from_its_header() -> None:
    """The shipped set's header names everything that chose its prompts (relations,
    facts, demos, seed, size): they give exactly the prompts it was found on, and
    another choice of demos does not."""
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.discovery.data import (
        base_facts_only,
        discovery_prompts,
        prompts_fingerprint,
        resolve_relations,
    )
    from relneuron_eval.resources import neuron_sets_dir

    header = load(neuron_sets_dir() / "smollm2-135m" / "relation_specific.jsonl.gz").method
    data, params = header["data"], header["params"]
    relations = resolve_relations(data["relations"])
    if data.get("facts") == "base":
        relations = base_facts_only(relations)

    def prompts(demos: str) -> list:
        return discovery_prompts(
            relations,
            fewshot=params["fewshot"],
            seed=params["seed"],
            max_facts=data["max_facts_per_relation"],
            demos=demos,
        )

    shipped = prompts(params["demos"])
    assert len(shipped) == data["prompts"]
    assert prompts_fingerprint(shipped) == data["prompts_fingerprint"]
    other = "per-prompt" if params["demos"] == "per-relation" else "per-relation"
    assert prompts_fingerprint(prompts(other)) != data["prompts_fingerprint"]


def test_a_set_found_from_a_users_spec_records_the_spec(tiny_spec, tiny_reference):
    """Before: the header named the relations, not which spec file (or version) they came
    from. (Reads the shared reference run: no run of its own.)"""
    import hashlib

    _model, folder = tiny_spec
    spec = folder / "spec_ok.yaml"
    record = load(tiny_reference).method["data"]["relation_spec"]
    assert record == {
        "path": str(spec.resolve()),
        "sha256": hashlib.sha256(spec.read_bytes()).hexdigest(),
    }
