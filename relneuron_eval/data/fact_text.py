"""Text of facts and templates: cleaning, subject keys, placeholders.

Raw facts come double-escaped and with stray whitespace, and one subject is spelled in
several ways; every reader of facts cleans and compares text with these same functions,
so a subject is the same subject everywhere (specs, splits, translations, 2-hop chains).
Pure Python.
"""

from __future__ import annotations

import hashlib
import re
import string
import unicodedata
from collections.abc import Iterable

_ESCAPE_RE = re.compile(r"\\u([0-9a-fA-F]{4})")


def clean_text(text: str) -> str:
    """Undo double escaping (a literal ``\\u00ed``), NFC-normalise, collapse whitespace."""
    text = _ESCAPE_RE.sub(lambda m: chr(int(m.group(1), 16)), text)
    text = unicodedata.normalize("NFC", text)
    return " ".join(text.split())


def subject_key(text: str) -> str:
    """Key that identifies a subject across spellings: case, accents and spacing ignored."""
    decomposed = unicodedata.normalize("NFKD", clean_text(text))
    stripped = "".join(c for c in decomposed if not unicodedata.combining(c))
    return " ".join(stripped.casefold().split())


def dedupe(items: Iterable[str]) -> tuple[str, ...]:
    """Non-empty items in first-seen order (answers: the primary object stays first)."""
    seen: dict[str, None] = {}
    for item in items:
        if item and item not in seen:
            seen[item] = None
    return tuple(seen)


def stable_hash(*parts: str) -> int:
    """A hash that is the same on every machine and run (splits and templates hang on it)."""
    return int(hashlib.sha256("\x00".join(parts).encode()).hexdigest()[:16], 16)


def template_fields(template: str) -> list[str]:
    """Placeholder names used in a ``str.format`` template (raises ValueError if malformed)."""
    return [name for _, name, _, _ in string.Formatter().parse(template) if name is not None]


def fill(template: str, subject: str) -> str:
    """The template with its subject (plain replace: other braces in it stay as written)."""
    return template.replace("{subject}", subject)
