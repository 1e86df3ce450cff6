"""Knowledge neurons (Dai et al. 2022) by integrated gradients over ``mlp.act`` units.

Method, as implemented here (every choice is recorded in the neuron-set header):

* Facts: only those the model answers correctly under every prompt (greedy answer,
  ``correct="match"``: the line matches an accepted answer; ``"prefix2"``: Liu et al.'s
  2-token prefix; None: every fact, as Dai et al.), see ``kn_answers``.
* Target: P(y*|x), the probability of the gold answer's FIRST token after the prompt
  (``answer_tokens="first"``; the answer is tokenized as ``prompt + " " + answer`` and
  the tokens after the prompt's own tokens are the answer's). ``answer_tokens="all"``
  uses the teacher-forced product of all answer-token probabilities instead.
* Attribution of unit i of layer l: scale the layer's ``mlp.act`` vector (the input of
  the down projection) at the last prompt position, w = a*w_hat, all other layers and
  positions untouched; attr_i = w_hat_i * (1/m) * sum_k dP(a_k*w_hat)/dw_i with a zero
  baseline and m steps. ``riemann="right"`` uses a_k = k/m, k = 1..m (the paper's
  equation); ``"left"`` uses (k-1)/m (Dai et al.'s released code), ``"midpoint"``
  (k-0.5)/m (the most accurate for the same m).
* Coarse neurons of a prompt: attr >= threshold * max attr of that prompt over all
  layers (threshold 0.2); a prompt whose max is <= 0 has none.
* Refined neurons of a fact: coarse in at least p * n of its n prompts (and in at least
  ``min_shared`` prompts). ``p="auto"`` is Dai et al.'s released procedure: per relation,
  start at p = 0.7 and move p by 0.05 (down when the relation's facts have < 2 refined
  neurons on average, up when > 5), at most 6 evaluations; the last p evaluated is used.
* Relation-level neurons (optional): refined neurons of at least 10% of a relation's
  facts; group = relation name, score = that fraction.
* Fact neurons have group = fact id and score = mean over the fact's prompts of
  attr / (prompt's max attr).

Speed. Only the last position is scaled, so (causal attention) every earlier position
is identical for all a, at every layer; and layers < l are identical too. Per prompt we
run ONE clean forward that keeps the key/value cache of positions 0..T-2 and, per layer,
the residual stream after attention and w_hat at the last position. The m steps of a
layer are then one batch that runs a single token through layers l+1..L-1 only
(``method="suffix"``, Llama family). ``"cached"`` (any architecture whose cache exposes
per-layer keys/values) runs that token through the whole model with the prefix cache;
``"batched"`` runs the full prompt m times in one batch; ``"plain"`` is the reference
per-layer, per-step loop. ``"auto"`` picks the fastest that applies and, per prompt,
checks that it reproduces the clean P(y*) at a = 1 before trusting it.

Runs are sharded by fact (``rank::world_size``) and checkpointed per fact (one atomic
``.npz`` per fact, never pickle); every fact is computed on its own with a batch
composition fixed by the settings, so the merged result does not depend on the number
of shards. (Bit-identity also needs the same BLAS thread count in every process: on CPU,
1 vs 2 threads changes attributions by ~1e-6 relative, which can flip a unit sitting
exactly on a threshold.)

Where each part lives: ``kn_config`` (facts, settings, validation, encoding),
``kn_answers`` (the answer check before attribution),
``ig_kernels`` (one prompt's attributions; the suffix path reads the architecture table's
``suffix`` entry), ``kn_checkpoint`` (per-fact results, sharding, resume) and
``kn_selection`` (coarse/refined neurons, the p search, merge). This module is the public
entry point and re-exports what callers use.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from relneuron_eval.core.architectures import model_shape
from relneuron_eval.core.neuron_set import NeuronSet
from relneuron_eval.discovery.correct import DEFAULT as DEFAULT_CORRECT
from relneuron_eval.discovery.correct import check_criterion
from relneuron_eval.discovery.ig_kernels import (
    PromptAttribution,
    frozen,
    gold_probability,
    prompt_attributions,
    suffix_supported,
)
from relneuron_eval.discovery.kn_answers import (
    AnswerCheck,
    answer_check_of,
    check_answers,
    shared_answer_check,
)
from relneuron_eval.discovery.kn_checkpoint import (
    FactResult,
    ShardReport,
    compute_shard,
    fact_attributions,
    load_results,
    shard,
)
from relneuron_eval.discovery.kn_config import (
    ANSWER_TOKENS,
    CHECKPOINT_FORMAT,
    CHECKPOINT_VERSION,
    DEFAULT_IG,
    DEFAULT_SELECT,
    LOGP_TOLERANCE,
    METHOD_NAME,
    METHODS,
    P_SCOPES,
    RIEMANN,
    SITE,
    IGConfig,
    KnowledgeFact,
    SelectConfig,
    encode,
    validate_facts,
    validate_ig,
    validate_select,
)
from relneuron_eval.discovery.kn_selection import (
    MergeSummary,
    auto_p,
    coarse_mask,
    fact_scores,
    merge,
    refine,
    refine_all,
    relation_units,
)
from relneuron_eval.errors import RelNeuronError

__all__ = [
    "ANSWER_TOKENS",
    "CHECKPOINT_FORMAT",
    "CHECKPOINT_VERSION",
    "LOGP_TOLERANCE",
    "METHODS",
    "METHOD_NAME",
    "P_SCOPES",
    "RIEMANN",
    "SITE",
    "AnswerCheck",
    "FactResult",
    "IGConfig",
    "KnowledgeFact",
    "MergeSummary",
    "PromptAttribution",
    "SelectConfig",
    "ShardReport",
    "answer_check_of",
    "auto_p",
    "check_answers",
    "check_facts",
    "coarse_mask",
    "compute_shard",
    "encode",
    "fact_attributions",
    "fact_scores",
    "find_knowledge_neurons",
    "frozen",
    "gold_probability",
    "load_results",
    "merge",
    "prompt_attributions",
    "refine",
    "refine_all",
    "relation_units",
    "shard",
    "suffix_supported",
    "validate_facts",
    "validate_ig",
    "validate_select",
]


def check_facts(tokenizer: Any, facts: Sequence[KnowledgeFact], ig: IGConfig) -> None:
    """Every per-fact check made before any compute, so a bad fact fails in seconds, not
    after hours of attribution: today, that each prompt and its answer tokenize."""
    for fact in facts:
        for prompt in fact.prompts:
            encode(tokenizer, prompt, fact.answer, ig)


def find_knowledge_neurons(
    model: Any,
    tokenizer: Any,
    facts: Sequence[KnowledgeFact],
    checkpoint: str | Path,
    out: str | Path | None = None,
    ig: IGConfig = DEFAULT_IG,
    select: SelectConfig = DEFAULT_SELECT,
    *,
    correct: str | None = DEFAULT_CORRECT,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable[[], None] | None = None,
    model_id: str | None = None,
    data: Any = None,
    progress: bool = True,
    stop_after: int | None = None,
) -> tuple[NeuronSet, MergeSummary] | None:
    """Check the answers, attribute this rank's shard, wait for the others, merge and
    save on rank 0.

    All arguments are checked before anything is written. ``correct`` (a
    ``discovery.correct`` criterion; None: no check) keeps only the facts the model
    answers under every prompt. Under several processes pass ``barrier`` (e.g.
    ``accelerate.PartialState().wait_for_everyone``); ranks other than 0 return None.
    ``stop_after`` simulates an interruption after that many facts (tests).
    """
    validate_facts(facts)
    shape = model_shape(model)
    validate_ig(ig, shape.num_layers)
    validate_select(select, shape.num_layers * shape.intermediate_size, ig.store_fraction)
    shard(facts, rank, world_size)
    if correct is not None:
        check_criterion(correct)
    if world_size > 1 and barrier is None:
        raise RelNeuronError("several processes need a barrier to merge")
    if out is not None and Path(out).is_dir():
        raise RelNeuronError("output path is a folder", path=out)
    check_facts(tokenizer, facts, ig)
    kept, answer_check = shared_answer_check(
        model,
        tokenizer,
        facts,
        correct,
        folder=checkpoint,
        rank=rank,
        world_size=world_size,
        barrier=barrier,
        progress=progress and rank == 0,
    )
    if rank == 0:
        print(answer_check.text(), file=sys.stderr, flush=True)
    compute_shard(
        model,
        tokenizer,
        kept,
        checkpoint,
        ig,
        rank=rank,
        world_size=world_size,
        model_id=model_id,
        progress=progress,
        stop_after=stop_after,
    )
    if world_size > 1:
        barrier()
    if rank != 0:
        return None
    neuron_set, summary = merge(kept, checkpoint, select, data=data, answer_check=answer_check)
    if out is not None:
        neuron_set.save(out)
    return neuron_set, summary
