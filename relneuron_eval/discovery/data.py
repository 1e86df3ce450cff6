"""Discovery prompts: the ONE place discovery reads facts.

Discovery must only ever see the ``discovery`` split. When ``relneuron_eval.facts`` is
available it is the source of relations, splits and templates; the fallback below
(raw LRE files, a seeded 40% split and one template per relation) exists only so the
pipeline can run before that module lands, and is marked as such in every header.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass, field
from pathlib import Path

from relneuron_eval.errors import RelNeuronError

RAW_DIR = Path("/work/shared/data/lre_facts")

# Used only by the fallback; relneuron_eval.facts owns the real templates.
_FALLBACK_TEMPLATES = {
    "city_in_country": "{} is a city in the country of",
    "company_ceo": "The CEO of {} is",
    "company_hq": "The headquarters of {} are in the city of",
    "country_capital_city": "The capital city of {} is",
    "country_currency": "The currency of {} is the",
    "country_language": "The official language of {} is",
    "country_largest_city": "The largest city in {} is",
    "food_from_country": "{} is a dish from the country of",
    "landmark_in_country": "{} is located in the country of",
    "landmark_on_continent": "{} is on the continent of",
    "person_father": "The father of {} is",
    "person_mother": "The mother of {} is",
    "person_native_language": "The native language of {} is",
    "person_occupation": "By profession, {} is a",
    "person_plays_instrument": "{} plays the instrument called the",
    "person_plays_position_in_sport": "In their sport, {} plays the position of",
    "person_plays_pro_sport": "{} plays the sport of",
    "product_by_company": "{} is a product made by the company",
    "star_constellation": "{} is a star in the constellation of",
}


@dataclass(frozen=True)
class DiscoveryPrompt:
    """One filled discovery template of one fact."""

    relation: str
    fact_id: str
    text: str
    object: str
    aliases: tuple[str, ...] = field(default_factory=tuple)
    template_index: int = 0


def _facts_module():
    try:
        from relneuron_eval import facts
    except ImportError:
        return None
    return facts


def known_relations() -> list[str]:
    facts = _facts_module()
    if facts is not None:
        return sorted(facts.RELATIONS)
    return sorted(_FALLBACK_TEMPLATES)


def source_name() -> str:
    """Where prompts come from, for the neuron-set header."""
    return "relneuron_eval.facts" if _facts_module() is not None else "fallback:raw-lre-40pct"


def _fallback_prompts(name: str, seed: int = 0) -> list[DiscoveryPrompt]:
    path = RAW_DIR / f"{name}.jsonl"
    rows = [json.loads(s) for s in path.read_text().splitlines() if s.strip()]
    rng = random.Random(f"fallback-split:{name}:{seed}")
    ids = list(range(len(rows)))
    rng.shuffle(ids)
    chosen = sorted(ids[: max(1, int(0.4 * len(rows)))])
    template = _FALLBACK_TEMPLATES[name]
    return [
        DiscoveryPrompt(name, f"{name}/{i}", template.format(rows[i]["subject"]), rows[i]["object"])
        for i in chosen
    ]


def _from_relation(relation) -> list[DiscoveryPrompt]:
    aliases = {f.fact_id: tuple(getattr(f, "aliases", ()) or ()) for f in relation.facts}
    out = []
    for p in relation.prompts("discovery", template_key="discovery", fewshot=0):
        out.append(
            DiscoveryPrompt(
                relation.name,
                p.fact_id,
                p.text,
                p.object,
                aliases.get(p.fact_id, ()),
                int(getattr(p, "template_index", 0)),
            )
        )
    return out


def load_discovery_prompts(relations: list[str] | str) -> dict[str, list[DiscoveryPrompt]]:
    """Prompts of the ``discovery`` split for named relations or a spec YAML path.

    Raises a ``RelNeuronError`` listing the known names for an unknown relation.
    """
    facts = _facts_module()
    if isinstance(relations, str) and (
        relations.endswith((".yaml", ".yml")) or Path(relations).is_file()
    ):
        if facts is None or not hasattr(facts, "load_spec"):
            raise RelNeuronError(
                "relation spec files need relneuron_eval.facts, which is not installed",
                path=relations,
            )
        loaded = facts.load_spec(relations)
        rels = list(loaded.values()) if isinstance(loaded, dict) else list(loaded)
        return {r.name: _from_relation(r) for r in rels}
    names = [s.strip() for s in relations.split(",")] if isinstance(relations, str) else relations
    names = [n for n in names if n]
    if names in (["all"], ["*"]):
        names = known_relations()
    known = known_relations()
    unknown = [n for n in names if n not in known]
    if unknown:
        raise RelNeuronError(
            f"unknown relation(s) {unknown}",
            hint=f"known relations: {', '.join(known)}; or pass a spec YAML of your own relations",
        )
    if not names:
        raise RelNeuronError("no relations given", hint=f"known relations: {', '.join(known)}")
    if facts is None:
        return {n: _fallback_prompts(n) for n in names}
    return {n: _from_relation(facts.load_relation(n)) for n in names}


def prompts_fingerprint(prompts: list[DiscoveryPrompt]) -> str:
    """Hash of the prompt list, so a checkpoint is only resumed for the same prompts."""
    digest = hashlib.sha256()
    for p in prompts:
        digest.update(f"{p.relation}\t{p.fact_id}\t{p.text}\t{p.object}\n".encode())
    return digest.hexdigest()[:16]
