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
pinned version does and ``tests/test_task_metrics.py`` checks.

Pure Python apart from the optional tokenizer; no torch, no lm_eval import.
"""

from __future__ import annotations

import logging
import re
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any

log = logging.getLogger(__name__)

_warned_no_tokenizer = False  # the word-level fallback is announced once per process

# Leading articles dropped by `normalize` (English, German, Spanish, French). Applied to
# both sides of a comparison, so dropping one too many never creates a false match.
ARTICLES = frozenset(
    "the a an der die das den dem des ein eine el la los las un una le les l".split()
)
_CJK_RE = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff]")
_FINAL_RE = re.compile(r"the\s+answer\s+is|answer\s*:|答案是|答えは", re.IGNORECASE)


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


def _warn_once() -> None:
    global _warned_no_tokenizer
    if not _warned_no_tokenizer:
        _warned_no_tokenizer = True
        log.warning(
            "relfacts: the model has no Hugging Face tokenizer, so "
            "acc_prefix2 compares the first two words instead of the first two tokens"
        )


# ---------------------------------------------------------------- normalisation
def is_cjk(text: str) -> bool:
    return bool(_CJK_RE.search(text))


def normalize(text: str) -> str:
    """Lower case, no accents, punctuation as spaces, one leading article dropped.

    ``"  The Washington, D.C.!"`` -> ``"washington d c"``; ``"Bogotá"`` -> ``"bogota"``.
    CJK characters are kept (NFKC maps full-width forms to their usual shape).
    """
    chars = []
    for c in unicodedata.normalize("NFKC", text):
        if _CJK_RE.match(c):  # kana keep their voicing marks (ド is not ト)
            chars.append(c)
            continue
        for d in unicodedata.normalize("NFKD", c):
            if not unicodedata.combining(d):
                chars.append(" " if unicodedata.category(d)[0] in "PSZC" else d)
    words = "".join(chars).casefold().split()
    if len(words) > 1 and words[0] in ARTICLES:
        words = words[1:]
    return " ".join(words)


def _compact(text: str) -> str:
    return normalize(text).replace(" ", "")


def match(generation: str, answers: Sequence[str]) -> bool:
    """Does the generation start with one of the answers (normalised, at a word boundary)?

    The generation may go on after the answer (``"Paris, the city of light"`` matches
    ``Paris``) but must not merely start like it (``"Parisian"`` does not). For answers in
    CJK script, where words are not separated by spaces, spaces are ignored and any
    continuation is allowed (``"中国的首都"`` matches ``中国``).
    """
    gen = normalize(generation)
    for answer in answers:
        target = normalize(answer)
        if not target:
            continue
        if is_cjk(answer):
            if _compact(generation).startswith(target.replace(" ", "")):
                return True
        elif gen == target or gen.startswith(target + " "):
            return True
    return False


def mentions(text: str, answers: Sequence[str]) -> bool:
    """Is one of the answers stated anywhere in the text (normalised, whole words)?"""
    padded = f" {normalize(text)} "
    compact = _compact(text)
    for answer in answers:
        target = normalize(answer)
        if not target:
            continue
        if is_cjk(answer):
            if target.replace(" ", "") in compact:
                return True
        elif f" {target} " in padded:
            return True
    return False


def final_answer(generation: str) -> str:
    """The part of a chain-of-thought after its last "the answer is" (else all of it)."""
    markers = list(_FINAL_RE.finditer(generation))
    if not markers:
        return generation
    # No sentence splitting: `match` only looks at the start ("St. Louis" stays whole).
    return generation[markers[-1].end() :].lstrip(" :")


# ------------------------------------------------------------- paper's metric
def _words(text: str) -> list[str]:
    return [w.strip(".,;:!?\"'()") for w in text.split()]


def prefix2(
    generation: str,
    answers: Sequence[str],
    delimiter: str = " ",
    tokenizer: Any = None,
    k: int = 2,
) -> bool:
    """The paper's metric: the first ``k`` generated tokens are a prefix of the object.

    Both the generation and ``delimiter + answer`` are tokenised with the model's
    tokenizer; the prediction is right when the first ``min(k, len(answer tokens))``
    tokens agree (an object of one token needs one). Leading whitespace of the
    generation is replaced by the task's delimiter, so a model that writes two spaces
    or none is judged on the words, not the spacing. Without a tokenizer the first
    ``k`` words are compared instead (case-sensitive, trailing punctuation ignored).
    """
    text = delimiter + generation.lstrip()
    if tokenizer is None:
        _warn_once()
        gen_words = _words(generation)
        for answer in answers:
            ans_words = _words(answer)
            n = min(k, len(ans_words))
            if n and gen_words[:n] == ans_words[:n]:
                return True
        return False
    gen_ids = list(tokenizer.encode(text, add_special_tokens=False))
    for answer in answers:
        ans_ids = list(tokenizer.encode(delimiter + answer, add_special_tokens=False))
        n = min(k, len(ans_ids))
        if n and gen_ids[:n] == ans_ids[:n]:
            return True
    return False


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
