"""How far the paper's 2-token criterion (``acc_prefix2``) can tell a relation's objects apart.

``acc_prefix2`` accepts a generation whose first two tokens are a prefix of the object.
When objects share their first tokens it accepts wrong answers: SmolLM2 splits numbers
into single digits, so a year " 1911" starts with the tokens " " and "1" and every year
starting with 1 scores; "University of Oxford" and "University of Cambridge" share
" University", " of". A fact is *ambiguous* under the criterion when

* **shared**: another object (or alias) of the relation, generated as such, is accepted
  by ``acc_prefix2`` for this fact but not by ``acc_match``; or
* **uninformative**: the first two tokens of one of its accepted answers cover less than
  the answer and contain no letter (whitespace, digits, punctuation only), so an
  answer the relation does not even list can score.

``share`` is the ambiguous share of the relation's facts (all splits: the tasks score
the same kinds of objects in every split). ``relneuron taskgen`` warns and ``relneuron
report`` flags relations whose share exceeds ``AMBIGUOUS_LIMIT``; ``acc_match`` is not
affected. Pure Python apart from the tokenizer (any Hugging Face tokenizer).
"""

from __future__ import annotations

import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from relneuron_eval.data.answers import match
from relneuron_eval.data.relation import Relation
from relneuron_eval.errors import RelNeuronError

# Chosen before measuring the shipped relations: above one fact in five, a relation's
# acc_prefix2 mostly measures the shared prefix rather than the fact.
AMBIGUOUS_LIMIT = 0.20
K = 2  # tokens compared by acc_prefix2


@dataclass(frozen=True)
class PrefixCheck:
    """One relation's counts; ``examples`` are objects of ambiguous facts (at most 3)."""

    relation: str
    facts: int
    shared: int
    uninformative: int
    ambiguous: int
    examples: tuple[str, ...] = ()

    @property
    def share(self) -> float:
        return self.ambiguous / self.facts if self.facts else 0.0

    @property
    def flagged(self) -> bool:
        return self.share > AMBIGUOUS_LIMIT

    def as_dict(self) -> dict[str, Any]:
        return {
            "facts": self.facts,
            "ambiguous": self.ambiguous,
            "shared": self.shared,
            "uninformative": self.uninformative,
            "share": round(self.share, 4),
            "flagged": self.flagged,
            "examples": list(self.examples),
        }

    def warning(self) -> str:
        """One line for stderr: what is ambiguous and what to read instead."""
        examples = ", ".join(repr(e) for e in self.examples)
        return (
            f"warning: relation {self.relation}: acc_prefix2 cannot tell {self.ambiguous} of "
            f"{self.facts} facts ({100 * self.share:.0f}% > {100 * AMBIGUOUS_LIMIT:.0f}%) from "
            f"wrong answers (first {K} tokens shared with another object: {self.shared}; "
            f"digits/punctuation only: {self.uninformative}; e.g. {examples}); "
            "read acc_match for this relation"
        )


def _ids(tokenizer: Any, text: str) -> tuple[int, ...]:
    return tuple(tokenizer.encode(text, add_special_tokens=False))


def _uninformative(tokenizer: Any, full: tuple[int, ...]) -> bool:
    """The first K tokens cover less than the answer and hold no letter."""
    if len(full) <= K:
        return False
    return not any(c.isalpha() for c in tokenizer.decode(list(full[:K])))


def check_relation(tokenizer: Any, relation: Relation) -> PrefixCheck:
    """Count the relation's facts that ``acc_prefix2`` cannot tell from wrong answers.

    Competitors are every accepted answer of every fact plus a closed set's objects,
    tokenised as ``answers.prefix2`` tokenises a generation (delimiter + text).
    """
    delim = relation.target_delimiter
    competitors = {a for f in relation.facts for a in f.answers} | set(relation.objects)
    by_prefix: dict[tuple[int, ...], list[str]] = {}
    for text in sorted(competitors):
        ids = _ids(tokenizer, delim + text.lstrip())
        for n in range(1, K + 1):
            if len(ids) >= n:
                by_prefix.setdefault(ids[:n], []).append(text)
    shared = uninformative = ambiguous = 0
    examples: list[str] = []
    for fact in relation.facts:
        fulls = [_ids(tokenizer, delim + a) for a in fact.answers]
        is_shared = any(
            not match(other, list(fact.answers))
            for full in fulls
            if full
            for other in by_prefix.get(full[:K], ())
        )
        is_blank = any(_uninformative(tokenizer, full) for full in fulls)
        shared += is_shared
        uninformative += is_blank
        if is_shared or is_blank:
            ambiguous += 1
            if len(examples) < 3 and fact.object not in examples:
                examples.append(fact.object)
    return PrefixCheck(
        relation.name, len(relation.facts), shared, uninformative, ambiguous, tuple(examples)
    )


def check_relations(tokenizer: Any, relations: Iterable[Relation]) -> list[PrefixCheck]:
    return [check_relation(tokenizer, rel) for rel in relations]


# ------------------------------------------------------------------ tokenizer
def load_tokenizer(name: str) -> Any:
    """A Hugging Face tokenizer by path/id; an embedded model's name reads its tokenizer.

    The embedded one comes from its de-quantised cache when that exists, else straight
    from the GGUF file (no model conversion). Raises ``RelNeuronError`` when it cannot
    be loaded (the embedded model not installed, an unknown path).
    """
    from transformers import AutoTokenizer

    from relneuron_eval.core.embedded import _is_complete, cached_dir, gguf_path
    from relneuron_eval.core.models import find

    try:
        model = find(name)
        if model is not None:
            source = gguf_path(model)
            cached = cached_dir(source, model)
            if _is_complete(cached):
                return AutoTokenizer.from_pretrained(str(cached))
            return AutoTokenizer.from_pretrained(str(source.parent), gguf_file=source.name)
        return AutoTokenizer.from_pretrained(name)
    except (OSError, ValueError) as exc:
        raise RelNeuronError(
            f"cannot load the tokenizer {name!r}: {' '.join(str(exc).split())[:300]}",
            hint="pass --tokenizer PATH (a model folder or hub id available offline), "
            "or --tokenizer none to skip the acc_prefix2 check",
        ) from None


def flagged(checks: Sequence[PrefixCheck]) -> list[PrefixCheck]:
    return [c for c in checks if c.flagged]


def optional_tokenizer(name: str | None) -> Any:
    """``--tokenizer``: None for ``none``; the embedded model's when it is installed (else a
    note on stderr and None); any other name must load (``RelNeuronError`` if not)."""
    from relneuron_eval.core.embedded import gguf_path
    from relneuron_eval.core.models import find

    if not name or name.strip().lower() == "none":
        return None
    model = find(name)
    if model is not None:
        try:
            gguf_path(model)
        except RelNeuronError:
            print(
                f"note: acc_prefix2 check skipped: the embedded model {model.name} is not "
                "installed "
                "(pass --tokenizer PATH to check with another tokenizer)",
                file=sys.stderr,
            )
            return None
    return load_tokenizer(name)


def warn_flagged(tokenizer: Any, relations: Iterable[Relation]) -> list[PrefixCheck]:
    """One ``warning:`` line on stderr per relation above ``AMBIGUOUS_LIMIT``."""
    found = flagged(check_relations(tokenizer, relations))
    for check in found:
        print(check.warning(), file=sys.stderr)
    return found


def report_record(tokenizer_name: str, relation_names: Sequence[str]) -> dict[str, Any]:
    """``results.json``'s ``prefix2_check``: each relation's counts under the model's
    tokenizer; a tokenizer that cannot be loaded, or a relation that is not shipped, is
    named instead (the report goes on: this check only qualifies its numbers)."""
    from relneuron_eval.data.facts import load_relation

    record: dict[str, Any] = {
        "tokenizer": tokenizer_name,
        "limit": AMBIGUOUS_LIMIT,
        "relations": {},
        "skipped": [],
    }
    try:
        tokenizer = load_tokenizer(tokenizer_name)
    except RelNeuronError as exc:
        record["skipped"] = [f"tokenizer: {exc.message}"]
        return record
    for name in relation_names:
        try:
            relation = load_relation(name)
        except RelNeuronError as exc:
            record["skipped"].append(f"{name}: {exc.message}")
            continue
        record["relations"][name] = check_relation(tokenizer, relation).as_dict()
    return record
