"""Which facts the model answers, checked before knowledge neurons attribute them.

Integrated gradients of P(gold) on a fact the model gets wrong explain a probability
the model does not act on; Dai et al. attribute every fact regardless. The check here
(``--correct``, as relation-specific discovery uses it: ``discovery.correct``) keeps a
fact only when the greedy answer to EVERY one of its prompts is correct: with the
usual p = 0.7 of 3 paraphrases a refined neuron must be coarse in all of them, so one
wrongly answered prompt would shape the fact's neurons. Greedy answers only, one batch
per fact, at a small fraction of one fact's attribution cost. Under several processes
rank 0 alone checks and shares its verdict through the work folder
(``shared_answer_check``): another GPU or an argmax tie could make a rank answer
differently, and ranks that shard different fact lists would leave facts out of the merge.

The result is recorded in the neuron set's header (``params.correct``,
``params.correct_rule``, ``data.facts_dropped``); a header without ``correct`` was made
before the check existed: its facts were not checked.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
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


SHARED_NAME = "answer-check.json"  # rank 0's verdict, in the work folder


def shared_answer_check(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    criterion: str | None,
    *,
    folder: str | Path,
    rank: int,
    world_size: int,
    barrier: Callable[[], None] | None,
    progress: bool = True,
) -> tuple[list[KnowledgeFact], AnswerCheck]:
    """``check_answers`` decided by rank 0 for every rank of a sharded run.

    Rank 0 checks and writes its verdict (or its error) to ``folder`` before a barrier;
    the other ranks read it after, so all shard the same facts. One process (or no
    check): ``check_answers`` itself, nothing written.
    """
    if world_size <= 1 or criterion is None:
        return check_answers(model, tokenizer, facts, criterion, progress=progress)
    if barrier is None:
        raise RelNeuronError("several processes need a barrier to share the answer check")
    path = Path(folder) / SHARED_NAME
    if rank == 0:
        record: dict[str, Any] = {"criterion": criterion, "facts": [f.fact_id for f in facts]}
        try:
            kept, check = check_answers(model, tokenizer, facts, criterion, progress=progress)
            record.update(kept=list(check.kept), dropped=list(check.dropped))
        except Exception as exc:  # the others must not wait for a verdict that never comes
            record["error"] = {"message": str(exc), "hint": getattr(exc, "hint", None)}
            _write(path, record)
            barrier()
            raise
        _write(path, record)
        barrier()
        return kept, check
    barrier()
    return _read_shared(path, facts, criterion)


def _write(path: Path, record: dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as handle:
        json.dump(record, handle, ensure_ascii=False)


def _read_shared(
    path: Path, facts: Sequence[KnowledgeFact], criterion: str
) -> tuple[list[KnowledgeFact], AnswerCheck]:
    """Rank 0's verdict; a missing file or another fact list is a clear error."""
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise RelNeuronError(
            f"cannot read rank 0's answer check ({exc})",
            path=path,
            hint="every process needs the same work folder (a shared file system)",
        ) from None
    error = record.get("error")
    if error:
        raise RelNeuronError(f"rank 0: {error['message']}", hint=error.get("hint"))
    if record.get("facts") != [f.fact_id for f in facts] or record.get("criterion") != criterion:
        raise RelNeuronError(
            "rank 0 checked other facts or another --correct than this process",
            path=path,
            hint="every process must get the same arguments and fact files",
        )
    by_id = {f.fact_id: f for f in facts}
    kept = [by_id[i] for i in record["kept"]]
    return kept, AnswerCheck(criterion, tuple(record["kept"]), tuple(record["dropped"]))


def answer_check_of(method: dict[str, Any]) -> str:
    """The criterion a knowledge-neuron set's facts were checked with, or "not checked"
    (``--correct off``, or a header from before the check: the shipped set's)."""
    value = method.get("params", {}).get("correct")
    return NOT_CHECKED if value in (None, OFF) else str(value)
