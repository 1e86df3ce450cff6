"""Re-read a report's stored runs (``runs/*.json``) without a model or the current tasks.

A shipped report's numbers can be recomputed under a new rule (issue 19: own vs the
control distribution with its seed variance) from its per-document results alone. Runs
are found by their label and task, whatever the task fingerprint, so a re-analysis does
not depend on the task files being unchanged since the run.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.statistics import paired_test, seed_aware_test


def load_runs(folder: str | Path) -> dict[tuple[str, str], dict[int, dict[str, Any]]]:
    """(label, task) -> doc_id -> record, the longest stored run of each pair."""
    out: dict[tuple[str, str], list[dict[str, Any]]] = {}
    files = sorted(Path(folder).glob("*.json"))
    if not files:
        raise RelNeuronError(f"no stored runs in {folder}", hint="give a report's runs/ folder")
    for path in files:
        data = json.loads(path.read_text(encoding="utf-8"))
        if data.get("format") != "relneuron-report-run":
            continue
        key = (str(data["label"]), str(data["key_fields"]["task"]))
        docs = data["result"]["docs"]
        if key not in out or len(docs) > len(out[key]):
            out[key] = docs
    return {k: {int(d["doc_id"]): d for d in v} for k, v in out.items()}


def specificity_tests(
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]],
    relation: str,
    k: int,
    seeds: list[int],
    metric: str = "acc_match",
) -> dict[str, Any]:
    """One relation's own-task cell: base, deactivated, seed accuracies, and p vs control
    by the old rule (paired test of the seed mean) and the seed-aware one."""
    task = f"relfacts_{relation}"
    base = runs[("base", task)]
    deact = runs[(f"deact {relation} k={k}", task)]
    ctrls = [runs[(f"control {relation} k={k} s={s}", task)] for s in seeds]
    ids = sorted(base)
    b = [base[i][metric] for i in ids]
    d = [deact[i][metric] for i in ids]
    cs = [[c[i][metric] for i in ids] for c in ctrls]
    cbar = [sum(col) / len(col) for col in zip(*cs, strict=True)]
    seeded = seed_aware_test(d, cs)
    n = len(ids)
    return {
        "n_docs": n,
        "base": sum(b) / n,
        "deact": sum(d) / n,
        "control": sum(cbar) / n,
        "control_seeds": [sum(row) / n for row in cs],
        "p_old": paired_test(cbar, d).p,
        "p_seed_aware": seeded.p,
        "seed_sd": seeded.seed_sd,
    }


def shared_subject_split(
    runs: dict[tuple[str, str], dict[int, dict[str, Any]]],
    relations: list[str],
    k: int,
    metric: str = "acc_match",
) -> dict[str, Any]:
    """Does it matter for the r x r' matrix that a test subject of r' may be a discovery
    subject of r (splits are subject-disjoint within a relation only)? Off-diagonal
    drops (base - deactivated, per document) pooled over the cells, for documents whose
    subject r's neurons were found on vs the others."""
    from relneuron_eval.data.answers import normalize
    from relneuron_eval.data.facts import load_relations

    rels = load_relations(relations)
    disc = {
        r: {normalize(f.subject) for f in rels[r].facts if f.split == "discovery"} for r in rels
    }
    subject = {f.fact_id: normalize(f.subject) for r in rels.values() for f in r.facts}
    groups: dict[bool, list[float]] = {True: [], False: []}
    for r in relations:
        for c in relations:
            task = f"relfacts_{c}"
            deact = runs.get((f"deact {r} k={k}", task))
            if r == c or deact is None:
                continue
            base = runs[("base", task)]
            for i, rec in deact.items():
                shared = subject.get(str(rec.get("id"))) in disc[r]
                groups[shared].append(base[i][metric] - rec[metric])
    return {
        name: {"n": len(v), "mean_drop": sum(v) / len(v) if v else None}
        for name, v in (("shared", groups[True]), ("not_shared", groups[False]))
    }


def reread_report(runs: str | Path, out: str | Path, argv: list[str]) -> dict[str, Any]:
    """Render a report from stored runs only, under today's analysis: each task's
    fingerprint is taken from the runs (a task changed since would otherwise be
    re-evaluated), and any evaluation the runs lack is an error, never a model load.

    ``argv``: ``relneuron report`` options (``--out`` is ``out``); the runs are copied to
    ``out/runs`` unless they are there already.
    """
    import argparse
    import shutil

    from relneuron_eval.report.command import build_setup, run_report
    from relneuron_eval.report.options import add_arguments

    out = Path(out)
    if Path(runs).resolve() != (out / "runs").resolve():
        shutil.copytree(runs, out / "runs", dirs_exist_ok=True)
    hashes: dict[str, str] = {}
    for path in sorted((out / "runs").glob("*.json")):
        fields = json.loads(path.read_text(encoding="utf-8"))["key_fields"]
        hashes[fields["task"]] = fields["task_hash"]
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(["--out", str(out), "--no-progress", *argv])
    setup, notes = build_setup(args, check_model=False)

    def missing(variant: Any, samples: dict[str, list[int]]) -> Any:
        raise RelNeuronError(
            f"the stored runs lack {variant.label} on {sorted(samples)}",
            hint="re-read with the settings the runs were made with",
        )

    notes.append(f"re-read from {runs} without a model (task fingerprints as stored)")
    results, _ = run_report(
        setup, missing, notes=notes, progress=False, fingerprint=lambda task: hashes[task]
    )
    return results
