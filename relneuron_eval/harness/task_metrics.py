"""Scoring of the relfacts tasks: the paper's first-two-tokens metric and a normalised match.

lm-eval hands a metric function only the document and the generated text, but the
paper's metric ("the first 2 generated tokens form a prefix of the object") is defined on
the model's tokens. The tokenizer is the one of the model being scored: lm-eval calls
``process_results`` from ``lm_eval.evaluator.evaluate(lm, ...)``, so ``model_tokenizer``
reads ``lm.tokenizer`` from that call on the stack. Nothing is stored between calls:
two models in one process (two ``simple_evaluate`` calls, models built in any order)
are each scored with their own tokenizer, and every data-parallel process with its
model's. ``hf`` and ``relneuron-hf`` qualify, as does any backend that keeps a Hugging
Face tokenizer in ``lm.tokenizer`` (``vllm`` declares one); without one a word-level
approximation is used and a warning is logged once. The documents are left as they are (their ``doc_hash``, which
``relneuron compare`` pairs runs by, does not depend on the model).

Why not the alternatives: lm-eval 0.4.13 gives a metric no handle on the model or on
the task's metadata, so the model arguments could only reach it inside every document
(changing ``doc_hash`` per model path) and the tokenizer would be loaded a second
time by name (missing ``tokenizer=`` overrides and models passed as objects). The
stack lookup depends on lm-eval's ``evaluate`` keeping its ``lm`` argument, which the
pinned version does and ``tests/harness/test_task_metrics.py`` checks.

Pure Python apart from the optional tokenizer; no torch, no lm_eval import.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import Any

from relneuron_eval.data.answers import final_answer, match, mentions, prefix2

# -------------------------------------------------------------------- tokenizer
_EVALUATOR = ("lm_eval.evaluator", "evaluate")


def _is_hf_tokenizer(tokenizer: Any) -> bool:
    """A Hugging Face tokenizer (``encode(..., add_special_tokens=False)``), not e.g. tiktoken."""
    return any(c.__name__ == "PreTrainedTokenizerBase" for c in type(tokenizer).__mro__)


def model_tokenizer(max_depth: int = 32) -> Any:
    """The tokenizer of the model that lm-eval is scoring right now, or None.

    Found as ``lm.tokenizer`` of the ``lm_eval.evaluator.evaluate`` call that (directly
    or through ``Task.process_results``) called us; ``CachingLM`` passes the attribute
    through. None outside an evaluation or for a model without an HF tokenizer.
    """
    frame = sys._getframe(1)
    for _ in range(max_depth):
        if frame is None:
            return None
        code = frame.f_code
        if (frame.f_globals.get("__name__"), code.co_name) == _EVALUATOR:
            tokenizer = getattr(frame.f_locals.get("lm"), "tokenizer", None)
            return tokenizer if _is_hf_tokenizer(tokenizer) else None
        frame = frame.f_back
    return None


# ------------------------------------------------------- lm-eval process_results
def _generation(results: Sequence[Any]) -> str:
    out = results[0]
    if isinstance(out, (list, tuple)):  # a filter that keeps several responses
        out = out[0]
    return str(out)


def _scores(doc: dict, results: Sequence[Any], field: str, tokenizer: Any) -> dict[str, int]:
    gen = _generation(results)
    answers = list(doc[field])
    if tokenizer is None:
        tokenizer = model_tokenizer()
    return {
        "acc_prefix2": int(prefix2(gen, answers, doc.get("delimiter", " "), tokenizer)),
        "acc_match": int(match(gen, answers)),
    }


def process_generation(doc: dict, results: Sequence[Any], tokenizer: Any = None) -> dict[str, int]:
    """relfacts_* / relfacts_<lang>_* / 2hop hop tasks: paper metric and normalised match.

    lm-eval passes ``doc`` and ``results`` only; ``tokenizer`` (default: the evaluated
    model's, see ``model_tokenizer``) is for callers outside an evaluation.
    """
    return _scores(doc, results, "answers", tokenizer)


def process_hop1(doc: dict, results: Sequence[Any], tokenizer: Any = None) -> dict[str, int]:
    """relfacts_2hop_hop1: the same scores against the bridge entity."""
    return _scores(doc, results, "bridge_answers", tokenizer)


def process_cot(doc: dict, results: Sequence[Any]) -> dict[str, int]:
    """relfacts_2hop_cot: the final answer, and whether the reasoning names the bridge."""
    gen = _generation(results)
    return {
        "acc_match": int(match(final_answer(gen), list(doc["answers"]))),
        "bridge_recall": int(mentions(gen, list(doc["bridge_answers"]))),
    }
