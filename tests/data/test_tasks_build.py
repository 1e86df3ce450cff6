"""The relfacts task suite: generated without drift, honest splits, and every task runs.

The runs use a tiny random Llama saved with the SmolLM2 tokenizer (scores are noise; the
point is that every task builds, renders its few-shot prompts and is scored).
"""

from __future__ import annotations

import fnmatch
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from lm_eval_helpers import run_lm_eval as run_lm_eval_cli
from tools_helpers import make_neuron_set, tiny_model

from relneuron_eval.cli import main as cli_main
from relneuron_eval.data import facts, taskgen, twohop
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness import task_data

SHIPPED = facts.shipped_dir()


@pytest.fixture(scope="module")
def shipped_files():
    return taskgen.generate_shipped()


def _names(files, key):
    return [
        line.split(": ", 1)[1]
        for text in files.values()
        for line in text.splitlines()
        if line.startswith(f"{key}: ")
    ]


def test_generated_yamls_do_not_drift(shipped_files):
    assert taskgen.drift(SHIPPED, shipped_files) == []


def test_task_families_and_names(shipped_files):
    tasks, groups = _names(shipped_files, "task"), _names(shipped_files, "group")
    assert len(tasks) == len(set(tasks)) and not set(tasks) & set(groups)
    english = [t for t in tasks if t.removeprefix("relfacts_") in facts.RELATIONS]
    assert sorted(english) == sorted(f"relfacts_{r}" for r in facts.RELATIONS)
    assert len(english) >= 19
    mc = [t for t in tasks if t.startswith("relfacts_mc_")]
    closed = [n for n, r in facts.load_relations().items() if r.closed_set]
    assert sorted(mc) == sorted(f"relfacts_mc_{n}" for n in closed) and len(mc) >= 10
    for lang in ("de", "es", "fr", "zh", "ja"):
        mine = [t for t in tasks if t.startswith(f"relfacts_{lang}_")]
        assert len(mine) >= (8 if lang in ("de", "es", "fr") else 4), lang
    assert set(twohop.TASKS) <= set(tasks)
    assert {"relfacts", "relfacts-mc", "relfacts-multilingual", "relfacts-2hop"} <= set(groups)
    # `--tasks 'relfacts_*'` selects every task and no group (issue 9)
    assert all(fnmatch.fnmatchcase(t, taskgen.TASK_GLOB) for t in tasks)
    assert not any(fnmatch.fnmatchcase(g, taskgen.TASK_GLOB) for g in groups)
    for path, text in shipped_files.items():
        if not path.startswith("_base"):
            assert "\nmetadata:\n  version: " in text, path


def test_task_documents_are_test_facts_and_demos_fewshot_facts(shipped_files):
    for text in shipped_files.values():
        if "relfacts_relation" not in text:
            continue
        kwargs = dict(
            line.strip().replace('"', "").split(": ", 1)
            for line in text.split("dataset_kwargs:\n")[1].split("\n")
            if line.startswith("  ")
        )
        rows = task_data.rows_for(
            kwargs["relfacts_family"], kwargs["relfacts_relation"], kwargs.get("relfacts_lang")
        )
        rel = facts.load_relation(kwargs["relfacts_relation"])
        assert rows["test"], kwargs
        for split in ("test", "fewshot"):
            for row in rows[split]:
                assert rel.fact(row["fact_id"]).split == split, (kwargs, row["fact_id"])
    two = task_data.rows_for("2hop")
    for row in two["test"]:
        assert facts.fact_by_id(row["hop1_fact"]).split == "test"
        assert facts.fact_by_id(row["hop2_fact"]).split == "test"
    for row in two["fewshot"]:
        assert facts.fact_by_id(row["hop1_fact"]).split != "test"
        assert facts.fact_by_id(row["hop2_fact"]).split != "test"


def test_mc_documents_have_gold_among_choices():
    rows = task_data.rows_for("mc", "person_plays_instrument")["test"]
    choices = rows[0]["choices"]
    assert choices == sorted(choices) and len(choices) == 4
    for row in rows:
        assert row["gold"] and all(row["choices"][g] in row["answers"] for g in row["gold"])


def test_relation_sampler_depends_on_relation_and_seed_only():
    """Issue 11: demos must not depend on rank, document order or how many were drawn."""
    from relneuron_eval.harness.fewshot import RelationSampler

    pool = task_data.rows_for("gen", "country_currency")["fewshot"]
    sampler = RelationSampler(pool).set_rnd(1234)
    first = sampler.sample(3)
    assert len(first) == 3 and all(d in pool for d in first)
    assert all(sampler.sample(3) == first for _ in range(5))  # every document: the same demos
    reordered = RelationSampler(list(reversed(pool))).set_rnd(1234)
    assert reordered.sample(5)[:3] == first  # pool order does not matter; 3 are the first of 5
    assert RelationSampler(pool).set_rnd(7).sample(3) != first  # lm-eval's --seed does
    mc_pool = task_data.rows_for("mc", "country_currency")["fewshot"]
    mc_demos = RelationSampler(mc_pool).set_rnd(1234).sample(3)
    assert [d["fact_id"] for d in mc_demos] == [d["fact_id"] for d in first]
    assert first[0] not in sampler.sample(3, eval_doc=first[0])  # a pool shared with test
    with pytest.raises(RelNeuronError, match="lower --num_fewshot"):
        sampler.sample(len(pool) + 1)


# ----------------------------------------------------------------- lm-eval runs
def _evaluate(model: str, model_args: str, tasks: list[str], include=(), limit=2, log=False):
    import lm_eval

    from relneuron_eval.harness.task_index import task_manager

    return lm_eval.simple_evaluate(
        model=model,
        model_args=model_args,
        tasks=tasks,
        task_manager=task_manager(tasks, include),
        limit=limit,
        batch_size=8,
        device="cpu",
        log_samples=log,
    )


@pytest.mark.slow
def test_every_task_builds_and_scores_with_hf(shipped_files):
    groups = ["relfacts", "relfacts-mc", "relfacts-multilingual", "relfacts-2hop"]
    out = _evaluate("hf", f"pretrained={tiny_model()}", groups)
    results = out["results"]
    for task in _names(shipped_files, "task"):
        metrics = results[task]
        if task.startswith("relfacts_mc_"):
            assert 0.0 <= metrics["acc,none"] <= 1.0, task
        elif task == "relfacts_2hop_cot":
            assert {"acc_match,none", "bridge_recall,none"} <= set(metrics)
        else:
            assert 0.0 <= metrics["acc_prefix2,none"] <= 1.0, task
            assert "acc_match_stderr,none" in metrics, task
    assert "acc_prefix2,none" in results["relfacts"]


def test_hflm_is_lm_eval_own():
    """No patch of HFLM: the relfacts metric finds the tokenizer per evaluation."""
    import lm_eval.models.huggingface as hf

    assert hf.HFLM.__init__.__module__ == "lm_eval.models.huggingface"
    assert not getattr(hf.HFLM.__init__, "_relneuron_wrapped", False)


def test_relneuron_hf_per_doc_uses_the_bridge_fact(tmp_path):
    docs = task_data.rows_for("2hop")["test"][:3]
    neuron_set = make_neuron_set(tmp_path / "kn.jsonl", {d["hop1_fact"]: 20 for d in docs})
    args = (
        f"pretrained={tiny_model()},neuron_set={neuron_set},per_doc=hop1_fact,mode=enhance,factor=4"
    )
    out = _evaluate("relneuron-hf", args, ["relfacts_2hop_hop1"], limit=3, log=True)
    samples = out["samples"]["relfacts_2hop_hop1"]
    assert [s["doc"]["hop1_fact"] for s in samples] == [d["hop1_fact"] for d in docs]
    assert "acc_match,none" in out["results"]["relfacts_2hop_hop1"]


def _write_spec(folder: Path) -> Path:
    """A user's spec with one closed-set relation of 24 facts."""
    folder.mkdir(parents=True, exist_ok=True)
    rows = [
        {"subject": f"Gadget {i}", "object": ["Acme", "Globex", "Initech"][i % 3]}
        for i in range(24)
    ]
    (folder / "made_by.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "mine.yaml").write_text(
        "relations:\n"
        "  - name: gadget_maker\n"
        "    facts: made_by.jsonl\n"
        "    closed_set: true\n"
        "    templates:\n"
        '      discovery: ["{subject} is built by"]\n'
        '      eval: ["{subject} comes from the company", "The maker of {subject} is"]\n'
    )
    return folder / "mine.yaml"


def test_user_spec_becomes_tasks(tmp_path):
    spec = _write_spec(tmp_path / "spec")
    out = tmp_path / "tasks"
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(out)]) == 0
    assert (out / "relfacts_gadget_maker.yaml").is_file()
    assert (out / "relfacts_mc_gadget_maker.yaml").is_file()
    # regenerating is a no-op; --check agrees
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(out), "--check"]) == 0
    res = _evaluate(
        "hf", f"pretrained={tiny_model()}", ["relfacts-custom", "relfacts-custom-mc"], include=[out]
    )
    assert res["results"]["relfacts_gadget_maker"]["sample_len"] == 2
    assert "acc,none" in res["results"]["relfacts_mc_gadget_maker"]


@pytest.mark.slow  # lm_eval / relneuron subprocesses: ~10 CPU s
def test_user_tasks_move_with_their_spec(tmp_path):
    """Task YAMLs name the spec relative to their folder (they held its absolute path)."""
    project = tmp_path / "project"
    spec = _write_spec(project / "spec")
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(project / "tasks")]) == 0
    for path in (project / "tasks").glob("*.yaml"):
        assert str(tmp_path) not in path.read_text(), path
    moved = shutil.move(project, tmp_path / "elsewhere")  # e.g. a CI checkout of the repo
    proc = run_lm_eval_cli(
        ["--model", "hf", "--model_args", f"pretrained={tiny_model()}",
         "--include_path", str(Path(moved) / "tasks"),
         "--tasks", "relfacts-custom,relfacts-custom-mc",
         "--limit", "2", "--device", "cpu", "--batch_size", "8",
         "--output_path", str(tmp_path / "out")],
        check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-3000:]
    results = json.loads(next((tmp_path / "out").rglob("results_*.json")).read_text())
    assert results["n-samples"]["relfacts_gadget_maker"]["effective"] == 2
    assert results["n-samples"]["relfacts_mc_gadget_maker"]["effective"] == 2


def test_user_task_without_its_spec_names_the_yaml(tmp_path):
    spec = _write_spec(tmp_path / "spec")
    out = tmp_path / "tasks"
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(out)]) == 0
    yaml_path = out / "relfacts_gadget_maker.yaml"
    rows = task_data.load("gen", "gadget_maker", None, "../spec/mine.yaml", config_source=yaml_path)
    assert len(rows["test"]) > 0
    (tmp_path / "ci").mkdir()
    shutil.move(out, tmp_path / "ci" / "tasks")  # the tasks moved, the spec did not
    moved = tmp_path / "ci" / "tasks" / "relfacts_gadget_maker.yaml"
    with pytest.raises(RelNeuronError) as err:
        task_data.load("gen", "gadget_maker", None, "../spec/mine.yaml", config_source=moved)
    assert str(moved) in str(err.value) and "relneuron taskgen --spec" in str(err.value)


def test_user_spec_errors_before_writing(tmp_path, capsys):
    (tmp_path / "f.jsonl").write_text(
        "".join(json.dumps({"subject": f"S{i}", "object": "o"}) + "\n" for i in range(20))
    )
    (tmp_path / "bad.yaml").write_text(
        "relations:\n  - name: r\n    facts: f.jsonl\n    templates:\n"
        '      eval: ["{subject} has {colour}"]\n'
    )
    out = tmp_path / "out"
    assert cli_main(["taskgen", "--spec", str(tmp_path / "bad.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml:5:" in err and "{colour}" in err
    assert not out.exists()


def test_name_clash_names_the_spec_line_and_a_fix_that_works(tmp_path, capsys):
    """Issue 9: the clash error had no FILE:LINE and suggested --group, which fails the same."""
    (tmp_path / "f.jsonl").write_text(
        "".join(json.dumps({"subject": f"S{i}", "object": "o"}) + "\n" for i in range(20))
    )
    relation = '    facts: f.jsonl\n    templates:\n      eval: ["{subject} speaks"]\n'
    clash = tmp_path / "clash.yaml"
    clash.write_text(
        f"relations:\n  - name: mine\n{relation}  - name: country_language\n{relation}"
    )
    out = tmp_path / "out"
    for extra in ([], ["--group", "my-tasks"]):
        assert cli_main(["taskgen", "--spec", str(clash), "--out", str(out), *extra]) == 2
        err = capsys.readouterr().err
        assert f"{clash}:6:" in err and "relfacts_country_language" in err, err
        assert "rename the relation" in err and "--group" not in err
    # the fix the message names works
    clash.write_text(clash.read_text().replace("country_language", "my_language"))
    assert cli_main(["taskgen", "--spec", str(clash), "--out", str(out)]) == 0
    # two relations of the spec giving one task name: the second one's line
    (tmp_path / "twice.yaml").write_text(
        f"relations:\n  - name: mc_x\n{relation}  - name: x\n    closed_set: true\n{relation}"
    )
    assert cli_main(["taskgen", "--spec", str(tmp_path / "twice.yaml"), "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "twice.yaml:6:" in err and "relfacts_mc_x" in err and "'mc_x'" in err


@pytest.mark.parametrize(
    ("group", "message"),
    [
        ("relfacts-mc", "pass another --group"),
        ("relfacts_mine", "--group relfacts-mine"),
        ("a,b", "not a usable task group name"),
    ],
)
def test_bad_group_names_are_refused(tmp_path, capsys, group, message):
    spec = _write_spec(tmp_path / "spec")
    out = tmp_path / "out"
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(out), "--group", group]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists()


@pytest.mark.slow
def test_plain_lm_eval_cli_runs_two_hop_and_gap_reads_it(tmp_path):
    """The real CLI finds the tasks without --include_path; `relneuron gap` reads its samples."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [
        sys.executable, "-m", "lm_eval", "run", "--model", "hf",
        "--model_args", f"pretrained={tiny_model()}", "--tasks", "relfacts-2hop",
        "--limit", "3", "--log_samples", "--output_path", str(tmp_path / "out"),
        "--device", "cpu", "--batch_size", "4",
    ]  # fmt: skip
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    gap = subprocess.run(
        [sys.executable, "-m", "relneuron_eval.cli", "gap", str(tmp_path / "out")],
        env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert gap.returncode == 0, gap.stderr
    assert "| all | 3 |" in gap.stdout
    samples = sorted(Path(tmp_path / "out").rglob("samples_relfacts_2hop_hop1_*.jsonl"))
    assert samples
