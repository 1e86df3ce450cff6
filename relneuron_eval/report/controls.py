"""What the specificity claims must survive (issue 19): eligibility against the
majority-class rate, what a deactivated model answers instead, and the family-wise and
over-relation statistics of the headline.

Pure Python on per-document records and task rows (no torch, no lm-eval), so each rule
is checked by hand in the tests and re-applied to shipped runs without a model.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from typing import Any

from relneuron_eval.data.answers import is_cjk, match, normalize
from relneuron_eval.evaluation.statistics import holm, t_interval

# A relation is eligible for a drop claim when the model knows it better than "always
# answer the most frequent object" by this margin (on the documents the claim uses).
MIN_MARGIN = 0.10
# A shift of the answers by this much (share of documents) names what a drop is.
SHIFT = 0.10
VERDICTS = ("forgot", "format broke", "switched default", "small drop")


# =============================================================== eligibility
def majority(rows: Sequence[dict[str, Any]]) -> tuple[str | None, float]:
    """The most frequent gold object of ``rows`` and the accuracy of always answering
    it (a document counts when that object is among its accepted answers)."""
    if not rows:
        return None, 0.0
    counts = Counter(str(r["object"]) for r in rows)
    top = max(sorted(counts), key=lambda o: counts[o])
    key = normalize(top)
    hits = sum(1 for r in rows if key in {normalize(a) for a in _answers(r)})
    return top, hits / len(rows)


def eligibility(base: float, majority_rate: float, min_base: float, margin: float) -> bool:
    """One rule for every experiment: base >= min_base and base - majority >= margin."""
    return base >= min_base and base - majority_rate >= margin - 1e-12


def _answers(row: dict[str, Any]) -> list[str]:
    return [str(a) for a in (row.get("answers") or [row["object"]])]


# ====================================================== what the model answers
def object_answers(rows: Sequence[dict[str, Any]]) -> dict[str, list[str]]:
    """Every object of ``rows`` (facts or documents: ``object`` and ``answers``) with
    the spellings accepted for it."""
    out: dict[str, set[str]] = {}
    for r in rows:
        out.setdefault(str(r["object"]), set()).update(_answers(r))
    return {o: sorted(v, key=len, reverse=True) for o, v in sorted(out.items())}


def relation_objects(relation: str) -> dict[str, list[str]] | None:
    """A closed-set relation's objects over all its splits (the multiple-choice list)
    with their spellings; None for an open set (capitals, head offices), whose objects
    are nearly one per fact, so "names some object" would just mean "right"."""
    from relneuron_eval.data.facts import load_relation

    rel = load_relation(relation)
    if not rel.closed_set:
        return None
    return object_answers([{"object": f.object, "answers": f.answers} for f in rel.facts])


def spelling_table(objects: dict[str, list[str]]) -> dict[str, str]:
    """Normalised spelling -> object (the first object listing it wins a tie)."""
    table: dict[str, str] = {}
    for obj, spellings in objects.items():
        for s in spellings:
            table.setdefault(normalize(s), obj)
    table.pop("", None)
    return table


def answered_object(
    generation: str | None, objects: dict[str, list[str]], table: dict[str, str] | None = None
) -> str | None:
    """The object a generation names, by ``answers.match``'s rule (the normalised
    generation is a spelling, or starts with one and a space; the longest wins), as a
    lookup of the generation's word prefixes; CJK text goes through ``match`` itself."""
    if generation is None:
        return None
    gen = normalize(generation)
    if is_cjk(gen):
        hits = [(len(s), o) for o, ss in objects.items() for s in ss if match(generation, [s])]
        return max(hits)[1] if hits else None
    table = spelling_table(objects) if table is None else table
    words = gen.split()
    for i in range(len(words), 0, -1):
        hit = table.get(" ".join(words[:i]))
        if hit is not None:
            return hit
    return None


def answer_profile(
    generations: Sequence[str | None], objects: dict[str, list[str]]
) -> dict[str, Any] | None:
    """Share of answers that are some object of the relation (type-valid) and the most
    frequent answered object with its share; None without generations."""
    if not generations or any(g is None for g in generations):
        return None
    table = spelling_table(objects)
    named = [answered_object(g, objects, table) for g in generations]
    counts = Counter(o for o in named if o is not None)
    n = len(named)
    top = max(sorted(counts), key=lambda o: counts[o]) if counts else None
    return {
        "type_valid": sum(counts.values()) / n,
        "top_object": top,
        "top_share": counts[top] / n if top else 0.0,
        "shares": {o: c / n for o, c in counts.most_common(5)},
    }


def verdict(base: dict[str, Any] | None, after: dict[str, Any] | None, drop: float) -> str | None:
    """What a drop is: the answers left the relation's objects ("format broke"), one
    object took over ("switched default": its share rose by >= SHIFT), both, or neither
    ("forgot"); a drop under SHIFT is "small drop". None without generations."""
    if base is None or after is None:
        return None
    if drop < SHIFT:
        return "small drop"
    found = []
    if base["type_valid"] - after["type_valid"] >= SHIFT:
        found.append("format broke")
    top = after["top_object"]
    if top is not None and after["top_share"] - base["shares"].get(top, 0.0) >= SHIFT:
        found.append("switched default")
    return " + ".join(found) or "forgot"


# ============================================================ family of tests
def family(cells: Sequence[dict[str, Any]], alpha: float) -> dict[str, Any]:
    """Holm-adjusted p-values over the eligible relations, written into each cell, and
    the counts the headline states (raw and adjusted)."""
    out: dict[str, Any] = {"correction": "holm", "alpha": alpha}
    for key, better in (
        ("p_deact_vs_base", lambda c: c["deact"] < c["base"]),
        ("p_deact_vs_control", lambda c: c["deact"] < c["control"]),
        ("p_control_vs_base", lambda c: c["control"] < c["base"]),
        ("p_deact_vs_others", lambda c: c.get("others") is not None and c["deact"] < c["others"]),
    ):
        adjusted = holm([c.get(key) for c in cells])
        for c, p in zip(cells, adjusted, strict=True):
            c[key + "_holm"] = p
        out["n_" + key + "_holm"] = sum(
            1
            for c, p in zip(cells, adjusted, strict=True)
            if p is not None and p < alpha and better(c)
        )
    return out


def over_relations(diffs: Sequence[float]) -> dict[str, Any]:
    """The t interval of the mean difference over relations (the reported one)."""
    ci = t_interval(list(diffs))
    return {"ci95_t": list(ci) if ci else None}


def _answered(task: str, records: Sequence[dict[str, Any]]) -> list[str | None]:
    """What the model answered per record: its generation, or for a multiple-choice
    task the choice it scored highest (raw log-likelihood, as lm-eval's ``acc``)."""
    if not any("choice_ll" in r for r in records):
        return [r.get("generation") for r in records]
    from relneuron_eval.harness.task_data import task_rows

    rows = task_rows(task)["test"]
    out: list[str | None] = []
    for r in records:
        lls = r.get("choice_ll")
        choices = rows[int(r["doc_id"])]["choices"]
        out.append(choices[max(range(len(lls)), key=lls.__getitem__)] if lls else None)
    return out


# ====================================================== gathered from the runs
def answers_block(
    runner: Any,
    setup: Any,
    task: str,
    metric: str,
    own: bool,
    variants: tuple[Any, Any, Sequence[Any]],
) -> dict[str, Any]:
    """Per variant of one specificity cell: the type-valid rate and the most frequent
    answered object (from the stored generations, or a multiple-choice task's top choice),
    and the verdict on the drop."""
    docs = setup.docs(task, own)
    objects = relation_objects(task[len("relfacts_") :].removeprefix("mc_"))
    if objects is None:
        return {"verdict": "n/a (open answer set)"}

    def profile(variant: Any) -> dict[str, Any] | None:
        records = runner.get(variant, task, docs).records()
        return answer_profile(_answered(task, records), objects)

    base, deact, controls = variants
    b, d = profile(base), profile(deact)
    cs = [profile(c) for c in controls]
    values = runner.get(base, task, docs).values(metric)
    after = runner.get(deact, task, docs).values(metric)
    drop = (sum(values) - sum(after)) / len(values) if values else 0.0
    return {
        "answers_base": b,
        "answers_deact": d,
        "answers_control": cs[0] if cs else None,
        "control_type_valid": None
        if any(c is None for c in cs) or not cs
        else sum(c["type_valid"] for c in cs) / len(cs),
        "verdict": verdict(b, d, drop),
    }


def _recount(matrix: dict[str, Any], cells: list[tuple[str, str]], alpha: float) -> None:
    """The off-diagonal summaries again, over the cells the one eligibility rule keeps."""

    def mean_of(values: list[float | None]) -> float | None:
        kept = [v for v in values if v is not None]
        return sum(kept) / len(kept) if kept else None

    for side in ("own", "control"):
        m = matrix[side]
        matrix[f"offdiag_{side}"].update(
            {
                "n_cells": len(cells),
                "mean_relative_drop": mean_of([m["relative_drop"][r][c] for r, c in cells]),
                "mean_absolute_drop": mean_of([m["absolute_drop"][r][c] for r, c in cells]),
                "n_improved": sum(1 for r, c in cells if m["improved"][r][c]),
            }
        )
    own, p = matrix["own"], matrix["p_vs_base"]

    def significant(r: str, c: str) -> bool:
        return p[r][c] is not None and p[r][c] < alpha

    matrix["offdiag_own"]["n_dropped_significant"] = sum(
        1 for r, c in cells if own["absolute_drop"][r][c] > 0 and significant(r, c)
    )
    matrix["offdiag_own"]["n_improved_significant"] = sum(
        1 for r, c in cells if own["improved"][r][c] and significant(r, c)
    )


def attach_matrix(setup: Any, inter: dict[str, Any], alpha: float) -> None:
    """The r x r' matrix under the one eligibility rule (majority class, on the matrix's
    documents), Holm over its off-diagonal cells, and the cluster-bootstrap interval
    (clusters: rows, whose cells share the deactivated neurons) of the own minus the
    random control's off-diagonal drop: a measured interval, not a count of cells."""
    from relneuron_eval.evaluation.statistics import cluster_bootstrap_ci
    from relneuron_eval.report.setup import task_rows

    matrix = inter.get("matrix")
    if not matrix:
        return
    own, ctrl = matrix["own"], matrix["control"]
    for c in own["cols"]:
        task = setup.task(c)[0]
        rows = task_rows(task)["test"]
        _, rate = majority([rows[i] for i in setup.docs(task)])
        ok = eligibility(own["base"][c], rate, setup.min_base, setup.min_margin)
        own["eligible"][c] = ctrl["eligible"][c] = ok
    cells = [(r, c) for r in own["rows"] for c in own["cols"] if r != c and own["eligible"][c]]
    _recount(matrix, cells, alpha)
    adjusted = holm([matrix["p_vs_base"][r][c] for r, c in cells])
    holm_p: dict[str, dict[str, float | None]] = {r: {} for r in own["rows"]}
    for (r, c), p in zip(cells, adjusted, strict=True):
        holm_p[r][c] = p
    clusters = [
        [own["absolute_drop"][r][c] - ctrl["absolute_drop"][r][c] for rr, c in cells if rr == r]
        for r in own["rows"]
    ]
    diffs = [d for row in clusters for d in row]
    ci = cluster_bootstrap_ci(clusters)
    matrix["p_vs_base_holm"] = holm_p
    matrix["offdiag_difference"] = {
        "n_cells": len(diffs),
        "mean_own_minus_control_drop": sum(diffs) / len(diffs) if diffs else None,
        "ci95_cluster_bootstrap": list(ci) if ci else None,
        "n_dropped_significant_holm": sum(
            1
            for (r, c), p in zip(cells, adjusted, strict=True)
            if p is not None and p < alpha and own["absolute_drop"][r][c] > 0
        ),
        "n_improved_significant_holm": sum(
            1
            for (r, c), p in zip(cells, adjusted, strict=True)
            if p is not None and p < alpha and own["improved"][r][c]
        ),
    }


MIN_DOCS = 30  # below this a relation's own-task result is flagged (weights are equal)


def eligibility_record(setup: Any, inter: dict[str, Any]) -> dict[str, Any]:
    """The rule the claims used, and the relations too small to weigh as much as others."""
    small = [r for r, c in inter["per_relation"].items() if c["n_docs"] < MIN_DOCS]
    return {
        "min_base": setup.min_base,
        "min_margin": setup.min_margin,
        "min_docs": MIN_DOCS,
        "below_min_docs": small,
        "weighting": "each relation weighs the same in the mean over relations",
    }


def ranked_base(setup: Any, base: dict[str, float]) -> dict[str, float]:
    """The base accuracies ``auto:N`` ranks, with every relation the eligibility rule
    excludes (on the same first ``--limit`` documents) moved below any threshold, so
    the matrix and the curves pick only relations a drop can be claimed for."""
    from relneuron_eval.report.setup import task_rows

    out = dict(base)
    for r in setup.relations:
        task = setup.task(r)[0]
        rows = task_rows(task)["test"]
        _, rate = majority([rows[i] for i in setup.docs(task)])
        if not eligibility(base[r], rate, setup.min_base, setup.min_margin):
            out[r] = -1.0
    return out
