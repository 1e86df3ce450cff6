"""YAML that remembers line numbers: the one loader for hand-written input files.

Relation specs, the multilingual table and check files are written by people, so a
mistake in them must be reported as ``FILE:LINE: what is wrong`` (one
``RelNeuronError``), not as a traceback or a bare key path. This module reads such a file
into ``LineDict``/``LineList`` (a dict and a list that know the line of themselves and of
each entry), rejects duplicate and non-scalar keys, and offers typed readers that raise
``LocatedError`` with the offending line. Pure Python: only PyYAML.
"""

from __future__ import annotations

import difflib
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import yaml

from relneuron_eval.errors import RelNeuronError

KEY = "__key__"  # last element of a key path: the line of the key itself, not its value


class LineDict(dict):
    """A mapping that remembers its own line and the line of each key and value (1-based)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.line = 0
        self.lines: dict[Any, int] = {}  # key -> line of the key
        self.value_lines: dict[Any, int] = {}  # key -> line where the value starts


class LineList(list):
    """A sequence that remembers its own line and the line of each item (1-based)."""

    def __init__(self, *args: Any) -> None:
        super().__init__(*args)
        self.line = 0
        self.lines: list[int] = []


class LocatedError(Exception):
    """A problem at a known line of the file being read; ``at_file`` adds the path."""

    def __init__(self, message: str, line: int | None, hint: str | None = None) -> None:
        super().__init__(message)
        self.message, self.line, self.hint = message, line, hint


class _Loader(yaml.SafeLoader):
    """SafeLoader that builds LineDict/LineList and rejects duplicate keys."""


def _construct_mapping(loader: _Loader, node: yaml.MappingNode) -> LineDict:
    loader.flatten_mapping(node)
    out = LineDict()
    out.line = node.start_mark.line + 1
    for key_node, value_node in node.value:
        key = loader.construct_object(key_node, deep=True)
        line = key_node.start_mark.line + 1
        if not isinstance(key, (str, int, float, bool)) or key is None:
            raise LocatedError(f"unsupported key {key!r}", line)
        if key in out:
            raise LocatedError(f"duplicate key {key!r} (first on line {out.lines[key]})", line)
        out[key] = loader.construct_object(value_node, deep=True)
        out.lines[key] = line
        out.value_lines[key] = value_node.start_mark.line + 1
    return out


def _construct_sequence(loader: _Loader, node: yaml.SequenceNode) -> LineList:
    out = LineList(loader.construct_object(child, deep=True) for child in node.value)
    out.line = node.start_mark.line + 1
    out.lines = [child.start_mark.line + 1 for child in node.value]
    return out


_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _construct_mapping)
_Loader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_SEQUENCE_TAG, _construct_sequence)


@contextmanager
def at_file(path: Path) -> Iterator[None]:
    """Turn a ``LocatedError`` raised inside into a ``RelNeuronError`` naming ``path``."""
    try:
        yield
    except LocatedError as exc:
        raise RelNeuronError(exc.message, path=path, line=exc.line, hint=exc.hint) from None


def load_yaml(path: Path, what: str) -> Any:
    """Read a YAML file into LineDict/LineList; any problem is a located RelNeuronError.

    ``what`` names the file in read errors ("check file", "spec").
    """
    return _load_with_root_line(path, what)[0]


def _load_with_root_line(path: Path, what: str) -> tuple[Any, int | None]:
    """The data and the line of its top node (a bare scalar has no ``line`` of its own)."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RelNeuronError(f"{what} not found", path=path) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise RelNeuronError(f"cannot read {what}: {exc}", path=path) from None
    try:
        loader = _Loader(text)  # a SafeLoader subclass; its reader rejects control characters
        try:
            with at_file(path):
                node = loader.get_single_node()
                if node is None:
                    return None, None
                return loader.construct_document(node), node.start_mark.line + 1
        finally:
            loader.dispose()
    except RecursionError:  # PyYAML composes and constructs nested nodes recursively
        raise RelNeuronError(
            f"{what} is nested too deeply to read (lists or mappings inside each other "
            "hundreds of levels deep)",
            path=path,
            hint="write it as a flat list of entries, as in the documented examples",
        ) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        problem = getattr(exc, "problem", None) or str(exc).splitlines()[0]
        raise RelNeuronError(
            f"invalid YAML: {problem}", path=path, line=None if mark is None else mark.line + 1
        ) from None


class YamlDoc:
    """A loaded YAML file whose errors are addressed by key path, e.g. ``("relations", 3)``.

    Validators that walk nested data name where a problem is by the path they took; the
    error gets the line of the deepest node on that path that exists in the file.
    """

    def __init__(self, path: Path, what: str) -> None:
        self.path = path
        data, self._root_line = _load_with_root_line(path, what)
        self.data = {} if data is None else data

    def line(self, *key: Any) -> int | None:
        """Line of the value at ``key`` (of the key itself if the path ends in ``KEY``)."""
        node, line = self.data, self._root_line
        for i, k in enumerate(key):
            if isinstance(node, LineDict) and _has_key(node, k):
                if key[i + 1 : i + 2] == (KEY,):
                    return node.lines[k]
                line, node = node.value_lines[k], node[k]
            elif isinstance(node, LineList) and isinstance(k, int) and 0 <= k < len(node):
                line, node = node.lines[k], node[k]
            else:
                break
        return line

    def error(self, message: str, *key: Any, hint: str | None = None) -> RelNeuronError:
        return RelNeuronError(message, path=self.path, line=self.line(*key), hint=hint)


def _has_key(mapping: LineDict, key: Any) -> bool:
    try:
        return key in mapping
    except TypeError:  # an unhashable path element names no key
        return False


# ---------------------------------------------------------------- typed readers
def line_of(container: Any, key: Any, default: int | None = None) -> int | None:
    """Line of ``container[key]`` (the key's line in a mapping), else of the container."""
    if isinstance(container, LineDict):
        return container.lines.get(key, container.line)
    if isinstance(container, LineList) and isinstance(key, int) and key < len(container.lines):
        return container.lines[key]
    return getattr(container, "line", default)


def type_name(value: Any) -> str:
    """How a value reads in an error message ("a mapping", "int 3", "nothing (null)")."""
    if value is None:
        return "nothing (null)"
    return {"LineDict": "a mapping", "LineList": "a list"}.get(
        type(value).__name__, f"{type(value).__name__} {value!r}"
    )


def reject_unknown_keys(mapping: LineDict, allowed: tuple[str, ...], what: str) -> None:
    """The first key not in ``allowed`` is an error, with a did-you-mean hint."""
    for key in mapping:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known keys: {', '.join(allowed)}"
            raise LocatedError(f"unknown key {key!r} in {what}", line_of(mapping, key), hint)


def as_mapping(value: Any, line: int | None, what: str) -> LineDict:
    if not isinstance(value, LineDict):
        raise LocatedError(f"{what} must be a mapping, got {type_name(value)}", line)
    return value


def as_string(value: Any, line: int | None, what: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise LocatedError(f"{what} must be a non-empty string, got {type_name(value)}", line)
    return value.strip()


def as_strings(value: Any, line: int | None, what: str) -> list[str]:
    """A string or a non-empty list of strings."""
    if isinstance(value, str):
        return [as_string(value, line, what)]
    if isinstance(value, list) and value:
        return [as_string(v, line_of(value, i, line), what) for i, v in enumerate(value)]
    raise LocatedError(f"{what} must be a name or a non-empty list of names", line)


def as_number(value: Any, line: int | None, what: str) -> float:
    """A finite int or float (booleans are not numbers here)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise LocatedError(f"{what} must be a number, got {type_name(value)}", line)
    try:
        number = float(value)
    except OverflowError:  # a 400-digit integer
        number = math.inf
    if not math.isfinite(number):
        shown = repr(value) if len(repr(value)) <= 40 else f"a {len(str(value))}-digit number"
        raise LocatedError(f"{what} must be a finite number, got {shown}", line)
    return number


def as_int(value: Any, line: int | None, what: str, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise LocatedError(f"{what} must be an integer >= {minimum}, got {type_name(value)}", line)
    return value


def as_bool(value: Any, line: int | None, what: str) -> bool:
    if not isinstance(value, bool):
        raise LocatedError(f"{what} must be true or false, got {type_name(value)}", line)
    return value
