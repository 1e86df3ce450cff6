"""``relneuron compare`` on real lm-eval result files written by the real ``lm_eval`` CLI.

Six runs of a tiny random Llama are made once for the module (in one process: lm-eval's
start-up, most of their cost, is paid once): on two toy tasks (and their group) the base
(``--model hf``), a ``relneuron-hf`` variant, a second variant run with another
``--limit`` on one task only, and a random control of the first variant; on three
shipped relfacts tasks a base and a variant that deactivates one relation's group.
Everything else is read from those files (or copies of them).
"""

from __future__ import annotations

import csv
import io
import json
import math
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import tools_helpers as th
from lm_eval_helpers import run_lm_eval_in_one_process

from relneuron_eval.cli import main as relneuron
from relneuron_eval.compare.command import choose_base, load_runs

pytestmark = pytest.mark.slow
# the target relation's task, a relation acc_prefix2 cannot tell apart (taskgen warns), another
RF_TASKS = "relfacts_country_language,relfacts_person_mother,relfacts_country_capital_city"


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict[str, Path]:
    """lm-eval output folders: base, v1 (ablate a), short (enhance b; limit 10, toy_a only),
    ctrl (a random control of v1); rf_base and rf_v (country_language's group off) on
    RF_TASKS."""
    root = tmp_path_factory.mktemp("compare-runs")
    model = th.tiny_model()
    th.toy_tasks()
    nset = th.make_neuron_set(root / "set.jsonl", {"a": 40, "b": 40, "country_language": 40})
    jobs = {
        "base": ("hf", f"pretrained={model}", 15, "toy_group"),
        "v1": ("relneuron-hf", f"pretrained={model},neuron_set={nset},groups=a", 15, "toy_group"),
        "short": (
            "relneuron-hf",
            f"pretrained={model},neuron_set={nset},groups=b,mode=enhance,factor=3",
            10,
            "toy_a",
        ),
        "ctrl": (
            "relneuron-hf",
            f"pretrained={model},neuron_set={nset},groups=a,control=random,seed=0",
            15,
            "toy_group",
        ),
        "rf_base": ("hf", f"pretrained={model}", 10, RF_TASKS),
        "rf_v": (
            "relneuron-hf",
            f"pretrained={model},neuron_set={nset},groups=country_language",
            10,
            RF_TASKS,
        ),
    }

    runs = [
        th.lm_eval_args(kind, args, root / name, tasks=tasks, limit=limit)
        for name, (kind, args, limit, tasks) in jobs.items()
    ]
    run_lm_eval_in_one_process(runs, env=th.env())  # mostly start-up, paid once
    return {name: root / name for name in jobs}


def _cli(*args: str, capsys) -> tuple[int, str, str]:
    code = relneuron(["compare", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def _json(capsys, *args) -> dict:
    code, out, err = _cli(*args, "--format", "json", capsys=capsys)
    assert code == 0, err
    return json.loads(out)


def _results(folder: Path) -> dict:
    (path,) = sorted(folder.rglob("results_*.json"))
    return json.loads(path.read_text())


def _samples(folder: Path, task: str) -> list[dict]:
    (path,) = sorted(folder.rglob(f"samples_{task}_*.jsonl"))
    rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
    return sorted(rows, key=lambda r: r["doc_id"])


def _cell(data: dict, task: str, variant: int = 0, metric: str = "acc") -> dict:
    row = next(r for r in data["rows"] if r["task"] == task and r["metric"] == metric)
    return {**row["cells"][variant], "base": row["base"], "base_stderr": row["base_stderr"]}


def _v1(data: dict) -> int:
    """Column of the ablation variant (variants are in the order their runs finished)."""
    return next(i for i, v in enumerate(data["variants"]) if v.endswith("__a__deactivate"))


def _results_only(src: Path, dst: Path) -> Path:
    """A copy of a run as if lm-eval had been run without --log_samples."""
    dst.mkdir()
    for path in src.rglob("results_*.json"):
        shutil.copy(path, dst / path.name)
    return dst


# ===================================================================== finding runs
def test_base_and_variants_found_by_model_and_args(runs, capsys):
    found, problems = load_runs([runs["short"], runs["base"], runs["v1"]])
    assert problems == []
    base = choose_base(found, None)
    assert base.model == "hf" and not base.is_variant
    variants = sorted(r.label for r in found if r is not base)
    assert variants[0].endswith("__a__deactivate") and "__set-" in variants[0]
    assert variants[1].endswith("__b__enhancex3") and "__set-" in variants[1]
    data = _json(capsys, runs["v1"], runs["base"], runs["short"])
    assert data["base"] == base.label
    assert sorted(data["variants"]) == variants
    v1 = data["variants"].index(variants[0])
    for task in ("toy_a", "toy_b", "toy_group"):
        results = _results(runs["v1"])["results"][task]
        assert _cell(data, task, v1)["score"] == pytest.approx(results["acc,none"])
        assert _cell(data, task, v1)["base"] == pytest.approx(
            _results(runs["base"])["results"][task]["acc,none"]
        )
    assert data["descriptions"][variants[0]]["groups"] == ["a"]


def test_paired_mcnemar_when_samples_are_logged(runs, capsys):
    from scipy.stats import binomtest

    data = _json(capsys, runs["base"], runs["v1"])
    for task, parts in (
        ("toy_a", ["toy_a"]),
        ("toy_b", ["toy_b"]),
        ("toy_group", ["toy_a", "toy_b"]),
    ):
        base = [s["acc"] for t in parts for s in _samples(runs["base"], t)]
        variant = [s["acc"] for t in parts for s in _samples(runs["v1"], t)]
        lost = sum(1 for x, y in zip(base, variant, strict=True) if x == 1 and y == 0)
        gained = sum(1 for x, y in zip(base, variant, strict=True) if x == 0 and y == 1)
        cell = _cell(data, task)
        assert cell["test"] == "mcnemar"
        assert cell["delta"] == pytest.approx((gained - lost) / len(base))
        expected = binomtest(lost, lost + gained, 0.5).pvalue if lost + gained else 1.0
        assert cell["p_value"] == pytest.approx(expected)
        assert cell["significant"] == (expected < 0.05)


def test_stderr_z_test_without_samples(runs, tmp_path, capsys):
    base = _results_only(runs["base"], tmp_path / "base")
    v1 = _results_only(runs["v1"], tmp_path / "v1")
    data = _json(capsys, base, v1)
    raw_base, raw_v1 = _results(runs["base"])["results"], _results(runs["v1"])["results"]
    for task in ("toy_a", "toy_b", "toy_group"):
        cell = _cell(data, task)
        assert cell["test"] == "stderr-z" and "no sample logs" in cell["note"]
        delta = raw_v1[task]["acc,none"] - raw_base[task]["acc,none"]
        se = math.hypot(raw_base[task]["acc_stderr,none"], raw_v1[task]["acc_stderr,none"])
        assert cell["p_value"] == pytest.approx(math.erfc(abs(delta) / se / math.sqrt(2)))
    # Before: the table said "paired test ... when present" whichever test had run.
    code, table, _ = _cli(base, v1, capsys=capsys)
    lines = table.splitlines()
    assert code == 0 and all(line.endswith(" z") for line in lines[2:5]), table
    (tests,) = [line for line in lines if line.startswith("tests: ")]
    assert (
        tests.startswith("tests: z = z-test on lm-eval's stderr (no sample logs")
        and "3 cells" in tests
    )
    assert "McNemar" not in tests


# ========================================================================= formats
def test_table_markdown_csv_and_json_agree(runs, tmp_path, capsys):
    data = _json(capsys, runs["base"], runs["v1"], runs["short"])
    code, table, _ = _cli(runs["base"], runs["v1"], runs["short"], capsys=capsys)
    assert code == 0
    lines = table.splitlines()
    assert lines[0].split() == [
        "own",
        "task",
        "metric",
        "n",
        "base",
        "V1",
        "Δ",
        "V1",
        "p",
        "V1",
        "V2",
        "Δ",
        "V2",
        "p",
        "V2",
    ]
    body = lines[2 : 2 + len(data["rows"])]
    for line, row in zip(body, data["rows"], strict=True):
        own = ",".join(f"V{data['variants'].index(v) + 1}" for v in row["own"])
        label = row["task"] if row["kind"] == "task" else f"[{row['task']}]"
        assert line.split()[: 4 if own else 3] == [own, label, "acc", str(row["n"])][not own :]
    for name in data["variants"]:
        assert any(line.endswith(name) for line in lines if line.startswith("V"))
    v1 = _v1(data)
    toy_a = [r["task"] for r in data["rows"]].index("toy_a")
    assert f"{data['rows'][toy_a]['cells'][v1]['delta']:+.4f}" in body[toy_a]
    assert "mismatch" in body[toy_a]

    out = tmp_path / "table.md"
    code, stdout, _ = _cli(
        runs["base"], runs["v1"], runs["short"], "--format", "markdown", "-o", out, capsys=capsys
    )
    assert code == 0 and stdout == ""
    md = out.read_text().splitlines()
    assert md[0].startswith("| own | task | metric | n | base | V1 |")
    assert set(md[1]) <= set("|:-")
    group = [r["kind"] for r in data["rows"]].index("group")
    assert md[2 + group].startswith("|  | [toy_group] | acc | 30 |")
    assert len([line for line in md if line.startswith("| ")]) == 1 + len(data["rows"])

    out = tmp_path / "table.csv"
    assert (
        _cli(runs["base"], runs["v1"], runs["short"], "--format", "csv", "-o", out, capsys=capsys)[
            0
        ]
        == 0
    )
    rows = list(csv.DictReader(io.StringIO(out.read_text())))
    assert len(rows) == len(data["rows"]) * 2
    for row in rows:
        cell = _cell(data, row["task"], data["variants"].index(row["variant"]))
        assert row["status"] == cell["status"]
        if row["variant"].endswith("__a__deactivate"):
            assert float(row["delta"]) == pytest.approx(cell["delta"])
            assert float(row["p_value"]) == pytest.approx(cell["p_value"])
            assert row["test"] == "mcnemar" and row["status"] == "ok"
        else:  # the run with another --limit: nothing compared, nothing invented
            assert row["delta"] == row["p_value"] == ""
            assert row["status"] in ("mismatch", "missing")


def _heatmap(runs, *names: str, tasks: str | None = None):
    """The figure `relneuron compare --heatmap` draws, drawn, with its comparison."""
    from relneuron_eval.compare.command import compare_runs
    from relneuron_eval.compare.heatmap import heatmap_figure

    found, problems = load_runs([runs[n] for n in names])
    comparison = compare_runs(
        found,
        choose_base(found, None),
        problems=problems,
        tasks=tasks.split(",") if tasks else None,
    )
    fig = heatmap_figure(comparison)
    fig.canvas.draw()
    return comparison, fig


def _inside(fig, artist) -> bool:
    box = artist.get_window_extent()
    return box.x0 >= 0 and box.y0 >= 0 and box.x1 <= fig.bbox.x1 and box.y1 <= fig.bbox.y1


def test_heatmap_png_is_written(runs, tmp_path, capsys):
    from matplotlib.image import imread

    png = tmp_path / "heat.png"
    code, _, err = _cli(runs["base"], runs["v1"], runs["short"], "--heatmap", png, capsys=capsys)
    assert code == 0, err
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    image = imread(png)[..., :3]
    assert image.shape[0] > 100 and image.shape[1] > 100
    gray = int((abs(image - 0xDD / 255).max(axis=-1) < 0.02).sum())  # "×" cells: #dddddd
    assert gray > 1000


def test_heatmap_reads_right_at_a_glance(runs):
    """Before: the scale stretched to the largest change (a non-significant -0.04 as dark as
    -1.00), no metric, labels cut from the left, colour bar label cut off, no n."""
    import numpy as np

    comparison, fig = _heatmap(runs, "base", "v1", "short", "ctrl")
    ax, bar = fig.axes
    assert bar.get_ylim() == (-1.0, 1.0)  # fixed: a colour means the same change everywhere
    assert bar.get_ylabel().startswith("Δ acc\n(variant − base)") and "−1 … +1" in bar.get_ylabel()
    assert (
        ax.get_title(loc="left").replace("\n", " ").startswith("Change in acc vs. base tiny-llama")
    )
    columns = [t.get_text().replace("\n", " ") for t in ax.get_xticklabels()]
    assert columns[0] == "base"
    for i, (label, name) in enumerate(zip(columns[1:], comparison.variants, strict=True), 1):
        words = name.split("__")[1:]  # the run name without the base model's path
        assert label.startswith(f"V{i}: {words[0][:8]}"), label
        assert label.endswith("(random control)") == name.endswith("__random-s0")
    for artist in [bar.yaxis.label, ax.title, ax.xaxis.label, *ax.get_yticklabels()]:
        assert _inside(fig, artist), artist
    for artist in ax.get_xticklabels():
        assert _inside(fig, artist), artist
    # Non-significant cells are faded and hatched: light, whatever their size.
    pixels = np.asarray(fig.canvas.buffer_rgba())[..., :3] / 255.0
    height = pixels.shape[0]
    hatched = {(p.get_x() + 0.5, p.get_y() + 0.5) for p in ax.patches if p.get_hatch()}
    checked = 0
    for i, row in enumerate(comparison.rows):
        for j, cell in enumerate(row.cells, start=1):
            if cell.delta is None:
                continue
            assert ((j, i) in hatched) == (not cell.significant)
            x, y = ax.transData.transform((j - 0.3, i - 0.3))
            corner = pixels[int(height - y) - 3 : int(height - y) + 3, int(x) - 3 : int(x) + 3]
            if not cell.significant:
                assert corner.mean() > 0.6, (row.task, cell.delta, corner.mean())
                checked += 1
    assert checked >= 3
    # The smallest figure (one variant, one task) still shows every label whole.
    _, small = _heatmap(runs, "base", "v1", tasks="toy_a")
    small_ax, small_bar = small.axes
    for artist in [small_bar.yaxis.label, small_ax.title, small_ax.xaxis.label]:
        assert _inside(small, artist), artist
    assert small_ax.get_yticklabels()[0].get_text() == "toy_a · n=15 · own V1"


def test_heatmap_has_tasks_on_rows_base_level_and_fits_a_screen(runs):
    """Before: 21 tasks made a 4400 x 748 px strip of columns with no base level and no
    mark for the target; now tasks are rows, the base is the first column, own tasks are
    first and bold, and the figure is at most 1600 px wide."""
    from relneuron_eval.compare.heatmap import DPI, heatmap_figure

    comparison, fig = _heatmap(runs, "base", "v1", "ctrl")
    ax, _ = fig.axes
    rows = [t.get_text() for t in ax.get_yticklabels()]
    assert rows == [
        " · ".join(
            [f"[{r.task}]" if r.kind == "group" else r.task, f"n={r.n}"]
            + (
                ["own " + ",".join(f"V{comparison.variants.index(v) + 1}" for v in r.own)]
                if r.own
                else []
            )
        )
        for r in comparison.rows
    ]
    assert rows[0].startswith("toy_a") and "own V1" in rows[0]  # v1 deactivates group a
    bold = [t.get_fontweight() == "bold" for t in ax.get_yticklabels()]
    assert bold == [bool(r.own) for r in comparison.rows]
    base_texts = {t.get_text() for t in ax.texts if t.get_position()[0] == 0}
    assert base_texts == {f"{r.base:.2f}" for r in comparison.rows}
    # 24 tasks with long names, 3 runs: wide enough to read, never wider than a screen.
    template = comparison.rows
    comparison.rows = [
        type(r)(**{**r.__dict__, "task": f"relfacts_person_plays_position_in_sport_{k}"})
        for k in range(8)
        for r in template
    ]
    fig = heatmap_figure(comparison)
    fig.canvas.draw()
    ax, bar = fig.axes
    width, height = fig.get_size_inches() * DPI
    assert 800 <= width <= 1600 and height > width / 2, (width, height)
    assert len(ax.get_yticklabels()) == 24
    for artist in [bar.yaxis.label, ax.title, ax.xaxis.label, *ax.get_yticklabels()]:
        assert _inside(fig, artist), artist
    for artist in ax.get_xticklabels():
        assert _inside(fig, artist), artist


def test_leaderboard_sorting(runs, capsys):
    data = _json(capsys, runs["base"], runs["v1"], runs["short"])
    order = [0 if r["own"] else 1 if r["kind"] == "group" else 2 for r in data["rows"]]
    assert order == sorted(order) and order[0] == 0  # the variants' own tasks, then groups
    assert [r["task"] for r in data["rows"] if r["own"]] != []
    for kind in (0, 1, 2):
        rows = [r for r, k in zip(data["rows"], order, strict=True) if k == kind]
        biggest = [
            max([abs(c["delta"]) for c in r["cells"] if c["delta"] is not None], default=-1.0)
            for r in rows
        ]
        assert biggest == sorted(biggest, reverse=True)
    board = data["leaderboard"]
    v1 = _v1(data)
    assert board[0]["variant"] == data["variants"][v1]  # the compared run first
    assert board[0]["compared"] == 3 and board[1]["compared"] == 0
    assert board[0]["mean_delta"] == pytest.approx(
        sum(r["cells"][v1]["delta"] for r in data["rows"]) / 3
    )
    assert board[1]["mean_delta"] is None
    by_name = _json(capsys, runs["base"], runs["v1"], "--sort", "name")
    assert [r["task"] for r in by_name["rows"]] == ["toy_a", "toy_group", "toy_b"]  # own first
    by_base = _json(capsys, runs["base"], runs["v1"], runs["ctrl"], "--sort", "base")
    for own in (True, False):  # the own tasks first, each part by base score
        scores = [
            r["base"] for r in by_base["rows"] if r["kind"] == "task" and bool(r["own"]) == own
        ]
        assert scores == sorted(scores, reverse=True)


# ====================================================================== mismatches
def test_other_limit_and_missing_tasks_are_reported(runs, capsys):
    data = _json(capsys, runs["base"], runs["short"])
    cell = _cell(data, "toy_a")
    assert cell["status"] == "mismatch" and cell["delta"] is None
    assert "15 vs 10 documents" in cell["note"] and "--limit 15.0 vs 10.0" in cell["note"]
    assert _cell(data, "toy_b")["status"] == "missing"
    assert _cell(data, "toy_group")["status"] == "missing"
    (missing,) = [p for p in data["problems"] if "missing task(s)" in p]
    assert "'toy_b'" in missing and "'toy_group'" in missing and "'toy_a'" not in missing
    assert any("toy_a not compared: 15 vs 10 documents" in p for p in data["problems"])
    code, table, _ = _cli(runs["base"], runs["short"], capsys=capsys)
    assert code == 0 and "PROBLEMS (not compared):" in table
    assert _cli(runs["base"], runs["short"], "--strict", capsys=capsys)[0] == 1
    assert _cli(runs["base"], runs["v1"], "--strict", capsys=capsys)[0] == 0


def test_other_task_version_is_reported(runs, tmp_path, capsys):
    """As if toy_a's YAML had been changed to version 2.0 before the variant run."""
    changed = tmp_path / "v1-new-version"
    shutil.copytree(runs["v1"], changed)
    (path,) = changed.rglob("results_*.json")
    results = json.loads(path.read_text())
    results["versions"]["toy_a"] = 2.0
    path.write_text(json.dumps(results))
    data = _json(capsys, runs["base"], changed)
    assert _cell(data, "toy_a")["status"] == "mismatch"
    assert "task version 1.0 vs 2.0" in _cell(data, "toy_a")["note"]
    assert _cell(data, "toy_b")["status"] == "ok"
    assert any("toy_a not compared: task version 1.0 vs 2.0" in p for p in data["problems"])


def _renamed(src: Path, dst: Path) -> Path:
    """A copy of a run whose tasks carry other names (as if other tasks had been run)."""
    shutil.copytree(src, dst)
    (path,) = dst.rglob("results_*.json")
    text = path.read_text()
    for task in ("toy_group", "toy_a", "toy_b"):
        text = text.replace(f'"{task}"', f'"other_{task}"')
    path.write_text(text)
    return dst


def test_no_shared_task_is_an_error_or_a_warning(runs, tmp_path, capsys):
    """Before: exit 0 and a table of empty cells when base and variant share no task."""
    other = _renamed(runs["v1"], tmp_path / "other")
    code, out, err = _cli(runs["base"], other, capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert err.startswith("error: nothing to compare: the base and the other runs share no task")
    assert "toy_a" in err and "other_toy_a" in err
    # With a variant that does share tasks, the other one is a warning on stderr.
    other = _renamed(runs["short"], tmp_path / "other-short")
    code, out, err = _cli(runs["base"], runs["v1"], other, "--format", "csv", capsys=capsys)
    assert code == 0 and out.startswith("task,kind,metric")
    (line,) = [w for w in err.splitlines() if "shares no task" in w]
    assert line.startswith("warning: ") and "none of its results are compared" in line
    data = _json(capsys, runs["base"], runs["v1"], other)
    assert any("shares no task with the base" in w for w in data["warnings"])


def test_truncated_sample_log_is_warned_about(runs, tmp_path, capsys):
    """Before: the paired test silently became a z-test; only --format json said so."""
    cut = tmp_path / "v1-cut"
    shutil.copytree(runs["v1"], cut)
    (samples,) = cut.rglob("samples_toy_a_*.jsonl")
    lines = samples.read_text().splitlines(keepends=True)
    samples.write_text("".join(lines[:-3]))  # an interrupted copy: 12 of 15 records
    code, out, err = _cli(runs["base"], cut, capsys=capsys)
    assert code == 0 and out.startswith("own  task")
    warned = [w for w in err.splitlines() if w.startswith("warning: ")]
    (toy_a,) = [w for w in warned if ": toy_a (acc)" in w]
    assert "no paired test" in toy_a and "15 in" in toy_a and "12 in" in toy_a
    assert "z-test on lm-eval's stderr" in toy_a
    assert any(": toy_group (acc)" in w for w in warned)  # the group's paired test too
    assert not any(": toy_b " in w for w in warned)  # toy_b's logs are whole: paired
    data = _json(capsys, runs["base"], cut)
    assert _cell(data, "toy_a")["test"] == "stderr-z" and _cell(data, "toy_b")["test"] == "mcnemar"
    assert len(data["warnings"]) == 2
    # A log cut in the middle of a line is named with its line number.
    samples.write_text("".join(lines)[: -len(lines[-1]) // 2])
    _, _, err = _cli(runs["base"], cut, capsys=capsys)
    assert f"unreadable sample log: {samples}:15: not valid JSON" in err
    # Without any sample logs the z-test is the documented fallback: no warning.
    base = _results_only(runs["base"], tmp_path / "base")
    v1 = _results_only(runs["v1"], tmp_path / "v1")
    assert _cli(base, v1, capsys=capsys)[2] == ""


def test_random_control_is_a_reference_not_a_candidate(runs, capsys):
    """Before: the leaderboard (and the demo's summary) ranked the control as 'best'."""
    import importlib.util

    data = _json(capsys, runs["base"], runs["v1"], runs["ctrl"])
    board = data["leaderboard"]
    assert [e["control"] for e in board] == [False, True]  # whatever the mean changes
    assert board[1]["variant"].endswith("__random-s0")
    code, table, _ = _cli(runs["base"], runs["v1"], runs["ctrl"], capsys=capsys)
    assert code == 0
    lines = table.splitlines()
    assert "best" not in table
    head = lines.index("random controls (the reference for the variants, not candidates):")
    index = data["variants"].index(board[1]["variant"]) + 1
    assert lines[head + 1].startswith(f"  V{index}: mean Δ")
    assert any(line.endswith("__random-s0 (random control)") for line in lines)
    demo_py = Path(__file__).resolve().parents[2] / "scripts" / "demo.py"
    spec = importlib.util.spec_from_file_location("demo", demo_py)
    demo = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(demo)
    summary = demo.summary(data, "a", target="toy_a")
    assert summary[1].split() == ["task", "deactivated", "random", "control"]
    rows = {line.split()[0]: line.split()[-2:] for line in summary[2:5]}
    for row in data["rows"]:
        cells = [row["cells"][data["variants"].index(e["variant"])] for e in board]
        assert rows[row["task"]] == [
            f"{c['delta']:+.2f}" + "*" * bool(c["significant"]) for c in cells
        ]
    text = " ".join(summary)
    assert "best" not in text and "reference" in text and "not a candidate" in text
    mine, ref = (_cell(data, "toy_a", data["variants"].index(e["variant"]))["delta"] for e in board)
    assert f"the relation-specific effect is {mine - ref:+.2f} (on 15 documents)" in text


# =========================================================== reading 20+ tasks
def test_one_metric_per_task_own_task_first_with_n_and_test(runs, capsys):
    """Before: every metric of every task (44 rows for 21 tasks, a task's two metrics
    apart), the target relation not marked, no n, and nothing said which test ran."""
    data = _json(capsys, runs["rf_base"], runs["rf_v"])
    (variant,) = data["variants"]
    first = data["rows"][0]
    assert (first["task"], first["metric"]) == ("relfacts_country_language", "acc_match")
    assert {r["metric"] for r in data["rows"]} == {"acc_match"}  # one row per task
    assert sorted(r["task"] for r in data["rows"]) == sorted(RF_TASKS.split(","))
    assert [r["own"] for r in data["rows"]] == [[variant], [], []]
    assert all(r["n"] == 10 for r in data["rows"])
    assert all(r["cells"][0]["test"] == "mcnemar" for r in data["rows"])
    code, table, _ = _cli(runs["rf_base"], runs["rf_v"], capsys=capsys)
    lines = table.splitlines()
    assert code == 0 and lines[0].split()[:5] == ["own", "task", "metric", "n", "base"]
    first = lines[2].split()
    assert first[:4] == ["V1", "relfacts_country_language", "acc_match", "10"]
    assert first[-1] == "M" and all(line.split()[-1] == "M" for line in lines[3:5])
    (tests,) = [line for line in lines if line.startswith("tests: ")]
    assert "M = exact McNemar, paired by document (--log_samples logs): 3 cells" in tests
    assert "z-test" not in tests
    # --metric all: every metric, a task's rows next to each other; --metric picks one.
    every = _json(capsys, runs["rf_base"], runs["rf_v"], "--metric", "all")
    tasks = [r["task"] for r in every["rows"]]
    assert len(tasks) == 6 and all(tasks[i] == tasks[i + 1] for i in (0, 2, 4))
    assert tasks[0] == "relfacts_country_language"
    chosen = _json(capsys, runs["rf_base"], runs["rf_v"], "--metric", "acc_prefix2")
    assert {r["metric"] for r in chosen["rows"]} == {"acc_prefix2"}
    # A metric no task reports is an error naming those they do (before: an empty table).
    code, out, err = _cli(runs["rf_base"], runs["rf_v"], "--metric", "acc_mach", capsys=capsys)
    assert code == 2 and out == "" and err.count("\n") == 1, err
    assert "--metric acc_mach: no compared task reports it" in err and "acc_match" in err


def _rewrite_samples(folder: Path, task: str, metric: str, value: float) -> None:
    """Set ``metric`` of every logged document of ``task`` (and lm-eval's mean) to ``value``."""
    (log,) = folder.rglob(f"samples_{task}_*.jsonl")
    records = [json.loads(line) for line in log.read_text().splitlines() if line.strip()]
    log.write_text("".join(json.dumps({**r, metric: value}) + "\n" for r in records))
    (path,) = folder.rglob("results_*.json")
    results = json.loads(path.read_text())
    results["results"][task][f"{metric},none"] = value
    path.write_text(json.dumps(results))


def test_undiscriminating_acc_prefix2_is_never_significant(runs, tmp_path, capsys):
    """Before: an acc_prefix2 change on a relation whose objects share their first two
    tokens (taskgen warns: person_mother) was starred like any other (issue 19).

    Both relations get the same drop (every document right in the base, wrong in the
    variant: exact McNemar p = 2 / 2**10); only the flagged relation loses its star."""
    base = th.copy_tree(runs["rf_base"], tmp_path / "base")
    variant = th.copy_tree(runs["rf_v"], tmp_path / "variant")
    for task in ("relfacts_person_mother", "relfacts_country_capital_city"):
        _rewrite_samples(base, task, "acc_prefix2", 1.0)
        _rewrite_samples(variant, task, "acc_prefix2", 0.0)
    data = _json(capsys, base, variant, "--metric", "acc_prefix2")
    rows = {r["task"]: r for r in data["rows"]}
    mother, capital = rows["relfacts_person_mother"], rows["relfacts_country_capital_city"]
    for row in (mother, capital):
        assert row["cells"][0]["p_value"] == pytest.approx(2 / 2**10)
    assert capital["cells"][0]["significant"] is True and capital["flag"] == ""
    assert mother["cells"][0]["significant"] is None
    assert "person_mother" in mother["flag"] and "read acc_match" in mother["flag"]
    assert data["leaderboard"][0]["significant_down"] == 1  # the flagged cell is not counted
    code, table, _ = _cli(base, variant, "--metric", "acc_prefix2", capsys=capsys)
    line = next(x for x in table.splitlines() if "relfacts_person_mother" in x)
    assert code == 0 and line.endswith("0.00195! M") and "*" not in line
    assert any(x.startswith("! = acc_prefix2 cannot tell") for x in table.splitlines())


# ======================================================================= bad input
def _bad(tmp_path: Path, capsys, *inputs) -> str:
    out, heat = tmp_path / "out.md", tmp_path / "heat.png"
    code, stdout, err = _cli(
        *inputs, "--format", "markdown", "-o", out, "--heatmap", heat, capsys=capsys
    )
    assert code == 2 and stdout == ""
    assert err.startswith("error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    assert not out.exists() and not heat.exists()
    return err


def test_bad_inputs_are_clean_errors_and_write_nothing(runs, tmp_path, capsys):
    other = tmp_path / "config.json"
    other.write_text(json.dumps({"architectures": ["LlamaForCausalLM"], "hidden_size": 64}))
    assert "not an lm-eval results file" in _bad(tmp_path, capsys, runs["base"], other)
    listing = tmp_path / "list.json"
    listing.write_text("[1, 2]")
    assert "top level is not an object" in _bad(tmp_path, capsys, runs["base"], listing)
    (real,) = runs["v1"].rglob("results_*.json")
    truncated = tmp_path / "results_truncated.json"
    truncated.write_text(real.read_text()[: len(real.read_text()) // 2])
    err = _bad(tmp_path, capsys, runs["base"], truncated)
    assert "invalid JSON" in err and "truncated" in err and str(truncated) in err
    empty = tmp_path / "empty"
    empty.mkdir()
    assert "no lm-eval result files" in _bad(tmp_path, capsys, runs["base"], empty)
    assert "no such file or folder" in _bad(tmp_path, capsys, runs["base"], tmp_path / "nope")
    assert "no base run" in _bad(tmp_path, capsys, runs["v1"], runs["short"])
    assert "only one run" in _bad(tmp_path, capsys, runs["base"])


def test_console_script(runs, tmp_path):
    script = Path(sys.executable).with_name("relneuron")
    proc = subprocess.run(
        [str(script), "compare", str(runs["base"]), str(runs["v1"]), "--format", "csv"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.splitlines()[0].startswith("task,kind,metric,filter")
    proc = subprocess.run(
        [str(script), "compare", str(tmp_path)], capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 2 and proc.stderr.startswith("error: ")
