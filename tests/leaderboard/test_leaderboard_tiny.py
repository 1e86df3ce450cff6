"""``relneuron leaderboard`` end to end on a tiny random Llama with the real tokenizer.

One run (module fixture) of two methods (DiffMean found here, the random control drawn
per budget from its top-k) on three multiple-choice relations (the tiny model's base is
above 0 there), 4 documents each, budgets 4 and 16: 9 lm-eval calls through the
project's runner (marked slow: about 25 CPU s, most of it the 49k-vocabulary logits). The scores are recomputed by hand from the cached per-document runs;
a second run with ``--add`` of DiffMean's own set (a user's file) evaluates nothing and scores it exactly
as DiffMean. Two processes on one ``--out`` give the same numbers; the page in a
real headless Chromium loads without errors, sorts, and shows every method.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

RELATIONS = ["city_on_continent", "country_on_continent", "person_plays_instrument"]
METHODS = ["diffmean", "random"]


def _settings(folder: Path, model: Path, methods: str) -> Path:
    path = folder / "settings.yaml"
    path.write_text(
        f"model: {model}\nmetric: mc\nbudgets: [4, 16]\n"
        f"relations: [{', '.join(RELATIONS)}]\n"
        f"discovery:\n  relations: [{', '.join(RELATIONS)}]\n  fewshot: 0\n  max_facts: 3\n"
        f"  batch_size: 8\nmethods:\n{methods}"
    )
    return path


METHOD_LINES = "  - diffmean\n  - name: random\n    of: diffmean\n"


def _argv(settings: Path, out: Path, *extra: str) -> list[str]:
    return [
        "leaderboard",
        "--settings",
        str(settings),
        "--out",
        str(out),
        "--limit",
        "4",
        "--device",
        "cpu",
        "--batch-size",
        "8",
        "--threads",
        "1",
        "--no-progress",
        *extra,
    ]


@pytest.fixture(scope="module")
def board(tmp_path_factory):
    from tools_helpers import tiny_model

    from relneuron_eval import cli

    folder = tmp_path_factory.mktemp("board")
    settings = _settings(folder, tiny_model(), METHOD_LINES)
    out = folder / "out"
    assert cli.main(_argv(settings, out)) == 0
    results = json.loads((out / "leaderboard.json").read_text())
    return {"folder": folder, "settings": settings, "out": out, "results": results}


def _runs(out: Path) -> dict[tuple[str, str], list[float]]:
    runs = {}
    for path in (out / "runs").glob("*.json"):
        data = json.loads(path.read_text())
        docs = sorted(data["result"]["docs"], key=lambda d: d["doc_id"])
        runs[(data["label"], data["result"]["task"])] = [d["acc"] for d in docs]
    return runs


@pytest.mark.slow
def test_scores_are_recomputed_by_hand_from_the_cached_runs(board):
    results, runs = board["results"], _runs(board["out"])
    assert set(results["scores"]["per_method"]) == set(METHODS)
    mean = lambda v: sum(v) / len(v)  # noqa: E731
    base = {r: mean(runs[("base", f"relfacts_mc_{r}")]) for r in RELATIONS}
    assert all(b > 0 for b in base.values())  # a relative drop is defined everywhere
    for m in METHODS:
        for i, r in enumerate(RELATIONS):
            got = results["scores"]["per_relation"][m][r]
            for j, k in enumerate((4, 16)):
                acc = mean(runs[(f"{m} k={k} cause", f"relfacts_mc_{r}")])
                assert got["cause"][j] == pytest.approx((base[r] - acc) / base[r])
                hit = RELATIONS[(i - 1) % 3]  # r's units went to the previous relation's docs
                acc = mean(runs[(f"{m} k={k} isolate1", f"relfacts_mc_{hit}")])
                assert got["isolate"][j] == pytest.approx(1 - (base[hit] - acc) / base[hit])
    cause = [v for (label, _), v in runs.items() if label.endswith("cause")]
    assert any(v != runs[("base", t)] for (lb, t), v in runs.items() if lb.endswith("cause"))
    assert cause and results["meta"]["evaluations"]["lm_eval_calls"] == 1 + 2 * 2 * 2


@pytest.mark.slow
def test_outputs_agree_and_name_every_method(board):
    out, results = board["out"], board["results"]
    md = (out / "leaderboard.md").read_text()
    page = (out / "leaderboard.html").read_text()
    assert (out / "leaderboard.png").read_bytes()[:4] == b"\x89PNG"
    for m in METHODS:
        assert f"| {m} |" in md and f'data-method="{m}"' in page
    assert "data:image/png;base64," in page
    assert not re.search(r"""(src|href)=["']?(https?:)?//""", page)  # no network resource
    assert results["meta"]["settings"]["text"] == board["settings"].read_text()
    assert results["costs"]["diffmean"]["forward_equivalents"] > 0
    assert results["meta"]["command"].startswith("relneuron leaderboard --settings")


@pytest.mark.slow
def test_an_added_set_is_scored_exactly_like_the_built_in_one(board, capsys):
    from relneuron_eval import cli

    mine = board["out"] / "sets" / "diffmean.jsonl.gz"
    argv = _argv(board["settings"], board["out"], "--add", f"mine={mine}")
    assert cli.main(argv) == 0
    again = json.loads((board["out"] / "leaderboard.json").read_text())
    assert again["meta"]["evaluations"]["lm_eval_calls"] == 0  # everything was cached
    s = again["scores"]
    assert s["per_relation"]["mine"] == s["per_relation"]["diffmean"]
    assert any(p["a"] == "diffmean" and p["b"] == "mine" for p in s["comparisons"])


@pytest.mark.slow
def test_two_processes_give_the_numbers_of_one(board, tmp_path):
    out = tmp_path / "two"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    cmd = [sys.executable, "-m", "relneuron_eval.cli", *_argv(board["settings"], out)]
    procs = [subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    errors = [p.communicate(timeout=600)[1] for p in procs]
    assert [p.returncode for p in procs] == [0, 0], errors
    two = json.loads((out / "leaderboard.json").read_text())["scores"]
    one = board["results"]["scores"]
    assert two["per_relation"] == one["per_relation"]
    assert two["per_method"] == one["per_method"]


@pytest.mark.slow
@pytest.mark.skipif(shutil.which("chromium") is None, reason="needs Debian's chromium")
def test_the_page_in_a_headless_browser(board, tmp_path):
    """Loads without console errors, sorts by a column (both ways), shows every method."""
    page = (board["out"] / "leaderboard.html").read_text()
    probe = """<script>
    window.__errors = [];
    window.addEventListener('error', function (e) { window.__errors.push(String(e.message)); });
    window.addEventListener('load', function () {
      var th = document.querySelector('th[data-col="2"]');
      function col() { return Array.prototype.map.call(document.querySelectorAll('#board tbody tr'),
        function (r) { return parseFloat(r.cells[2].dataset.v); }).filter(function (v) { return !isNaN(v); }); }
      th.click(); var up = col(); th.click(); var down = col();
      var methods = Array.prototype.map.call(document.querySelectorAll('#board tbody tr'),
        function (r) { return r.dataset.method; });
      var out = document.createElement('pre'); out.id = 'probe';
      out.textContent = JSON.stringify({up: up, down: down, methods: methods, errors: window.__errors});
      document.body.appendChild(out);
    });
    </script>"""
    test_page = tmp_path / "probe.html"
    test_page.write_text(page.replace("<body>", "<body>" + probe, 1))
    proc = subprocess.run(
        [
            "chromium",
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--enable-logging=stderr",
            "--virtual-time-budget=5000",
            "--dump-dom",
            test_page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    match = re.search(r'<pre id="probe">(.*?)</pre>', proc.stdout, re.S)
    assert match, proc.stderr[-2000:]
    import html

    got = json.loads(html.unescape(match.group(1)))
    assert got["errors"] == [] and "Uncaught" not in proc.stderr
    assert got["up"] == sorted(got["up"]) and got["down"] == sorted(got["down"], reverse=True)
    shown = json.loads((board["out"] / "leaderboard.json").read_text())["scores"]["per_method"]
    assert set(got["methods"]) == set(shown) >= set(METHODS)  # with --add's, if it ran first
