"""lm-eval's built-in task index is cached on disk and equals what lm-eval builds."""

from __future__ import annotations

import importlib
import json
import os

import pytest

index_module = importlib.import_module("lm_eval.tasks._index")

from relneuron_eval.harness import index_cache  # noqa: E402


def _yaml_root(tmp_path):
    root = tmp_path / "tasks"
    (root / "sub").mkdir(parents=True)
    (root / "a.yaml").write_text("task: toy_a\ntag: toys\ndataset_path: json\n")
    (root / "sub" / "b.yaml").write_text("task: toy_b\ntag: [toys, more]\ndataset_path: json\n")
    (root / "sub" / "g.yaml").write_text("group: toy_group\ntask: [toy_a, toy_b]\n")
    return root


@pytest.fixture
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("RELNEURON_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv(index_cache.OFF_ENV, raising=False)


def _original_build():
    build = index_module.TaskIndex.build
    return getattr(build, "__wrapped_original__", build)


def test_second_read_comes_from_the_cache_and_equals_the_build(tmp_path, own_cache):
    root, calls = _yaml_root(tmp_path), []

    def build(paths, **kwargs):
        calls.append(paths)
        return _original_build()(paths, **kwargs)

    first = index_cache.cached_index(root, build, index_module)
    second = index_cache.cached_index(root, build, index_module)
    assert len(calls) == 1
    assert second == first == _original_build()([root])
    assert set(first) == {"toy_a", "toy_b", "toy_group", "toys", "more"}


def test_an_edited_file_or_a_broken_cache_builds_again(tmp_path, own_cache):
    root, calls = _yaml_root(tmp_path), []

    def build(paths, **kwargs):
        calls.append(paths)
        return _original_build()(paths, **kwargs)

    index_cache.cached_index(root, build, index_module)
    (root / "a.yaml").write_text("task: toy_renamed\ndataset_path: json\n")
    edited = index_cache.cached_index(root, build, index_module)
    assert len(calls) == 2 and "toy_renamed" in edited and "toy_a" not in edited
    folder = tmp_path / "cache" / "lm-eval-task-index"
    assert len(list(folder.glob("*.json"))) == 1  # the first version's index is gone
    for broken in ("{not json", "[]"):
        for cached in folder.glob("*.json"):
            cached.write_text(broken)
        assert index_cache.cached_index(root, build, index_module) == edited
    assert len(calls) == 4


def test_entries_json_cannot_hold_are_not_cached(tmp_path, own_cache):
    root = _yaml_root(tmp_path)
    (root / "d.yaml").write_text("task: toy_dated\ndataset_path: json\nrevision: 2024-01-31\n")
    index = index_cache.cached_index(root, _original_build(), index_module)
    assert index["toy_dated"].cfg["revision"].year == 2024  # a date object, as lm-eval reads it
    assert not list((tmp_path / "cache").rglob("*.json"))


def test_task_manager_over_the_cache_keeps_include_path_overrides(tmp_path):
    """The user's cache (built once per lm-eval install, as every `lm_eval` run does)."""
    from lm_eval.tasks import TaskManager

    assert getattr(index_module.TaskIndex.build, "_relneuron_wrapped", False)
    extra = tmp_path / "mine"
    extra.mkdir()
    (extra / "t.yaml").write_text("task: arc_easy\ndataset_path: json\n")  # shadows lm-eval's
    manager = TaskManager(include_path=str(extra))
    assert manager.task_index["arc_easy"].yaml_path == extra / "t.yaml"
    assert "hellaswag" in manager.all_tasks and "relfacts" in manager.all_tasks


@pytest.mark.slow
def test_cached_builtin_index_equals_lm_evals_own(tmp_path, own_cache):
    root = index_cache.builtin_root(index_module)
    fresh = _original_build()([root])
    index_cache.cached_index(root, _original_build(), index_module)  # write
    assert index_cache.cached_index(root, _original_build(), index_module) == fresh
    assert len(fresh) > 10_000
    assert json.loads(next((tmp_path / "cache").rglob("*.json")).read_text())["signature"]
    assert os.environ["RELNEURON_CACHE"] == str(tmp_path / "cache")
