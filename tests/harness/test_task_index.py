"""The task manager of in-process evaluations: our tasks first, lm-eval's ~15k only on demand."""

from __future__ import annotations

import pytest
from lm_eval_helpers import write_toy_task

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.harness import task_index

OURS = "relfacts_country_capital_city"


def test_our_tasks_and_user_folders_without_lm_eval_builtins(tmp_path):
    manager = task_index.task_manager([OURS, "relfacts"])
    assert OURS in manager.task_index and "relfacts" in manager.all_groups
    assert "arc_easy" not in manager.task_index and len(manager.all_tasks) < 1000
    assert task_index.task_manager([OURS]) is manager  # indexed once per process

    folder = write_toy_task(
        tmp_path / "mine", [{"question": "q?", "answer": "a", "choices": ["a"]}]
    )
    with_folder = task_index.task_manager(["toy_gen", OURS], include=[str(folder)])
    assert {"toy_gen", "toy_mc", OURS} <= set(with_folder.all_tasks)
    assert "arc_easy" not in with_folder.task_index
    assert task_index.task_manager([str(folder / "toy_gen.yaml")]) is manager  # a YAML path
    assert task_index.folders([folder, str(folder)])[1:] == (str(folder),)


def test_metadata_reaches_the_tasks_and_shares_the_index():
    manager = task_index.task_manager([OURS])
    tagged = task_index.task_manager([OURS], metadata={"pretrained": "some/model"})
    assert tagged is not manager and tagged.task_index is manager.task_index
    task = tagged.load([OURS])["tasks"][OURS]
    assert task.config.metadata["pretrained"] == "some/model"
    assert "pretrained" not in (manager.load([OURS])["tasks"][OURS].config.metadata or {})


def test_builtin_names_fall_back_to_the_full_index_unknown_names_are_one_error(capfd, caplog):
    full = task_index.task_manager(["arc_easy", OURS])
    assert {"arc_easy", OURS} <= set(full.task_index) and len(full.all_tasks) > 10000
    said = "".join(capfd.readouterr()) + caplog.text
    assert "overrides existing task" not in said  # our folder is indexed once
    assert full is task_index.manager(full=True)
    with pytest.raises(RelNeuronError, match="unknown task 'relfacts_no_such_task'") as info:
        task_index.task_manager([OURS, "relfacts_no_such_task"])
    assert "--include_path" in str(info.value)


def test_report_and_relcheck_use_it():
    from relneuron_eval.relcheck.run import Evaluator
    from relneuron_eval.report import command as report

    assert report.task_manager() is task_index.manager()
    assert Evaluator().catalog(()).manager is task_index.manager()
