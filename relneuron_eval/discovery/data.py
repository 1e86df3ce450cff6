"""What discovery may read: the ONE place discovery turns facts into prompts.

Relation-specific neurons read only the ``discovery`` split (prompts of the discovery
templates). Knowledge neurons of the two-hop bridge facts are, by that method's
design, found per fact on the facts the two-hop tasks compose; they too use only the
``discovery`` templates, never the scored eval templates, the composed question or its
answer (see docs/CONTRACTS.md).
"""

from __future__ import annotations

import dataclasses
import hashlib
import random
from pathlib import Path

from relneuron_eval.data import facts
from relneuron_eval.errors import RelNeuronError

# What discovery reads of a prompt: the one prompt type of the relation data.
DiscoveryPrompt = facts.Prompt


FACT_SOURCES = ("all", "base")


def base_facts_only(relations: dict[str, facts.Relation]) -> dict[str, facts.Relation]:
    """The relations without their ``added_facts:`` (``--facts base``).

    Neuron sets found before facts were added (the shipped ones) are reproduced from the
    facts, demos included, that existed then.
    """
    return {
        name: dataclasses.replace(rel, facts=[f for f in rel.facts if not f.added])
        for name, rel in relations.items()
    }


def _is_spec(relations: str | list[str]) -> bool:
    return isinstance(relations, str) and (
        relations.endswith((".yaml", ".yml")) or Path(relations).is_file()
    )


def resolve_relations(relations: str | list[str]) -> dict[str, facts.Relation]:
    """Shipped relation names (comma-separated, or ``all``) or a user's spec YAML."""
    if _is_spec(relations):
        return facts.load_spec(relations)
    names = [s.strip() for s in relations.split(",")] if isinstance(relations, str) else relations
    names = [n for n in names if n]
    if not names:
        raise RelNeuronError(
            "no relations given", hint=f"known relations: {', '.join(facts.RELATIONS)}"
        )
    if names in (["all"], ["*"]):
        names = list(facts.RELATIONS)
    unknown = [n for n in names if n not in facts.RELATIONS]
    if unknown:
        raise RelNeuronError(
            f"unknown relation(s) {unknown}",
            hint=f"known relations: {', '.join(facts.RELATIONS)}; "
            "or pass a spec YAML of your own relations",
        )
    return facts.load_relations(list(dict.fromkeys(names)))


def spec_record(relations: str | list[str]) -> dict[str, dict[str, str]]:
    """``{"relation_spec": {path, sha256}}`` for a user's spec YAML (header ``data``), else
    ``{}``: a set found from one's own relations says which spec file, in which version."""
    if not _is_spec(relations):
        return {}
    path = Path(str(relations)).expanduser().resolve()
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    return {"relation_spec": {"path": str(path), "sha256": digest}}


def fewshot_for(relation: facts.Relation, fewshot: int | None) -> int:
    """Demos per prompt: ``fewshot``, or with None the relation's task setting.

    The tasks show ``num_fewshot`` demos (3 unless the spec says otherwise) from the
    ``fewshot`` split; None gives discovery the same prompting.
    """
    return relation.num_fewshot if fewshot is None else fewshot


def fewshot_record(relations: dict[str, facts.Relation], fewshot: int | None) -> int | dict:
    """The demos per prompt for a header: one number, or per relation where they differ."""
    counts = {name: fewshot_for(rel, fewshot) for name, rel in relations.items()}
    values = set(counts.values())
    return values.pop() if len(values) == 1 else counts


DEMOS = ("per-relation", "per-prompt")


def relation_prompts(
    relation: facts.Relation,
    split: str,
    *,
    fewshot: int | None = 0,
    seed: int = 0,
    demos: str = "per-prompt",
) -> list[facts.Prompt]:
    """Prompts of one split with every discovery template, after few-shot demos.

    Demos (``fewshot``; None: the relation's task setting) are facts of the ``fewshot``
    split asked with the prompt's template. ``per-relation``: every prompt of the
    relation shows the first demos of one order of that split seeded by (seed, relation)
    (its own fact skipped), like the tasks' sampler; ``per-prompt``: each prompt draws
    its own, seeded by (seed, fact, template), the policy of the shipped neuron sets.
    Neither depends on the other relations in the run or on the number of processes.
    """
    if demos not in DEMOS:
        raise RelNeuronError(f"unknown demos policy {demos!r}", hint=f"use one of {DEMOS}")
    n = fewshot_for(relation, fewshot)
    if demos == "per-prompt" or n == 0:
        return relation.prompts(split, template_key="discovery", fewshot=n, seed=seed)
    base = relation.prompts(split, template_key="discovery", fewshot=0, seed=seed)
    pool = sorted(relation.facts_in("fewshot"), key=lambda f: f.fact_id)
    if n > len(pool) - (split == "fewshot"):
        raise RelNeuronError(
            f"{relation.name}: {n} few-shot demos asked for, the fewshot split has {len(pool)}"
        )
    random.Random(f"discovery-demos:{seed}:{relation.name}").shuffle(pool)
    templates = relation.templates["discovery"]
    out = []
    for p in base:
        chosen = [d for d in pool if d.fact_id != p.fact_id][:n]
        lines = [relation.demo(d, templates[p.template_index]) for d in chosen]
        out.append(dataclasses.replace(p, text="\n".join([*lines, p.text])))
    return out


def discovery_prompts(
    relations: dict[str, facts.Relation],
    *,
    fewshot: int | None = 0,
    seed: int = 0,
    max_facts: int | None = None,
    demos: str = "per-prompt",
) -> list[DiscoveryPrompt]:
    """Every discovery-split fact with every discovery template, relation by relation.

    ``fewshot`` and ``demos``: see ``relation_prompts``. ``max_facts`` keeps a seeded
    sample of at most that many facts per relation.
    """
    out = []
    for relation in relations.values():
        prompts = relation_prompts(relation, "discovery", fewshot=fewshot, seed=seed, demos=demos)
        if max_facts is not None:
            ids = list(dict.fromkeys(p.fact_id for p in prompts))
            if len(ids) > max_facts:
                keep = set(
                    random.Random(f"discovery-sample:{seed}:{relation.name}").sample(ids, max_facts)
                )
                prompts = [p for p in prompts if p.fact_id in keep]
        out.extend(prompts)
    return out


def bridge_facts(
    fact_ids: list[str] | None = None,
    *,
    fewshot: int | None = 0,
    seed: int = 0,
    max_facts: int | None = None,
    demos: str = "per-prompt",
) -> list[tuple[str, list[DiscoveryPrompt]]]:
    """The first-hop facts of the two-hop chains with their discovery-template prompts.

    Returns ``(fact_id, prompts)``, each fact once. ``fact_ids`` limits the list (unknown
    ids are an error); ``max_facts`` takes facts round-robin over the chains' relation
    pairs, so a small budget still covers every kind of chain.
    """
    from relneuron_eval.data.twohop import build_chains

    by_pair: dict[str, list[str]] = {}
    relation_of: dict[str, facts.Relation] = {}
    for chain in build_chains():
        relation_of.setdefault(chain.hop1.fact_id, chain.hop1_relation)
        members = by_pair.setdefault(chain.pair, [])
        if chain.hop1.fact_id not in members:
            members.append(chain.hop1.fact_id)
    if fact_ids is not None:
        unknown = [f for f in fact_ids if f not in relation_of]
        if unknown:
            raise RelNeuronError(
                f"not first-hop facts of the two-hop chains: {unknown[:5]}",
                hint=f"e.g. {', '.join(list(relation_of)[:3])}",
            )
        wanted = list(dict.fromkeys(fact_ids))
    else:
        wanted = _round_robin(list(by_pair.values()))
    if max_facts is not None:
        wanted = wanted[:max_facts]
    out = []
    for fact_id in wanted:
        prompts = _fact_prompts(
            relation_of[fact_id], fact_id, fewshot=fewshot, seed=seed, demos=demos
        )
        out.append((fact_id, prompts))
    return out


def _round_robin(queues: list[list[str]]) -> list[str]:
    """One item of each queue in turn, skipping items already taken."""
    out: dict[str, None] = {}
    for row in range(max((len(q) for q in queues), default=0)):
        for queue in queues:
            if row < len(queue):
                out.setdefault(queue[row])
    return list(out)


def _fact_prompts(
    relation: facts.Relation, fact_id: str, *, fewshot: int | None, seed: int, demos: str
) -> list[facts.Prompt]:
    """One fact's discovery-template prompts, whatever split it is in."""
    fact = relation.fact(fact_id)
    prompts = relation_prompts(relation, fact.split, fewshot=fewshot, seed=seed, demos=demos)
    return [p for p in prompts if p.fact_id == fact_id]


def prompts_fingerprint(prompts: list[DiscoveryPrompt]) -> str:
    """Hash of the prompt list, so a checkpoint is only resumed for the same prompts."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(f"{p.relation}\t{p.fact_id}\t{p.text}\t{p.object}\n".encode())
    return digest.hexdigest()[:16]


def answers_fingerprint(prompts: list[DiscoveryPrompt]) -> str:
    """Hash of every prompt's accepted answers (they decide the stored ``correct`` flags)."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(("\t".join(p.answers) + "\n").encode())
    return digest.hexdigest()[:16]
