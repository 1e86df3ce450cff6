"""How a generated answer is judged against a fact's accepted answers: one definition.

The tasks' metrics (``harness.task_metrics``), discovery's "correctly answered" check
(``discovery.correct``) and the 2-token audit (``data.prefix_check``) all call these, so
``acc_match`` means the same thing everywhere. Pure Python; the tokenizer of
``prefix2`` is optional (without one, a word-level approximation, announced once).
"""

from __future__ import annotations

import logging
import re
import unicodedata
from collections.abc import Callable, Sequence
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


def match(generation: str, answers: Sequence[str]) -> bool:
    """Does the generation start with one of the answers (normalised, at a word boundary)?

    The generation may go on after the answer (``"Paris, the city of light"`` matches
    ``Paris``) but must not merely start like it (``"Parisian"`` does not). For answers in
    CJK script, where words are not separated by spaces, spaces are ignored and any
    continuation is allowed (``"中国的首都"`` matches ``中国``).
    """
    gen = normalize(generation)
    return _any_answer(
        answers,
        lambda target: gen.replace(" ", "").startswith(target),
        lambda target: gen == target or gen.startswith(target + " "),
    )


def mentions(text: str, answers: Sequence[str]) -> bool:
    """Is one of the answers stated anywhere in the text (normalised, whole words)?"""
    said = normalize(text)
    return _any_answer(
        answers,
        lambda target: target in said.replace(" ", ""),
        lambda target: f" {target} " in f" {said} ",
    )


def _any_answer(
    answers: Sequence[str], cjk: Callable[[str], bool], words: Callable[[str], bool]
) -> bool:
    """Does a test pass for one of the answers? An answer normalised to nothing never
    matches; a CJK answer's test (``cjk``) gets it without spaces, as CJK script does not
    separate words; any other answer's test (``words``) gets it normalised."""
    for answer in answers:
        target = normalize(answer)
        if not target:
            continue
        if cjk(target.replace(" ", "")) if is_cjk(answer) else words(target):
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
