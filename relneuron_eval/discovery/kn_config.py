"""Knowledge-neuron inputs and settings: facts, what is computed (``IGConfig``), how
neurons are picked (``SelectConfig``), their validation and the prompt/answer encoding.

Everything here is cheap and model-free, so a run can reject bad input before any
compute; the method itself is described in ``knowledge_neurons``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from relneuron_eval.errors import RelNeuronError

METHOD_NAME = "knowledge-neurons"
SITE = "mlp.act"
METHODS = ("auto", "suffix", "cached", "batched", "plain")
RIEMANN = ("right", "left", "midpoint")
ANSWER_TOKENS = ("first", "all")
P_SCOPES = ("relation", "fact", "all")
CHECKPOINT_FORMAT = "relneuron-kn-checkpoint"
CHECKPOINT_VERSION = 1
LOGP_TOLERANCE = 1e-3  # |log P| difference allowed between a fast path and the clean pass


@dataclass(frozen=True)
class KnowledgeFact:
    """One fact: its paraphrase prompts (no trailing space) and its gold answer.

    ``answers`` are the answers a greedy generation may give to count as correct (the
    answer check before attribution; aliases included); they do not change attributions,
    so they are not part of the fingerprint.
    """

    fact_id: str
    prompts: tuple[str, ...]
    answer: str
    relation: str = ""  # default: the part of fact_id before the last "/"
    answers: tuple[str, ...] = ()  # default: (answer,)

    def __post_init__(self) -> None:
        object.__setattr__(self, "prompts", tuple(self.prompts))
        object.__setattr__(self, "answers", tuple(self.answers) or (self.answer,))
        if not self.relation:
            object.__setattr__(self, "relation", self.fact_id.rpartition("/")[0] or "facts")

    def fingerprint(self) -> str:
        text = json.dumps([self.fact_id, self.relation, list(self.prompts), self.answer])
        return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class IGConfig:
    """What is computed per prompt (changing any of it invalidates a checkpoint)."""

    steps: int = 20
    riemann: str = "right"
    answer_tokens: str = "first"
    answer_prefix: str = " "
    layers: tuple[int, ...] | None = None  # None: all layers
    method: str = "auto"
    step_batch: int | None = None  # rows per forward pass; None: all steps at once
    store_fraction: float | None = 0.1  # keep units >= this * max in the checkpoint

    def alphas(self) -> torch.Tensor:
        k = torch.arange(1, self.steps + 1, dtype=torch.float64)
        shift = {"right": 0.0, "left": 1.0, "midpoint": 0.5}[self.riemann]
        return ((k - shift) / self.steps).to(torch.float32)

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["layers"] = None if self.layers is None else list(self.layers)
        return out


@dataclass(frozen=True)
class SelectConfig:
    """How neurons are picked from the attributions (cheap; applied at merge time)."""

    threshold: float = 0.2
    p: float | str = "auto"
    p_scope: str = "relation"  # what "auto" averages over
    p_start: float = 0.7
    p_step: float = 0.05
    p_evaluations: int = 6
    target: tuple[float, float] = (2.0, 5.0)
    min_shared: int = 1
    relation_fraction: float | None = 0.1
    top_k: int | None = None  # at most this many neurons per fact (best scores)
    # refinement against shared units (kn_controls.shared_units), before top_k:
    drop_shared: int | None = None  # drop units refined in >= this many facts
    drop_objects: int | None = None  # drop units of facts with >= this many distinct answers

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["target"] = list(self.target)
        return out


DEFAULT_IG = IGConfig()  # frozen: safe as a shared argument default
DEFAULT_SELECT = SelectConfig()


def _is_int(x: Any) -> bool:
    return isinstance(x, int) and not isinstance(x, bool)


def _is_num(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def validate_facts(facts: Sequence[KnowledgeFact]) -> None:
    """Reject empty input, duplicate ids, facts without prompts or answer."""
    if not facts:
        raise RelNeuronError("no facts given", hint="check --relations and the split")
    seen: set[str] = set()
    for fact in facts:
        if not isinstance(fact, KnowledgeFact):
            raise RelNeuronError(f"expected KnowledgeFact, got {type(fact).__name__}")
        if not fact.fact_id:
            raise RelNeuronError("a fact has an empty fact_id")
        if fact.fact_id in seen:
            raise RelNeuronError(f"duplicate fact id {fact.fact_id!r}")
        seen.add(fact.fact_id)
        if not fact.prompts or any(not isinstance(p, str) or not p.strip() for p in fact.prompts):
            raise RelNeuronError(f"fact {fact.fact_id!r} has no prompts or an empty prompt")
        if not isinstance(fact.answer, str) or not fact.answer.strip():
            raise RelNeuronError(f"fact {fact.fact_id!r} has an empty answer")
        if any(not isinstance(a, str) or not a.strip() for a in fact.answers):
            raise RelNeuronError(f"fact {fact.fact_id!r} has an empty accepted answer")


def validate_ig(config: IGConfig, num_layers: int | None = None) -> None:
    if not _is_int(config.steps) or config.steps < 1:
        raise RelNeuronError(f"steps must be a positive integer, got {config.steps!r}")
    if config.riemann not in RIEMANN:
        raise RelNeuronError(f"unknown riemann rule {config.riemann!r}", hint=f"use {RIEMANN}")
    if config.answer_tokens not in ANSWER_TOKENS:
        raise RelNeuronError(
            f"unknown answer_tokens {config.answer_tokens!r}", hint=f"use {ANSWER_TOKENS}"
        )
    if config.method not in METHODS:
        raise RelNeuronError(f"unknown method {config.method!r}", hint=f"use {METHODS}")
    if config.step_batch is not None and (not _is_int(config.step_batch) or config.step_batch < 1):
        raise RelNeuronError(f"step_batch must be a positive integer, got {config.step_batch!r}")
    sf = config.store_fraction
    if sf is not None and (not _is_num(sf) or not 0.0 <= sf < 1.0):
        raise RelNeuronError(f"store_fraction must be in [0, 1) or None, got {sf!r}")
    if config.layers is not None:
        bad = [x for x in config.layers if not _is_int(x)]
        if bad or not config.layers or len(set(config.layers)) != len(config.layers):
            raise RelNeuronError(f"layers must be distinct integers, got {config.layers!r}")
        outside = [x for x in config.layers if num_layers is not None and not 0 <= x < num_layers]
        if outside:  # named, not the whole list: "0-9000" would print 9000 numbers
            shown = ", ".join(map(str, outside[:5])) + (" ..." if len(outside) > 5 else "")
            raise RelNeuronError(
                f"layers {shown} out of range [0, {num_layers - 1}] ({len(outside)} outside)"
            )


def validate_select(
    config: SelectConfig, total_units: int | None = None, store_fraction: float | None = None
) -> None:
    if not _is_num(config.threshold) or not 0.0 < config.threshold <= 1.0:
        raise RelNeuronError(f"threshold must be in (0, 1], got {config.threshold!r}")
    if config.p != "auto" and (not _is_num(config.p) or not 0.0 < config.p <= 1.0):
        raise RelNeuronError(f"p must be in (0, 1] or 'auto', got {config.p!r}")
    if config.p_scope not in P_SCOPES:
        raise RelNeuronError(f"unknown p_scope {config.p_scope!r}", hint=f"use {P_SCOPES}")
    if not (_is_num(config.p_start) and 0.0 < config.p_start <= 1.0):
        raise RelNeuronError(f"p_start must be in (0, 1], got {config.p_start!r}")
    if not (_is_num(config.p_step) and 0.0 < config.p_step < 1.0):
        raise RelNeuronError(f"p_step must be in (0, 1), got {config.p_step!r}")
    if not _is_int(config.p_evaluations) or config.p_evaluations < 1:
        raise RelNeuronError(f"p_evaluations must be >= 1, got {config.p_evaluations!r}")
    lo, hi = config.target
    if not (_is_num(lo) and _is_num(hi) and 0 <= lo <= hi):
        raise RelNeuronError(
            f"target must be (low, high) with 0 <= low <= high, got {config.target!r}"
        )
    if not _is_int(config.min_shared) or config.min_shared < 1:
        raise RelNeuronError(f"min_shared must be a positive integer, got {config.min_shared!r}")
    rf = config.relation_fraction
    if rf is not None and (not _is_num(rf) or not 0.0 < rf <= 1.0):
        raise RelNeuronError(f"relation_fraction must be in (0, 1] or None, got {rf!r}")
    for name in ("drop_shared", "drop_objects"):
        value = getattr(config, name)
        if value is not None and (not _is_int(value) or value < 2):
            raise RelNeuronError(f"{name} must be an integer >= 2 or None, got {value!r}")
    if config.top_k is not None:
        if not _is_int(config.top_k) or config.top_k < 1:
            raise RelNeuronError(f"top_k must be a positive integer, got {config.top_k!r}")
        if total_units is not None and config.top_k > total_units:
            raise RelNeuronError(
                f"top_k {config.top_k} is larger than the number of {SITE} units ({total_units})",
                hint="use a smaller --top-k",
            )
    if store_fraction is not None and config.threshold < store_fraction:
        raise RelNeuronError(
            f"threshold {config.threshold} is below the checkpoint's store_fraction "
            f"{store_fraction}: the attributions under it were not kept",
            hint="recompute with a smaller store_fraction or raise the threshold",
        )


# ====================================================================== tokenization
def encode(
    tokenizer: Any, prompt: str, answer: str, config: IGConfig
) -> tuple[list[int], list[int]]:
    """Prompt ids and the gold answer's ids as they follow the prompt.

    The answer's tokens are those of ``prompt + prefix + answer`` after the prompt's own
    tokens; if the joint tokenization does not start with the prompt's (a merge across
    the boundary), the answer is tokenized alone.
    """
    prompt_ids = list(tokenizer(prompt)["input_ids"])
    full = list(tokenizer(prompt + config.answer_prefix + answer)["input_ids"])
    if len(full) > len(prompt_ids) and full[: len(prompt_ids)] == prompt_ids:
        answer_ids = full[len(prompt_ids) :]
    else:
        answer_ids = list(
            tokenizer(config.answer_prefix + answer, add_special_tokens=False)["input_ids"]
        )
    if not prompt_ids or not answer_ids:
        raise RelNeuronError(f"prompt {prompt!r} or answer {answer!r} tokenizes to nothing")
    if config.answer_tokens == "first":
        answer_ids = answer_ids[:1]
    return prompt_ids, answer_ids
