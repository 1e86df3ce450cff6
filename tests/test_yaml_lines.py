"""The one line-tracking YAML loader behind relation specs, multilingual tables and checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from relneuron_eval.data import facts
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.relcheck.parse import parse_check
from relneuron_eval.yaml_lines import KEY, LineDict, LineList, YamlDoc, load_yaml

DOC = """\
# a comment
top:
  name: x
  block:
    - a
    - b
  flow: {k: v}
list:
  - {deep: 1}
"""


def _write(tmp_path: Path, text: str | bytes, name: str = "f.yaml") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


def test_lines_of_keys_values_and_items(tmp_path):
    data = load_yaml(_write(tmp_path, DOC), "spec")
    assert isinstance(data, LineDict) and isinstance(data["top"]["block"], LineList)
    assert data.line == 2 and data.lines["top"] == 2 and data.value_lines["top"] == 3
    assert data["top"]["block"].lines == [5, 6]
    assert data["list"][0].line == 9


def test_key_paths_name_the_deepest_existing_node(tmp_path):
    doc = YamlDoc(_write(tmp_path, DOC), "spec")
    assert doc.line() == 2
    assert doc.line("top", "block") == 5  # a block value starts on its first item
    assert doc.line("top", "block", KEY) == 4  # ... its key is a line above
    assert doc.line("top", "block", 1) == 6
    assert doc.line("top", "block", 7) == 5  # no such item: its list
    assert doc.line("top", "missing", "deeper") == 3  # no such key: its mapping
    assert doc.line("list", 0, "deep") == 9
    err = doc.error("bad", "top", "flow", "k", hint="fix it")
    assert str(err) == f"{tmp_path / 'f.yaml'}:7: bad (fix it)"


@pytest.mark.parametrize(
    ("text", "line", "message"),
    [
        ("a: 1\nb: 2\na: 3\n", 3, "duplicate key 'a' (first on line 1)"),
        ("a:\n  [x, y]: 1\n", 2, "unsupported key ['x', 'y']"),
        ("a: [1, 2\n", 2, "invalid YAML: expected ',' or ']'"),
        (b"a: \x00\n", None, "invalid YAML: unacceptable character #x0000"),
        (b"\xff\xfe a: 1", None, "cannot read spec: 'utf-8' codec can't decode"),
    ],
)
def test_bad_yaml_is_one_located_error(tmp_path, text, line, message):
    path = _write(tmp_path, text)
    with pytest.raises(RelNeuronError) as info:
        YamlDoc(path, "spec")
    assert info.value.path == str(path) and info.value.line == line
    assert message in str(info.value)


def test_scalar_document_keeps_its_line(tmp_path):
    doc = YamlDoc(_write(tmp_path, "# c\n\nhello\n"), "spec")
    assert doc.data == "hello" and doc.line() == 3 and doc.line("x") == 3
    assert YamlDoc(_write(tmp_path, "", "empty.yaml"), "spec").line() is None


def test_merge_keys_are_read(tmp_path):
    data = load_yaml(_write(tmp_path, "base: &b {x: 1}\nuse:\n  <<: *b\n  y: 2\n"), "spec")
    assert data["use"] == {"x": 1, "y": 2}


# ------------------------------------------------- the same loader in each file kind
def _toy_spec(tmp_path: Path, extra: str) -> Path:
    rows = [{"subject": f"Item {i}", "object": f"stuff {i % 4}"} for i in range(20)]
    (tmp_path / "toy.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    text = (
        "relations:\n  - name: toy\n    facts: toy.jsonl\n    templates:\n"
        '      discovery: ["{subject} is made of"]\n      eval: ["{subject} consists of"]\n' + extra
    )
    return _write(tmp_path, text, "spec.yaml")


def test_duplicate_key_in_a_relation_spec_is_an_error(tmp_path):
    """Before: the second closed_set silently won; now the spec's file:line is named."""
    spec = _toy_spec(tmp_path, "    closed_set: true\n    closed_set: false\n")
    with pytest.raises(RelNeuronError) as info:
        facts.load_spec(spec)
    assert info.value.line == 8 and "duplicate key 'closed_set' (first on line 7)" in str(
        info.value
    )


def test_non_utf8_relation_spec_is_an_error(tmp_path):
    """Before: a UnicodeDecodeError traceback."""
    spec = _toy_spec(tmp_path, "")
    spec.write_bytes(spec.read_bytes() + b"    description: caf\xe9\n")
    with pytest.raises(RelNeuronError, match="cannot read spec: 'utf-8' codec"):
        facts.load_spec(spec)


def test_check_files_and_specs_word_yaml_errors_alike(tmp_path):
    spec = _toy_spec(tmp_path, "    aliases: {stuff 1: [x\n")
    check = _write(tmp_path, "relcheck: 1\ntasks: [t1\n", "c.relcheck.yaml")
    messages = []
    for load, path in ((facts.load_spec, spec), (parse_check, check)):
        with pytest.raises(RelNeuronError) as info:
            load(path)
        messages.append(info.value.message.split(":")[0])
    assert messages == ["invalid YAML", "invalid YAML"]


def _multilingual(tmp_path: Path, relations: str) -> Path:
    text = (
        "columns: [de, es, fr, zh, ja]\nlanguages:\n  de: {name: German}\nnames:\n"
        "  Item 0: [Ding, ~, ~, ~, ~]\nrelations:\n" + relations
    )
    return _write(tmp_path, text, "multilingual.yaml")


def test_multilingual_section_of_the_wrong_type_is_located(tmp_path):
    """Before: AttributeError ('str' object has no attribute 'items')."""
    spec = _toy_spec(tmp_path, "")
    path = _multilingual(
        tmp_path, '  de:\n    toy:\n      templates: ["{subject} ist"]\n      answers: nope\n'
    )
    with pytest.raises(RelNeuronError) as info:
        facts.load_multilingual_file(path, spec)
    assert info.value.line == 10 and "relations.de.toy.answers must be a mapping" in str(info.value)


def test_multilingual_language_without_relations_is_empty(tmp_path):
    """Before: AttributeError on ``de:`` with nothing under it."""
    spec = _toy_spec(tmp_path, "")
    loaded = facts.load_multilingual_file(_multilingual(tmp_path, "  de:\n"), spec)
    assert loaded["relations"] == {"de": {}}
