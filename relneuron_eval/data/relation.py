"""The cleaned data every consumer sees: ``Relation``, its ``Fact``s and filled ``Prompt``s.

Built by ``relation_spec`` (English) and ``multilingual`` (translations); read by the
tasks, neuron discovery, 2-hop chains and the report. A fact's ``split`` is fixed when it
is built, and ``Relation.prompts`` draws few-shot demos from the ``fewshot`` split only,
so no prompt shows the answer of a discovery or test fact. Pure Python.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from relneuron_eval.data.fact_text import fill, stable_hash
from relneuron_eval.errors import RelNeuronError

SPLITS = ("discovery", "fewshot", "test")


@dataclass(frozen=True)
class Fact:
    """One subject of a relation and every accepted answer (same id in every language)."""

    relation: str
    fact_id: str
    subject: str
    object: str
    answers: tuple[str, ...]
    split: str
    line: int = field(default=0, compare=False)  # 1-based line of the first occurrence
    # from an `added_facts:` file (see fact_sources): lets discovery reproduce neuron sets
    # that were found before the facts were added
    added: bool = field(default=False, compare=False)

    @property
    def aliases(self) -> tuple[str, ...]:
        """Accepted answers other than the primary object."""
        return tuple(a for a in self.answers if a != self.object)


@dataclass(frozen=True)
class Prompt:
    """A filled template for one fact (after its demos), as neuron discovery reads it."""

    relation: str
    fact_id: str
    text: str
    object: str
    answers: tuple[str, ...]
    template_index: int

    @property
    def query(self) -> str:
        """The prompt without its few-shot demos: the last line."""
        return self.text.rsplit("\n", 1)[-1]


@dataclass
class Relation:
    """One relation: cleaned facts with splits, templates and task options."""

    name: str
    facts: list[Fact]
    templates: dict[str, list[str]]
    closed_set: bool = False
    objects: list[str] = field(default_factory=list)
    compose: str | None = None
    compose_prompt: str | None = None
    question: str | None = None
    num_fewshot: int = 3
    target_delimiter: str = " "
    time_sensitive: bool = False
    language: str = "en"
    source: str = ""

    def __post_init__(self) -> None:
        self._by_id = {f.fact_id: f for f in self.facts}

    def fact(self, fact_id: str) -> Fact:
        try:
            return self._by_id[fact_id]
        except KeyError:
            raise RelNeuronError(f"{self.name}: no fact {fact_id!r}") from None

    def facts_in(self, split: str) -> list[Fact]:
        if split not in SPLITS:
            raise RelNeuronError(f"unknown split {split!r}", hint=f"splits: {', '.join(SPLITS)}")
        return [f for f in self.facts if f.split == split]

    def eval_template_index(self, fact: Fact) -> int:
        """The one eval template a fact is asked with in the tasks (fixed by its id)."""
        return stable_hash("template", fact.fact_id) % len(self.templates["eval"])

    def demo(self, fact: Fact, template: str) -> str:
        return fill(template, fact.subject) + self.target_delimiter + fact.object

    def prompts(
        self,
        split: str,
        *,
        template_key: str = "discovery",
        fewshot: int = 0,
        all_templates: bool = True,
        seed: int = 0,
    ) -> list[Prompt]:
        """Filled templates for the facts of ``split``.

        ``all_templates=True`` gives one prompt per (fact, template); otherwise each fact
        gets the one template picked by ``eval_template_index``. Few-shot demos (same
        template, newline-separated) come from the ``fewshot`` split only, so no prompt
        ever shows the answer of a discovery or test fact.
        """
        templates = self.templates.get(template_key) or []
        if not templates:
            raise RelNeuronError(
                f"{self.name}: no {template_key!r} templates",
                hint=f"template sets: {', '.join(k for k, v in self.templates.items() if v)}",
            )
        demos_pool = self.facts_in("fewshot")
        if fewshot > len(demos_pool):
            raise RelNeuronError(
                f"{self.name}: {fewshot} few-shot demos asked for, the fewshot split has "
                f"{len(demos_pool)}"
            )
        out = []
        for fact in self.facts_in(split):
            if all_templates:
                indices = range(len(templates))
            else:
                indices = [stable_hash("template", fact.fact_id) % len(templates)]
            for index in indices:
                template = templates[index]
                text = fill(template, fact.subject)
                if fewshot:
                    rng = random.Random(f"{seed}:{fact.fact_id}:{template_key}:{index}")
                    demos = rng.sample([d for d in demos_pool if d is not fact], fewshot)
                    text = "\n".join([*(self.demo(d, template) for d in demos), text])
                out.append(Prompt(self.name, fact.fact_id, text, fact.object, fact.answers, index))
        return out
