"""``jsonl``: the one JSON-lines reader: (line, object) pairs, errors with ``FILE:LINE``."""

from __future__ import annotations

import json

import pytest

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.jsonl import JsonLines, iter_jsonl


def _error(path) -> RelNeuronError:
    with pytest.raises(RelNeuronError) as info:
        list(iter_jsonl(path))
    return info.value


def test_objects_with_their_line_numbers_and_the_line_count(tmp_path):
    path = tmp_path / "x.jsonl"
    rows = [{"a": 1}, {"b": [1.5, None]}, {"c": "x"}]
    path.write_bytes(
        (
            json.dumps(rows[0]) + "\n\n  \n" + json.dumps(rows[1]) + "\r\n" + json.dumps(rows[2])
        ).encode()
    )
    lines = JsonLines(path)
    assert list(lines) == [(1, rows[0]), (4, rows[1]), (5, rows[2])]
    assert lines.lines == 5  # blank lines count, as the facts files' numbering needs


def test_line_separators_inside_strings_do_not_split_a_line(tmp_path):
    """JSON Lines end at \\n only: a generation with U+2028 or a form feed is one line."""
    path = tmp_path / "x.jsonl"
    rows = [{"gen": "Paris\u2028Lyon"}, {"gen": "a\x0cb\x85c"}, {"gen": "last"}]
    text = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows)
    assert len(text.splitlines()) > 3  # what str.splitlines would have made of it
    path.write_text(text, encoding="utf-8")
    assert list(iter_jsonl(path)) == [(1, rows[0]), (2, rows[1]), (3, rows[2])]


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"a": ', "not valid JSON (Expecting value)"),
        ('{"score": NaN}', "not valid JSON (NaN is not a JSON number)"),
        ('{"score": -Infinity}', "not valid JSON (-Infinity is not a JSON number)"),
        ("[1, 2]", "expected a JSON object, got a JSON list"),
        ("17", "expected a JSON object, got a JSON int"),
    ],
)
def test_bad_line_names_file_and_line(tmp_path, line, message):
    path = tmp_path / "x.jsonl"
    path.write_text('{"ok": 1}\n\n' + line + '\n{"ok": 2}\n', encoding="utf-8")
    err = _error(path)
    assert (err.path, err.line) == (str(path), 3)
    assert str(err).startswith(f"{path}:3: {message}")


def test_bad_bytes_are_reported_on_their_line(tmp_path):
    path = tmp_path / "x.jsonl"
    path.write_bytes(b'{"a": 1}\n{"b": 2}\n{"c": "\xff"}\n')
    err = _error(path)
    assert err.line == 3 and "not UTF-8 text" in str(err)


def test_missing_file_has_the_callers_message(tmp_path):
    err = _error(tmp_path / "none.jsonl")
    assert err.path == str(tmp_path / "none.jsonl") and err.message == "file not found"
    with pytest.raises(RelNeuronError, match="relation 'toy': facts file not found"):
        list(JsonLines(tmp_path / "none.jsonl", missing="relation 'toy': facts file not found"))
