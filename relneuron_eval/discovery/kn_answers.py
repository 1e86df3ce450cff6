"""Which facts the model answers, checked before knowledge neurons attribute them.

Integrated gradients of P(gold) on a fact the model gets wrong explain a probability
the model does not act on; Dai et al. attribute every fact regardless. The check here
(``--correct``, as relation-specific discovery uses it: ``discovery.correct``) keeps a
fact only when the greedy answer to EVERY one of its prompts is correct: with the
usual p = 0.7 of 3 paraphrases a refined neuron must be coarse in all of them, so one
wrongly answered prompt would shape the fact's neurons. Greedy answers only, one batch
per fact (its verdict depends on nothing else, so every process of a sharded run gets
the same list), at a small fraction of one fact's attribution cost.

The result is recorded in the neuron set's header (``params.correct``,
``params.correct_rule``, ``data.facts_dropped``); a header without ``correct`` was made
before the check existed: its facts were not checked.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from relneuron_eval.discovery.correct import CRITERIA, check_criterion
from relneuron_eval.discovery.kn_config import KnowledgeFact
from relneuron_eval.errors import RelNeuronError

OFF = "off"
NOT_CHECKED = "not checked"
FACT_RULE = "a fact is attributed only when every one of its prompts is answered so"
NONE_ANSWERED_HINT = (
    "--correct off attributes every fact (as Dai et al. and the shipped set did); "
    "few-shot demos (--fewshot) or more facts (--max-facts) give the check more to keep"
)


@dataclass(frozen=True)
class AnswerCheck:
    """What the check kept and dropped (``criterion`` None: nothing was checked)."""

    criterion: str | None
    kept: tuple[str, ...]
    dropped: tuple[str, ...] = ()

    def params(self) -> dict[str, Any]:
        """The header's ``params`` entries."""
        if self.criterion is None:
            return {"correct": OFF, "correct_rule": f"{NOT_CHECKED}: every fact attributed"}
        return {
            "correct": self.criterion,
            "correct_rule": f"{CRITERIA[self.criterion]}; {FACT_RULE}",
        }

    def data(self) -> dict[str, Any]:
        """The header's ``data`` entries (the dropped ids, so the set says what it lacks)."""
        if self.criterion is None:
            return {}
        return {
            "facts_checked": len(self.kept) + len(self.dropped),
            "facts_dropped": list(self.dropped),
        }

    def text(self) -> str:
        if self.criterion is None:
            return f"answer check off (--correct {OFF}): all {len(self.kept)} facts attributed"
        total = len(self.kept) + len(self.dropped)
        line = (
            f"answer check (--correct {self.criterion}): {len(self.kept)} of {total} facts "
            f"answered correctly under every prompt are attributed, {len(self.dropped)} dropped"
        )
        if self.dropped:
            shown = ", ".join(self.dropped[:10]) + (" ..." if len(self.dropped) > 10 else "")
            line += f" ({shown})"
        return line


def check_answers(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    criterion: str | None,
    *,
    progress: bool = True,
) -> tuple[list[KnowledgeFact], AnswerCheck]:
    """The facts to attribute and the record of the check; none kept is an error.

    ``criterion`` None skips the check (every fact is kept).
    """
    if criterion is None:
        return list(facts), AnswerCheck(None, tuple(f.fact_id for f in facts))
    from tqdm.auto import tqdm

    from relneuron_eval.discovery.activations import answers_correct

    check_criterion(criterion)
    kept, dropped = [], []
    for fact in tqdm(facts, desc="checking answers", unit="fact", disable=not progress):
        prompts = list(fact.prompts)
        ok = answers_correct(model, tokenizer, prompts, [fact.answers] * len(prompts), criterion)
        (kept if all(ok) else dropped).append(fact)
    check = AnswerCheck(
        criterion, tuple(f.fact_id for f in kept), tuple(f.fact_id for f in dropped)
    )
    if not kept:
        raise RelNeuronError(
            f"none of the {len(facts)} facts is answered correctly (--correct {criterion}) "
            "under every prompt: nothing to attribute",
            hint=NONE_ANSWERED_HINT,
        )
    return kept, check


def answer_check_of(method: dict[str, Any]) -> str:
    """The criterion a knowledge-neuron set's facts were checked with, or "not checked"
    (``--correct off``, or a header from before the check: the shipped set's)."""
    value = method.get("params", {}).get("correct")
    return NOT_CHECKED if value in (None, OFF) else str(value)
