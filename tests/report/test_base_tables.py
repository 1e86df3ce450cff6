"""scripts/base_tables.py: base numbers of several models from their lm-eval runs."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from conftest import REPO

SCRIPT = REPO / "scripts" / "base_tables.py"


def _run_folder(
    root: Path,
    scores: dict[str, list[int]],
    objects: dict[str, list[str]],
    groups: dict[str, dict] | None = None,
) -> Path:
    """An lm-eval output folder as `--output_path X --log_samples` leaves it (`groups`:
    group name -> its aggregate result; every task is in `relfacts` unless `_mc_`)."""
    model = root / "model"
    model.mkdir(parents=True)
    results = dict(groups or {})
    for task, hits in scores.items():
        mean = sum(hits) / len(hits)
        stderr = 0.01 if len(hits) > 1 else "N/A"  # as lm-eval writes it for one document
        metric = "acc" if "_mc_" in task else "acc_match"
        results[task] = {f"{metric},none": mean, f"{metric}_stderr,none": stderr}
        choices = sorted(set(objects[task]))
        rows = [
            {"doc_id": i, "doc": {"fact_id": f"{task}/{i}", "object": o, "answers": [o],
                                  "choices": choices, "gold": choices.index(o)}}
            for i, o in enumerate(objects[task])
        ]  # fmt: skip
        text = "".join(json.dumps(r) + "\n" for r in rows)
        (model / f"samples_{task}_2026-12-07T00-00-00.jsonl").write_text(text)
    mc = sorted(t for t in scores if "_mc_" in t)
    probes = {t for t in scores if t[9:12] in ("de_", "fr_")}  # multilingual: no group here
    subtasks = {"relfacts": sorted(set(scores) - set(mc) - probes), "relfacts-mc": mc}
    data = {"results": results, "group_subtasks": subtasks}
    (model / "results_2026-12-07T00-00-00.json").write_text(json.dumps(data))
    return root


def _table(*runs: tuple[str, Path], tmp_path: Path) -> subprocess.CompletedProcess:
    args = [arg for name, folder in runs for arg in ("--run", f"{name}={folder}")]
    out = tmp_path / "table.md"
    done = subprocess.run(
        [sys.executable, str(SCRIPT), *args, "--out", str(out)], capture_output=True, text=True
    )
    done.table = out.read_text() if out.exists() else None  # type: ignore[attr-defined]
    return done


def test_known_relations_follow_the_majority_rule(tmp_path):
    # a: majority 75 %; 100 % is known (>= 85 %), 75 % is not. b: majority 25 %; 50 % known.
    # c: majority 30 % (6 of 20); 45 % is known, 35 % only above the majority answer.
    objects = {
        "relfacts_a": ["x", "x", "x", "y"],
        "relfacts_b": ["p", "q", "r", "s"],
        "relfacts_c": ["x"] * 6 + [f"o{i}" for i in range(14)],
    }
    first = {
        "relfacts_a": [1, 1, 1, 1],
        "relfacts_b": [1, 1, 0, 0],
        "relfacts_c": [1] * 9 + [0] * 11,
    }
    second = {
        "relfacts_a": [1, 1, 1, 0],
        "relfacts_b": [1, 0, 0, 0],
        "relfacts_c": [1] * 7 + [0] * 13,
    }
    runs = [("M1", _run_folder(tmp_path / "m1", first, objects))]
    runs.append(("M2", _run_folder(tmp_path / "m2", second, objects)))
    done = _table(*runs, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): line for line in done.table.splitlines()}
    assert "| 4 | 75.0 (x) | **100.0 ± 1.0** | 75.0 ± 1.0 |" in rows["a"]
    assert "| 4 | 25.0 (p) | **50.0 ± 1.0** | 25.0 ± 1.0 |" in rows["b"]
    assert "| 20 | 30.0 (x) | **45.0 ± 1.0** | 35.0 ± 1.0 |" in rows["c"]
    assert rows["relations above the majority answer"].endswith("| 3 of 3 | 1 of 3 |")
    assert rows["relations known (bold)"].endswith("| 3 of 3 | 0 of 3 |")


def test_different_documents_or_a_missing_run_stop_with_one_line(tmp_path):
    first = _run_folder(tmp_path / "m1", {"relfacts_a": [1, 0]}, {"relfacts_a": ["x", "y"]})
    other = _run_folder(tmp_path / "m2", {"relfacts_a": [1]}, {"relfacts_a": ["x"]})
    alone = _table(("M2", other), tmp_path=tmp_path)  # one document: no standard error
    assert alone.returncode == 0 and "| 1 | 100.0 (x) | 100.0 |" in alone.table
    (tmp_path / "table.md").unlink()
    done = _table(("M1", first), ("M2", other), tmp_path=tmp_path)
    assert done.returncode == 2 and done.table is None
    assert "relfacts_a: the runs scored different documents" in done.stderr
    done = _table(("M1", first), ("M2", tmp_path / "none"), tmp_path=tmp_path)
    assert done.returncode == 2 and "no lm-eval results_*.json" in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_mc_and_multilingual_tables_side_by_side(tmp_path):
    objects = {
        "relfacts_mc_a": ["x", "x", "y", "z"],  # 3 choices, majority 50 %
        "relfacts_de_a": ["x", "y"],
        "relfacts_fr_a": ["x", "y", "z"],
        "relfacts_de_b": ["p", "p", "q", "r"],
    }
    first = {"relfacts_mc_a": [1, 1, 1, 1], "relfacts_de_a": [1, 0], "relfacts_fr_a": [0, 0, 0],
             "relfacts_de_b": [1, 1, 1, 0]}  # fmt: skip
    second = {"relfacts_mc_a": [1, 1, 0, 0], "relfacts_de_a": [1, 1], "relfacts_fr_a": [1, 0, 0],
              "relfacts_de_b": [0, 0, 0, 0]}  # fmt: skip
    group = {"relfacts-mc": {"acc,none": 0.8, "acc_stderr,none": 0.05},
             "relfacts-de": {"acc_match,none": 0.25, "acc_match_stderr,none": 0.02},
             "relfacts-fr": {"acc_match,none": 0.5, "acc_match_stderr,none": 0.03}}  # fmt: skip
    runs = [("M1", _run_folder(tmp_path / "m1", first, objects, group))]
    no_mc_group = {k: v for k, v in group.items() if k != "relfacts-mc"}  # run as task lists
    runs.append(("M2", _run_folder(tmp_path / "m2", second, objects, no_mc_group)))
    done = _table(*runs, tmp_path=tmp_path)
    assert done.returncode == 0, done.stderr
    rows = {line.split("|")[1].strip(): line for line in done.table.splitlines() if "|" in line}
    assert "| a | 4 | 3 | 33.3 | 50.0 (x) | **100.0 ± 1.0** | 50.0 ± 1.0 |" in done.table
    assert "| relations known (bold) | | | | | 1 of 1 | 0 of 1 |" in done.table
    # lm-eval's group score; without it the same aggregate of the tasks (here one)
    assert rows["**relfacts-mc** (macro)"].endswith("| 80.0 ± 5.0 | 50.0 ± 1.0 |")
    # multilingual: both models in one cell per relation and language
    assert rows["b"] == "| b | 75.0 / 0.0 (n=4) | - | - | - | - |"
    assert "| a | 50.0 / 100.0 (n=2) | - | 0.0 / 33.3 (n=3) | - | - |" in done.table
    assert (
        rows["**macro**"]
        == "| **macro** | 25.0 ± 2.0 / 25.0 ± 2.0 | - | 50.0 ± 3.0 / 50.0 ± 3.0 | - | - |"
    )
    # above the majority (de_a 50 %, fr_a 33.3 %, de_b 50 %): M1 de_b; M2 de_a
    assert "Probes above their majority answer: M1 1 of 3, M2 1 of 3." in done.table
