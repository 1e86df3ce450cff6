"""When discovery counts a prompt as "correctly answered" (``--correct match|prefix2``).

* ``match`` (default): the greedy continuation up to the first newline (at most
  ``MAX_NEW_TOKENS``, as the tasks generate) matches an accepted answer as
  ``answers.match`` (``acc_match``) decides: normalised, whole words. A shared
  prefix cannot satisfy it: " 1875" is not " 1911".
* ``prefix2``: Liu et al.'s criterion, the greedy first 2 tokens form a prefix of an
  accepted answer. With SmolLM2's digit-by-digit numbers every year starting with 1
  passes for " 1911" (see ``relneuron_eval.data.prefix_check``); kept to reproduce sets made
  with it.

Decoding is greedy token by token; ``is_open`` says whether more tokens could still
change the verdict, so rows stop as soon as they are decided (never earlier). Pure
Python: used by relation-specific discovery and available to knowledge neurons.
"""

from __future__ import annotations

from collections.abc import Sequence

from relneuron_eval.data.answers import ARTICLES, is_cjk, match, normalize
from relneuron_eval.errors import RelNeuronError

CRITERIA = {
    "match": "greedy continuation up to the first newline (at most 16 tokens) matches an "
    "accepted answer (normalised, whole words; acc_match)",
    "prefix2": "greedy first 2 tokens form a prefix of an accepted answer",
}
DEFAULT = "match"
MAX_NEW_TOKENS = 16  # the tasks' max_gen_toks


def check_criterion(name: str) -> str:
    if name not in CRITERIA:
        raise RelNeuronError(f"unknown --correct {name!r}", hint=f"use one of {list(CRITERIA)}")
    return name


def max_new_tokens(criterion: str) -> int:
    return 2 if check_criterion(criterion) == "prefix2" else MAX_NEW_TOKENS


# --------------------------------------------------------------------- prefix2
def prefix2_correct(generated: str, targets: Sequence[str]) -> bool:
    """Liu et al.'s criterion: the greedy first tokens are a prefix of the object.

    ``generated`` is the decoded first two tokens. A generation that runs past a short
    object (" Paris," for "Paris") also counts: its beginning is the whole object.
    """
    g = generated.strip()
    if not g:
        return False
    for t in targets:
        t = t.strip()
        if t and (t.startswith(g) or g.startswith(t)):
            return True
    return False


def prefix2_open(generated: str, targets: Sequence[str]) -> bool:
    """Whether more greedy tokens could change ``prefix2_correct`` for this generation.

    A generation that already contains a whole target stays right; one that is not a
    prefix of any target stays wrong; an empty one or a proper prefix of a target is
    open.
    """
    g = generated.strip()
    if not g:
        return True
    ts = [t.strip() for t in targets if t.strip()]
    if any(g.startswith(t) for t in ts):
        return False
    return any(t.startswith(g) for t in ts)


# ----------------------------------------------------------------------- match
def first_line(generated: str) -> str:
    """What the tasks score: the generation up to its first newline."""
    return generated.split("\n", 1)[0]


def match_correct(generated: str, targets: Sequence[str]) -> bool:
    return match(first_line(generated), list(targets))


def match_open(generated: str, targets: Sequence[str]) -> bool:
    """Whether more tokens could change ``match_correct`` (False once a newline is out).

    Compared on the normalised text without its last character (the next token may
    compose with it, e.g. a kana and its voicing mark): a target it is still a prefix of
    keeps the row open; one it already holds followed by a word boundary (CJK: any
    continuation) decides it right; otherwise no continuation can match. A lone
    (beginning of an) article keeps it open: ``normalize`` drops it only once a second
    word follows.
    """
    if "\n" in generated:
        return False
    norm = normalize(generated)
    words = norm.split()
    if len(words) <= 1 and (not words or any(a.startswith(words[0]) for a in ARTICLES)):
        return True
    seen = norm[:-1]
    still_open = False
    for answer in targets:
        target = normalize(answer)
        if not target:
            continue
        if is_cjk(answer):
            seen_c, target_c = seen.replace(" ", ""), target.replace(" ", "")
            if seen_c.startswith(target_c):
                return False  # decided right
            still_open |= target_c.startswith(seen_c)
        elif seen.startswith(target + " "):
            return False  # decided right
        else:
            still_open |= target.startswith(seen)
    return still_open


# ------------------------------------------------------------------ dispatch
def is_correct(criterion: str, generated: str, targets: Sequence[str]) -> bool:
    if criterion == "prefix2":
        return prefix2_correct(generated, targets)
    return match_correct(generated, targets)


def is_open(criterion: str, generated: str, targets: Sequence[str]) -> bool:
    if criterion == "prefix2":
        return prefix2_open(generated, targets)
    return match_open(generated, targets)
