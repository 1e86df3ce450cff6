"""The shipped neuron sets: each loads, belongs to its folder's model, and has a card.

``neuron_sets/<model>/`` holds the sets discovery wrote for an embedded model and a
README (the card) that says how each was found. A set copied into the wrong folder, a
set of another shape than its neighbours, a set the card never mentions, or a card whose
heading names another file's SHA-256 would mislead a reader who picks a set by its card.
"""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

import pytest
from conftest import REPO

from relneuron_eval.core import embedded
from relneuron_eval.core.neuron_set import load

FOLDERS = sorted(p for p in (REPO / "neuron_sets").iterdir() if p.is_dir())
SETS = [s for folder in FOLDERS for s in sorted(folder.glob("*.jsonl.gz"))]
# a card heading of one set: ## `file.jsonl.gz`: ... (sha256 `0123456789ab`)
_HEADING = re.compile(r"^## `([^`]+\.jsonl\.gz)`.*?(?:sha256 `([0-9a-f]{12,64})`)?\)?$", re.M)


def test_every_model_folder_is_an_embedded_model_with_sets_and_a_card():
    assert FOLDERS and SETS
    for folder in FOLDERS:
        assert embedded.is_embedded(folder.name), folder
        assert list(folder.glob("*.jsonl.gz")), f"{folder}: no neuron set"
        assert (folder / "README.md").is_file(), f"{folder}: no card (README.md)"


@pytest.mark.parametrize("path", SETS, ids=lambda p: f"{p.parent.name}/{p.name}")
def test_set_loads_names_its_folders_model_and_is_on_the_card(path: Path):
    neuron_set = load(path)
    assert len(neuron_set) > 0 and neuron_set.groups()
    assert neuron_set.model["id"] == path.parent.name
    card = (path.parent / "README.md").read_text(encoding="utf-8")
    assert f"`{path.name}`" in card, f"{path.parent.name}/README.md never names {path.name}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_sets_of_one_model_share_its_shape(folder: Path):
    shapes = {load(p).shape for p in folder.glob("*.jsonl.gz")}
    assert len(shapes) == 1, f"{folder.name}: sets of different shapes {shapes}"


@pytest.mark.parametrize("folder", FOLDERS, ids=lambda p: p.name)
def test_sha256_in_a_card_heading_is_its_files(folder: Path):
    card = (folder / "README.md").read_text(encoding="utf-8")
    for name, digest in _HEADING.findall(card):
        assert (folder / name).is_file(), f"{folder.name}/README.md: a section for missing {name}"
        if digest:
            actual = hashlib.sha256((folder / name).read_bytes()).hexdigest()
            assert actual.startswith(digest), f"{folder.name}/{name}: card says {digest}"
