"""Two-hop chains (relfacts_2hop*) and the compositionality gap (``relneuron gap``).

A chain joins a fact of a first relation (e.g. landmark_in_country: Eiffel Tower ->
France) with the fact of a second relation whose subject is that object, the bridge
(country_capital_city: France -> Paris). Scored chains use ``test`` facts for BOTH hops;
few-shot demo chains use only non-test facts, so no demo shows a scored fact.

The compositionality gap (Press et al., 2023) is the share of chains whose two hops are
both answered right while the composed question is answered wrong, among the chains
with both hops right. It is read from lm-eval ``--log_samples`` output of
``relfacts_2hop``, ``relfacts_2hop_hop1`` and ``relfacts_2hop_hop2`` (and
``relfacts_2hop_cot`` when present), which share documents and order.
"""

from __future__ import annotations

import argparse
import json
import random
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.data.facts import Fact, Relation, fill, load_relations, subject_key
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.jsonl import iter_jsonl

# (first hop, second hop): the bridge is the first hop's object = the second hop's subject.
PAIRS: tuple[tuple[str, str], ...] = (
    ("landmark_in_country", "country_capital_city"),
    ("landmark_in_country", "country_language"),
    ("landmark_in_country", "country_currency"),
    ("landmark_in_country", "country_largest_city"),
    ("food_from_country", "country_capital_city"),
    ("food_from_country", "country_language"),
    ("food_from_country", "country_currency"),
    ("food_from_country", "country_largest_city"),
    ("city_in_country", "country_capital_city"),
    ("city_in_country", "country_language"),
    ("city_in_country", "country_currency"),
    ("city_in_country", "country_largest_city"),
    ("product_by_company", "company_hq"),
)
MAX_FEWSHOT_CHAINS = 64
# Held out from knowledge-neuron discovery: the first hop asked as a question, so the
# prompt ends in "?\nA:" rather than the "... the country of" that both the discovery
# templates (which attribute the neurons) and the eval templates (relfacts_2hop_hop1) share.
HOP1_HELDOUT_TASK = "relfacts_2hop_hop1_heldout"
TASKS = (
    "relfacts_2hop",
    "relfacts_2hop_cot",
    "relfacts_2hop_hop1",
    "relfacts_2hop_hop2",
    HOP1_HELDOUT_TASK,
)


@dataclass(frozen=True)
class Chain:
    hop1: Fact
    hop2: Fact
    hop1_relation: Relation
    hop2_relation: Relation

    @property
    def pair(self) -> str:
        return f"{self.hop1.relation}>{self.hop2.relation}"

    @property
    def chain_id(self) -> str:
        return f"{self.hop1.fact_id}>{self.hop2.fact_id}"

    @property
    def phrase(self) -> str:
        """The first hop as a noun phrase: "the country where Eiffel Tower is located"."""
        assert self.hop1_relation.compose is not None
        return fill(self.hop1_relation.compose, self.hop1.subject)

    @property
    def direct_prompt(self) -> str:
        assert self.hop2_relation.compose_prompt is not None
        return fill(self.hop2_relation.compose_prompt, self.phrase)

    @property
    def question(self) -> str:
        assert self.hop2_relation.question is not None
        return fill(self.hop2_relation.question, self.phrase)

    def hop_prompt(self, which: int) -> str:
        rel, fact = (
            (self.hop1_relation, self.hop1) if which == 1 else (self.hop2_relation, self.hop2)
        )
        return fill(rel.templates["eval"][rel.eval_template_index(fact)], fact.subject)

    @property
    def hop1_heldout_prompt(self) -> str:
        """The first hop as a question ("Q: In which country is X?\nA:"): a paraphrase
        with other final tokens than any template knowledge neurons are found on."""
        assert self.hop1_relation.question is not None
        return f"Q: {fill(self.hop1_relation.question, self.hop1.subject)}\nA:"

    @property
    def reasoning(self) -> str:
        """The worked answer of a demo: both hops stated, then the final answer."""
        first = self.hop1_relation.demo(self.hop1, self.hop1_relation.templates["eval"][0])
        second = self.hop2_relation.demo(self.hop2, self.hop2_relation.templates["eval"][0])
        answer = self.hop2.object
        stop = "" if answer.endswith(".") else "."
        first = first if first.endswith(".") else first + "."
        second = second if second.endswith(".") else second + "."
        return f"{first} {second} So the answer is {answer}{stop}"

    def doc(self) -> dict[str, Any]:
        return {
            "chain_id": self.chain_id,
            "pair": self.pair,
            "hop1_fact": self.hop1.fact_id,
            "hop2_fact": self.hop2.fact_id,
            "hop1_subject": self.hop1.subject,
            "bridge": self.hop1.object,
            "bridge_answers": list(dict.fromkeys([*self.hop1.answers, *self.hop2_aliases()])),
            "answer": self.hop2.object,
            "answers": list(self.hop2.answers),
            "prompt_direct": self.direct_prompt,
            "prompt_cot": f"Q: {self.question}\nA:",
            "cot_target": self.reasoning,
            "prompt_hop1": self.hop_prompt(1),
            "prompt_hop1_heldout": self.hop1_heldout_prompt,
            "prompt_hop2": self.hop_prompt(2),
            "delimiter": " ",
        }

    def hop2_aliases(self) -> list[str]:
        """The bridge as the second relation spells it (a subject, so no aliases)."""
        return [self.hop2.subject]


def _single_object(rel: Relation, fact: Fact) -> bool:
    """Facts with several objects (merged repeated subjects) make ambiguous chains."""
    objects = set(rel.objects)
    return sum(1 for a in fact.answers if a in objects) == 1


def build_chains(
    splits: tuple[str, ...] = ("test",),
    relations: dict[str, Relation] | None = None,
    pairs: tuple[tuple[str, str], ...] = PAIRS,
) -> list[Chain]:
    """All chains whose two hops are both facts of ``splits``, in a fixed order."""
    relations = relations if relations is not None else load_relations()
    chains = []
    for first, second in pairs:
        r1, r2 = relations[first], relations[second]
        by_subject = {subject_key(f.subject): f for f in r2.facts if f.split in splits}
        for fact in r1.facts:
            if fact.split not in splits or not _single_object(r1, fact):
                continue
            hop2 = by_subject.get(subject_key(fact.object))
            if hop2 is not None:
                chains.append(Chain(fact, hop2, r1, r2))
    return chains


def fewshot_chains(relations: dict[str, Relation] | None = None) -> list[Chain]:
    """Demo chains from non-test facts only, at most MAX_FEWSHOT_CHAINS, mixed over pairs."""
    chains = build_chains(("fewshot", "discovery"), relations)
    rng = random.Random("relfacts-2hop-fewshot")
    by_pair: dict[str, list[Chain]] = defaultdict(list)
    for chain in chains:
        by_pair[chain.pair].append(chain)
    picked: list[Chain] = []
    # Round-robin over pairs so small pairs are represented among the demos.
    pools = [rng.sample(v, len(v)) for _, v in sorted(by_pair.items())]
    while len(picked) < MAX_FEWSHOT_CHAINS and any(pools):
        for pool in pools:
            if pool and len(picked) < MAX_FEWSHOT_CHAINS:
                picked.append(pool.pop())
    return picked


def chain_counts(chains: list[Chain]) -> dict[str, int]:
    counts: dict[str, int] = defaultdict(int)
    for chain in chains:
        counts[chain.pair] += 1
    return dict(counts)


# ------------------------------------------------------------------------ gap
HELP = (
    "compositionality gap from lm-eval --log_samples output of the relfacts_2hop tasks: "
    "share of chains with both hops right but the composed question wrong"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "samples",
        nargs="+",
        help="samples_<task>_*.jsonl files, or folders to search for them (lm-eval's "
        "--output_path of a run with --log_samples and the relfacts_2hop tasks)",
    )
    parser.add_argument(
        "--metric", default="acc_match", help="per-sample metric to judge answers (acc_match)"
    )
    parser.add_argument("--json", dest="json_out", help="also write the result as JSON here")


def _find_samples(inputs: list[str]) -> dict[str, Path]:
    found: dict[str, list[Path]] = defaultdict(list)
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            candidates = sorted(path.rglob("samples_relfacts_2hop*.jsonl"))
        elif path.is_file():
            candidates = [path]
        else:
            raise RelNeuronError("no such file or folder", path=path)
        for candidate in candidates:
            name = candidate.name
            for task in sorted(TASKS, key=len, reverse=True):
                if name.startswith(f"samples_{task}_"):
                    found[task].append(candidate)
                    break
    # Several runs in one folder: the newest file of each task (names end in a timestamp).
    out = {task: max(paths, key=lambda p: (p.name, str(p))) for task, paths in found.items()}
    needed = ("relfacts_2hop", "relfacts_2hop_hop1", "relfacts_2hop_hop2")
    missing = [t for t in needed if t not in out]
    if missing:
        raise RelNeuronError(
            f"no logged samples of {', '.join(missing)} in {', '.join(inputs)}",
            hint="run lm_eval --tasks relfacts-2hop --log_samples --output_path DIR, then "
            "relneuron gap DIR",
        )
    folders = {p.parent for p in out.values()}
    if len(folders) > 1:
        raise RelNeuronError(
            "the sample files come from different folders: "
            + ", ".join(f"{t}: {p}" for t, p in sorted(out.items())),
            hint="pass the files of one run",
        )
    return out


def _read_samples(path: Path, metric: str) -> dict[int, dict[str, Any]]:
    rows: dict[int, dict[str, Any]] = {}
    for number, row in iter_jsonl(path):
        doc = row.get("doc") or {}
        if "doc_id" not in row or not isinstance(doc, dict) or "chain_id" not in doc:
            raise RelNeuronError(
                "not a relfacts_2hop sample (no doc_id or doc.chain_id)", path=path, line=number
            )
        if metric not in row:
            raise RelNeuronError(
                f"sample has no metric {metric!r}",
                path=path,
                line=number,
                hint=f"metrics present: {sorted(k for k in row if k.startswith(('acc', 'bridge')))}",
            )
        rows[int(row["doc_id"])] = {
            "chain_id": doc["chain_id"],
            "pair": doc.get("pair", "?"),
            "ok": float(row[metric]) > 0.5,
            "bridge": float(row.get("bridge_recall", 0.0)) > 0.5,
        }
    if not rows:
        raise RelNeuronError("no samples in file", path=path)
    return rows


def compute_gap(files: dict[str, Path], metric: str = "acc_match") -> dict[str, Any]:
    """Per pair and overall: chains, both hops right, composed right, gap (and CoT)."""
    data = {task: _read_samples(path, metric) for task, path in files.items()}
    base = data["relfacts_2hop"]
    for task, rows in data.items():
        if set(rows) != set(base):
            raise RelNeuronError(
                f"{task} has {len(rows)} documents, relfacts_2hop has {len(base)}; the runs "
                "did not score the same chains",
                path=files[task],
                hint="use the same --limit for all four tasks (one lm_eval run)",
            )
        bad = [i for i in rows if rows[i]["chain_id"] != base[i]["chain_id"]]
        if bad:
            raise RelNeuronError(
                f"doc {bad[0]} is chain {rows[bad[0]]['chain_id']!r} here but "
                f"{base[bad[0]]['chain_id']!r} in relfacts_2hop",
                path=files[task],
            )
    groups: dict[str, list[int]] = defaultdict(list)
    for doc_id, row in sorted(base.items()):
        groups[row["pair"]].append(doc_id)
    groups = {"all": sorted(base), **dict(sorted(groups.items()))}
    cot = data.get("relfacts_2hop_cot")
    out: dict[str, Any] = {"metric": metric, "files": {t: str(p) for t, p in files.items()}}
    table = {}
    for name, ids in groups.items():
        both = [
            i
            for i in ids
            if data["relfacts_2hop_hop1"][i]["ok"] and data["relfacts_2hop_hop2"][i]["ok"]
        ]
        composed_wrong = [i for i in both if not base[i]["ok"]]
        row = {
            "chains": len(ids),
            "hop1": sum(data["relfacts_2hop_hop1"][i]["ok"] for i in ids),
            "hop2": sum(data["relfacts_2hop_hop2"][i]["ok"] for i in ids),
            "both_hops": len(both),
            "composed": sum(base[i]["ok"] for i in ids),
            "composed_given_both": len(both) - len(composed_wrong),
            "gap": (len(composed_wrong) / len(both)) if both else None,
        }
        if cot is not None:
            row["cot"] = sum(cot[i]["ok"] for i in ids)
            row["cot_bridge_recall"] = sum(cot[i]["bridge"] for i in ids)
            cot_wrong = [i for i in both if not cot[i]["ok"]]
            row["cot_gap"] = (len(cot_wrong) / len(both)) if both else None
        table[name] = row
    out["pairs"] = table
    return out


def format_gap(result: dict[str, Any]) -> str:
    has_cot = "cot" in result["pairs"]["all"]
    header = ["pair", "chains", "hop1", "hop2", "both", "composed", "gap"]
    if has_cot:
        header += ["cot", "cot_bridge", "cot_gap"]
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]

    def pct(value: float | None) -> str:
        return "n/a" if value is None else f"{100 * value:.1f}%"

    for name, row in result["pairs"].items():
        cells = [
            name,
            str(row["chains"]),
            str(row["hop1"]),
            str(row["hop2"]),
            str(row["both_hops"]),
            str(row["composed"]),
            pct(row["gap"]),
        ]
        if has_cot:
            cells += [str(row["cot"]), str(row["cot_bridge_recall"]), pct(row["cot_gap"])]
        lines.append("| " + " | ".join(cells) + " |")
    lines.append("")
    lines.append(
        f"gap = share of chains with both hops right ({result['metric']}) whose composed "
        "question is answered wrong."
    )
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    files = _find_samples(list(args.samples))
    result = compute_gap(files, metric=args.metric)
    print(format_gap(result))
    if args.json_out:
        from relneuron_eval.atomic import atomic_write

        with atomic_write(args.json_out) as handle:
            json.dump(result, handle, indent=2)
            handle.write("\n")
    return 0
