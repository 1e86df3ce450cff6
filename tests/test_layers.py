"""The packages form layers and imports only go down (README, "Architecture").

Every ``import`` of a ``relneuron_eval`` module counts, also the lazy ones inside
functions: a lazy import upwards is still a cycle in the design. A command package
(report, relcheck, compare, export) never imports another one; shared code moves down
into ``evaluation`` instead.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "relneuron_eval"

# rank of each top-level package or module; an import must not go to a higher rank, and
# between different packages of the same rank not at all
RANKS: dict[str, int] = {
    "__init__": 0,
    "errors": 0,
    **dict.fromkeys(("atomic", "files", "resources", "yaml_lines", "jsonl", "_data"), 1),
    "core": 2,
    "data": 3,
    "harness": 4,
    "evaluation": 5,
    "discovery": 5,
    **dict.fromkeys(("compare", "report", "relcheck", "export", "leaderboard"), 6),
    "benchmarks": 7,
    "cli": 8,
    "_hook": 8,
}


def _unit(module: str) -> str:
    """The layer unit of a dotted module path below relneuron_eval ('' = the package)."""
    return module.split(".")[0] if module else "__init__"


def _imports(path: Path) -> list[tuple[int, str]]:
    """(line, module below relneuron_eval) of every relneuron_eval import in a file."""
    out = []
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            if node.module == "relneuron_eval":
                # `from relneuron_eval import __version__` reads the package itself
                out += [
                    (node.lineno, "" if a.name.startswith("__") else a.name) for a in node.names
                ]
            elif node.module.startswith("relneuron_eval."):
                out.append((node.lineno, node.module.removeprefix("relneuron_eval.")))
        elif isinstance(node, ast.Import):
            for alias in node.names:
                if alias.name.startswith("relneuron_eval."):
                    out.append((node.lineno, alias.name.removeprefix("relneuron_eval.")))
    return out


def _violations() -> list[str]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE).with_suffix("")
        source = _unit(".".join(rel.parts))
        for line, module in _imports(path):
            target = _unit(module)
            if target == source or target == "__init__":
                continue
            if target not in RANKS or source not in RANKS:
                found.append(f"{rel}.py:{line}: {module} is in no layer (add it to RANKS)")
            elif RANKS[target] >= RANKS[source]:
                found.append(
                    f"{rel}.py:{line}: {source} (layer {RANKS[source]}) imports "
                    f"{module} (layer {RANKS[target]})"
                )
    return found


def test_every_package_is_in_a_layer():
    units = {
        _unit(".".join(p.relative_to(PACKAGE).with_suffix("").parts)) for p in PACKAGE.rglob("*.py")
    }
    assert sorted(units - set(RANKS)) == []


def test_imports_only_go_down():
    assert _violations() == []


@pytest.mark.parametrize(
    ("source", "module", "allowed"),
    [
        ("core", "data.facts", False),
        ("report", "evaluation.statistics", True),
        ("report", "compare.read", False),
        ("data", "errors", True),
    ],
)
def test_the_rule_itself(source, module, allowed):
    """The check can fail: a sample of allowed and forbidden edges."""
    target = _unit(module)
    assert (RANKS[target] < RANKS[source]) is allowed
