"""``relneuron report-check``: does a shipped report still follow from its shipped runs?

A report folder holds ``results.json`` (with the exact command that made it) and, for
the full runs, ``runs/``: one file per (variant, task) with every document's outcome,
and ``runs/SHA256SUMS``. The check verifies the runs against their checksums, then runs
the same ``relneuron report`` command over a copy of them with an evaluator that refuses
to evaluate (no model is loaded: every number must come from the stored runs) and
compares the results with the shipped ``results.json``. So a number in a shipped report
that no longer follows from its runs, whether the runs or the analysis changed, fails
CI in seconds instead of a multi-hour re-run. Task fingerprints are taken from the runs
themselves, so later edits of task files do not hide the runs.

``--write`` re-renders the shipped folder from its runs after a change of the analysis
(0 new evaluations), keeping the original run's provenance in ``meta``.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import shlex
import shutil
import tempfile
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError

HELP = "check that a shipped report's numbers follow from its shipped runs (no model needed)"
MANIFEST = "SHA256SUMS"
# meta fields that describe the original run, not its numbers: kept from the shipped file
RUN_PROVENANCE = ("created", "wall_seconds", "compute_seconds", "evaluations", "package_version")


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("folder", help="a report folder with results.json (e.g. docs/report-full)")
    parser.add_argument(
        "--runs", default=None, help="the runs folder (default: FOLDER/runs; its SHA256SUMS)"
    )
    parser.add_argument(
        "--write",
        action="store_true",
        help="re-render FOLDER from the runs (after an analysis change) instead of comparing",
    )
    parser.add_argument(
        "--update-manifest", action="store_true", help="(re)write runs/SHA256SUMS first"
    )


def file_sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def write_manifest(runs: Path) -> Path:
    """``sha256  name`` per run file, sorted, as ``sha256sum -c`` reads it."""
    lines = [f"{file_sha256(p)}  {p.name}\n" for p in sorted(runs.glob("*.json"))]
    with atomic_write(runs / MANIFEST) as handle:
        handle.write("".join(lines))
    return runs / MANIFEST


def verify_manifest(runs: Path) -> list[str]:
    """Problems with the runs against their manifest: missing, changed or unlisted files."""
    manifest = runs / MANIFEST
    if not manifest.is_file():
        raise RelNeuronError(
            f"{manifest} is missing",
            hint="write it once with `relneuron report-check FOLDER --update-manifest`",
        )
    listed: dict[str, str] = {}
    for number, line in enumerate(manifest.read_text().splitlines(), 1):
        digest, _, name = line.partition("  ")
        if len(digest) != 64 or not name:
            raise RelNeuronError("not a `sha256  name` line", path=str(manifest), line=number)
        listed[name] = digest
    present = {p.name for p in runs.glob("*.json")}
    problems = [f"{name}: listed but missing" for name in sorted(set(listed) - present)]
    problems += [f"{name}: not in {MANIFEST}" for name in sorted(present - set(listed))]
    problems += [
        f"{name}: changed (sha256 differs from {MANIFEST})"
        for name in sorted(set(listed) & present)
        if file_sha256(runs / name) != listed[name]
    ]
    return problems


def _fingerprints(runs: Path) -> dict[str, str]:
    """Task -> the task fingerprint its stored runs were made with (one per task)."""
    found: dict[str, set[str]] = {}
    for path in runs.glob("*.json"):
        fields = json.loads(path.read_text(encoding="utf-8"))["key_fields"]
        found.setdefault(fields["task"], set()).add(fields["task_hash"])
    mixed = sorted(task for task, hashes in found.items() if len(hashes) > 1)
    if mixed:
        raise RelNeuronError(
            f"runs of {mixed} were made from different versions of the task",
            path=str(runs),
            hint="a report's runs must come from one version of each task",
        )
    return {task: next(iter(hashes)) for task, hashes in found.items()}


def _stored_fingerprint(fingerprints: dict[str, str], task: str, runs: Path) -> str:
    """The task's fingerprint in the runs; a task they never evaluated is one clear error."""
    if task not in fingerprints:
        raise RelNeuronError(
            f"the runs hold no evaluation of {task}, which the report's command needs",
            path=str(runs),
            hint="the report predates an analysis that evaluates it: re-run the report "
            "(its runs/ resume), or check it with the package version that wrote it",
        )
    return fingerprints[task]


def _relocated(value: Any, old: str, new: str) -> Any:
    """``value`` with every string path under ``old`` moved under ``new``."""
    if isinstance(value, dict):
        return {k: _relocated(v, old, new) for k, v in value.items()}
    if isinstance(value, list):
        return [_relocated(v, old, new) for v in value]
    if isinstance(value, str) and value.startswith(old + "/"):
        return new.rstrip("/") + value[len(old) :]
    return value


def _refuse(variant: Any, samples: dict[str, list[int]]) -> dict[str, Any]:
    raise RelNeuronError(
        f"the runs lack {variant.label} on {sorted(samples)}",
        hint="the shipped runs do not hold every evaluation the report's command needs",
    )


def replay(folder: Path, out: Path, runs: Path | None = None) -> dict[str, Any]:
    """The results of ``folder``'s command re-computed in ``out`` from the stored runs."""
    from relneuron_eval.report.command import build_setup, run_report, write_outputs
    from relneuron_eval.report.options import add_arguments as report_arguments

    shipped = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    command = (shipped.get("meta") or {}).get("command")
    words = shlex.split(command) if isinstance(command, str) else []
    if words[:2] != ["relneuron", "report"]:
        raise RelNeuronError(
            "meta.command is not the `relneuron report` command that made this report",
            path=str(folder / "results.json"),
            hint="only reports written by `relneuron report` can be checked",
        )
    parser = argparse.ArgumentParser(prog="relneuron report")
    report_arguments(parser)
    args = parser.parse_args(words[2:])
    shipped_out, args.out = args.out, str(out)
    source = runs or folder / "runs"
    shutil.copytree(source, out / "runs", dirs_exist_ok=True)
    fingerprints = _fingerprints(out / "runs")
    setup, notes = build_setup(args, check_model=False)
    results, runner = run_report(
        setup,
        _refuse,
        notes=notes,
        progress=False,
        settings=shipped["meta"].get("settings"),
        command=command,
        fingerprint=lambda task: _stored_fingerprint(fingerprints, task, source),
    )
    if runner.evaluated:
        raise RelNeuronError(f"{runner.evaluated} evaluations were run; none may be")
    for key in RUN_PROVENANCE:
        if key in shipped["meta"]:
            results["meta"][key] = shipped["meta"][key]
    # files the report writes under its --out (control sets) are named as the shipped run named them
    results = _relocated(results, str(out), shipped_out)
    write_outputs(out, results)  # again, with the original run's provenance
    return results


def differences(shipped: Any, new: Any, where: str = "") -> list[str]:
    """Paths at which two results differ (``meta``'s run provenance ignored)."""
    if isinstance(shipped, dict) and isinstance(new, dict):
        out = []
        for key in sorted(set(shipped) | set(new), key=str):
            path = f"{where}.{key}" if where else str(key)
            if where == "meta" and key in RUN_PROVENANCE:
                continue
            if key not in shipped or key not in new:
                out.append(f"{path}: only in {'shipped' if key in shipped else 'recomputed'}")
            else:
                out += differences(shipped[key], new[key], path)
        return out
    if isinstance(shipped, list) and isinstance(new, list) and len(shipped) == len(new):
        return [
            d
            for i, (a, b) in enumerate(zip(shipped, new, strict=True))
            for d in differences(a, b, f"{where}[{i}]")
        ]
    return (
        [] if shipped == new else [f"{where}: shipped {_short(shipped)}, recomputed {_short(new)}"]
    )


def _short(value: Any) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= 80 else text[:77] + "..."


def run(args: argparse.Namespace) -> int:
    folder = Path(args.folder)
    if not (folder / "results.json").is_file():
        raise RelNeuronError(f"{folder}/results.json not found", hint="name a report folder")
    runs = Path(args.runs) if args.runs else folder / "runs"
    if args.update_manifest:
        print(f"wrote {write_manifest(runs)}")
    problems = verify_manifest(runs)
    if problems:
        print(f"{len(problems)} run file(s) do not match {runs / MANIFEST}:")
        print("\n".join(f"  {p}" for p in problems[:20]))
        return 1
    with tempfile.TemporaryDirectory(prefix="relneuron-report-check-") as tmp:
        results = replay(folder, Path(tmp), runs)
        if args.write:
            for path in Path(tmp).iterdir():
                if path.is_file():
                    with atomic_write(folder / path.name, "wb", encoding=None) as handle:
                        handle.write(path.read_bytes())
            print(f"re-rendered {folder} from {runs} (0 evaluations)")
            return 0
    shipped = json.loads((folder / "results.json").read_text(encoding="utf-8"))
    diffs = differences(shipped, json.loads(json.dumps(results, default=str)))
    if diffs:
        print(f"{folder}: {len(diffs)} number(s) do not follow from the runs:")
        print("\n".join(f"  {d}" for d in diffs[:40]))
        return 1
    print(f"{folder}: every number follows from {runs} ({len(list(runs.glob('*.json')))} runs)")
    return 0
