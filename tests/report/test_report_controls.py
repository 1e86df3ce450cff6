"""Issue 19's controls in ``relneuron report``, on a stub with hand-designed answers.

Three relations, own tasks on their first 40 test facts, three control seeds, two other
relations' neurons per relation (``--other-controls 2``). Generations are written, not
just 0/1 outcomes, so what the deactivated model answers can be judged:

* base: the first accepted answer on documents d % 4 != 3, the next document's other
  object on the others (a wrong answer of the right type);
* city_in_country deactivated: "no idea" everywhere (-> "format broke");
* person_plays_pro_sport deactivated: always the relation's most frequent object
  (-> "switched default"); country_language deactivated: the next document's other
  object everywhere (-> "forgot": right type, no object takes over);
* random controls as base, except seed 2 on city_in_country, which also fails the
  first 10 documents (a seed of its own: the seed-aware test must see it);
* other relations' neurons on a relation's task: as base.

Every number is recomputed here from the task rows and the stored runs.
"""

from __future__ import annotations

import pytest
from test_report import _args, smol_set

from relneuron_eval.data.answers import match
from relneuron_eval.evaluation.results import TaskResult
from relneuron_eval.evaluation.statistics import SEED_Z, holm, seed_aware_test
from relneuron_eval.report.controls import majority

RELS = ["city_in_country", "country_language", "person_plays_pro_sport"]


class AnswerEval:
    def __init__(self) -> None:
        from relneuron_eval.report.setup import task_rows

        self.rows = {f"relfacts_{r}": task_rows(f"relfacts_{r}")["test"] for r in RELS}

    def generation(self, spec, task: str, d: int) -> str:
        rows = self.rows[task]
        rel = task[len("relfacts_") :]
        right = rows[d]["answers"][0]
        later = rows[d + 1 :] + rows[:d]  # the next document's other object
        other = next(r["object"] for r in later if r["object"] != rows[d]["object"])
        if "matched" in (spec.neuron_set or ""):
            return right if d % 4 != 3 else other  # the activation-matched hook: as base
        if spec.groups == rel and spec.control is None:
            if rel == "city_in_country":
                return "no idea"
            if rel == "person_plays_pro_sport":
                return majority(rows[:40])[0]
            return other
        if spec.groups == rel and spec.control and spec.seed == 2 and d < 10:
            return other
        return right if d % 4 != 3 else other

    def __call__(self, variant, samples):
        out = {}
        for task, docs in samples.items():
            recs = []
            for d in docs:
                gen = self.generation(variant.spec, task, d)
                ok = float(match(gen, self.rows[task][d]["answers"]))
                recs.append({"doc_id": d, "id": str(d), "acc_match": ok, "generation": gen})
            out[task] = TaskResult(task, recs, {"num_units": 40})
        return out


@pytest.fixture(scope="module")
def controls_report(tmp_path_factory):
    from relneuron_eval.report.command import build_setup, run_report

    folder = tmp_path_factory.mktemp("controls")
    rs = smol_set(folder / "rs.jsonl.gz", dict.fromkeys(RELS, 40))
    matched = smol_set(folder / "matched.jsonl.gz", dict.fromkeys(RELS, 40), seed=5)
    args = _args(
        folder / "out",
        *("--neuron-set", str(rs), "--relations", ",".join(RELS), "--seeds", "0,1,2"),
        *("--top-k", "40", "--limit-own", "40", "--limit", "20", "--metric", "acc_match"),
        *("--experiments", "interference", "--matrix-relations", ",".join(RELS)),
        *("--other-controls", "2", "--control-set", f"matched={matched}"),
    )
    setup, notes = build_setup(args, check_model=False)
    results, runner = run_report(setup, AnswerEval(), notes=notes, progress=False)
    return {"results": results, "runner": runner, "setup": setup, "out": folder / "out"}


def _values(rep, variant, rel):
    setup, runner = rep["setup"], rep["runner"]
    task = f"relfacts_{rel}"
    return runner.get(variant, task, setup.docs(task, own=True)).values("acc_match")


def test_p_vs_control_is_the_seed_aware_test_with_the_seed_sd(controls_report):
    setup = controls_report["setup"]
    rel = RELS[0]
    cell = controls_report["results"]["interference"]["per_relation"][rel]
    d = _values(controls_report, setup.deact(rel, 40), rel)
    cs = [_values(controls_report, setup.control(rel, 40, s), rel) for s in (0, 1, 2)]
    expected = seed_aware_test(d, cs)
    assert cell["test_vs_control"] == SEED_Z and cell["p_deact_vs_control"] == expected.p
    assert cell["control_seed_sd"] == pytest.approx(expected.seed_sd) and expected.seed_sd > 0
    assert cell["mde_vs_control"] > 0 and cell["mde_mcnemar"] is not None


def test_eligibility_is_measured_against_the_majority_class(controls_report):
    from relneuron_eval.report.setup import task_rows

    per = controls_report["results"]["interference"]["per_relation"]
    for r in RELS:
        rows = task_rows(f"relfacts_{r}")["test"][:40]
        obj, rate = majority(rows)
        assert per[r]["majority_object"] == obj and per[r]["majority_rate"] == rate
        expected = per[r]["base"] >= 0.2 and per[r]["base"] - rate >= 0.1 - 1e-12
        assert per[r]["eligible"] == expected


def test_verdicts_tell_forgetting_from_format_and_default(controls_report):
    per = controls_report["results"]["interference"]["per_relation"]
    assert per["city_in_country"]["verdict"] == "format broke"
    assert per["city_in_country"]["answers_deact"]["type_valid"] == 0.0
    assert per["person_plays_pro_sport"]["verdict"] == "switched default"
    assert per["person_plays_pro_sport"]["answers_deact"]["top_share"] == 1.0
    assert per["country_language"]["verdict"] == "forgot"
    assert per["country_language"]["answers_deact"]["type_valid"] == 1.0


def test_holm_counts_and_other_relations_control(controls_report):
    inter = controls_report["results"]["interference"]
    per, s = inter["per_relation"], inter["summary"]
    ok = [c for c in per.values() if c["eligible"]]
    adjusted = holm([c["p_deact_vs_base"] for c in ok])
    assert [c["p_deact_vs_base_holm"] for c in ok] == adjusted
    assert s["family"]["n_p_deact_vs_base_holm"] == sum(
        1 for c, p in zip(ok, adjusted, strict=True) if p < 0.05 and c["deact"] < c["base"]
    )
    cell = per[RELS[0]]
    assert cell["other_relations"] == RELS[1:]
    assert cell["others"] == pytest.approx(cell["base"])  # others' neurons act as base here
    assert s["others"]["n"] == len(ok)
    m = inter["matrix"]["offdiag_difference"]
    eligible_cols = [c for c in RELS if inter["matrix"]["own"]["eligible"][c]]
    assert m["n_cells"] == sum(1 for r in RELS for c in eligible_cols if r != c)
    assert inter["matrix"]["offdiag_own"]["n_cells"] == m["n_cells"]  # one rule everywhere


def test_markdown_names_the_tests_and_shows_the_new_columns(controls_report):
    md = (controls_report["out"] / "report.md").read_text()
    assert "seed-aware z" in md and "Holm" in md and "majority class" in md
    assert "format broke" in md and "switched default" in md
    assert "Own vs other relations' neurons" in md and "t over relations" in md
    assert "from the random control's seeds" in md and "cluster-bootstrap" in md


def test_answered_object_follows_the_match_rule():
    from relneuron_eval.report.controls import answered_object, object_answers
    from relneuron_eval.report.setup import task_rows

    rows = task_rows("relfacts_country_currency")["test"]
    objects = object_answers(rows)
    for spellings in list(objects.values())[:12]:
        for s in spellings:
            for gen in (f" {s}", f" {s}, of course", f" {s}ian", " the " + s):
                obj = answered_object(gen, objects)
                ok = [o for o, ss in objects.items() if any(match(gen, [x]) for x in ss)]
                assert (obj is None) == (not ok) and (obj is None or obj in ok)


def test_a_control_set_is_a_further_control(controls_report):
    inter = controls_report["results"]["interference"]
    for cell in inter["per_relation"].values():
        entry = cell["control_sets"]["matched"]
        assert entry["accuracy"] == pytest.approx(cell["base"])  # as base, by design
        assert entry["test"] == "mcnemar"
    s = inter["summary"]["control_sets"]["matched"]
    ok = [c for c in inter["per_relation"].values() if c["eligible"]]
    assert s["n"] == len(ok)
    assert "Own vs the control set `matched`" in (controls_report["out"] / "report.md").read_text()


def test_a_control_set_without_a_relation_is_refused(tmp_path):
    from relneuron_eval.errors import RelNeuronError
    from relneuron_eval.report.command import build_setup

    rs = smol_set(tmp_path / "rs.jsonl.gz", dict.fromkeys(RELS, 40))
    partial = smol_set(tmp_path / "partial.jsonl.gz", dict.fromkeys(RELS[:2], 40))
    args = _args(
        tmp_path / "out",
        *("--neuron-set", str(rs), "--relations", ",".join(RELS)),
        *("--experiments", "interference", "--control-set", f"m={partial}"),
    )
    with pytest.raises(RelNeuronError, match="has no group for"):
        build_setup(args, check_model=False)


def test_auto_relations_follow_the_same_eligibility_rule(controls_report):
    from relneuron_eval.report.controls import ranked_base
    from relneuron_eval.report.experiments import pick
    from relneuron_eval.report.setup import task_rows

    setup = controls_report["setup"]
    rates = {}
    for r in RELS:
        rows = task_rows(f"relfacts_{r}")["test"]
        rates[r] = majority([rows[i] for i in setup.docs(f"relfacts_{r}")])[1]
    base = {r: min(0.99, max(0.3, rates[r] + 0.2)) for r in RELS}
    near = RELS[2]
    base[near] = max(0.25, rates[near] + 0.05)  # above min_base, within 10 pp of majority
    ranked = ranked_base(setup, base)
    assert ranked[near] == -1.0 and all(ranked[r] == base[r] for r in RELS[:2])
    assert near not in pick(3, setup, ranked) and near in pick(3, setup, base)


def test_matrix_summaries_count_only_the_cells_the_rule_keeps(controls_report):
    import copy

    from relneuron_eval.report.controls import attach_matrix
    from relneuron_eval.report.setup import task_rows

    setup = controls_report["setup"]
    inter = copy.deepcopy(controls_report["results"]["interference"])
    col = RELS[1]
    rows = task_rows(f"relfacts_{col}")["test"]
    rate = majority([rows[i] for i in setup.docs(f"relfacts_{col}")])[1]
    inter["matrix"]["own"]["base"][col] = max(0.21, rate + 0.05)  # now within the margin
    attach_matrix(setup, inter, 0.05)
    matrix = inter["matrix"]
    assert matrix["own"]["eligible"][col] is False
    kept = sum(1 for r in RELS for c in RELS if r != c and matrix["own"]["eligible"][c])
    assert matrix["offdiag_own"]["n_cells"] == matrix["offdiag_control"]["n_cells"] == kept
    assert matrix["offdiag_difference"]["n_cells"] == kept


def test_a_multiple_choice_task_gets_an_answer_profile_from_its_top_choice():
    """--metric mc / mc_calibrated: what the model 'answers' is its highest-scoring object
    (the report once looked up a relation named 'mc_country_on_continent' and stopped)."""
    from relneuron_eval.harness.task_data import task_rows
    from relneuron_eval.report.controls import answers_block

    task = "relfacts_mc_country_on_continent"
    rows = task_rows(task)["test"][:20]

    def result(default: bool) -> TaskResult:
        docs = []
        for d, row in enumerate(rows):
            top = 0 if default else row["gold"][0]
            lls = [0.0 if c == top else -5.0 for c in range(len(row["choices"]))]
            docs.append({"doc_id": d, "acc": float(top in row["gold"]), "choice_ll": lls})
            docs[-1]["gold"] = row["gold"]
        return TaskResult(task, docs)

    class Runner:
        def get(self, variant, task_name, docs):
            return result(default=variant == "deact")

    class Setup:
        def docs(self, task_name, own):
            return list(range(len(rows)))

    block = answers_block(Runner(), Setup(), task, "acc", True, ("base", "deact", ["base"]))
    first = rows[0]["choices"][0]
    assert block["answers_base"]["type_valid"] == 1.0
    assert (
        block["answers_deact"]["top_object"] == first and block["answers_deact"]["top_share"] == 1.0
    )
    assert "switched default" in block["verdict"]
