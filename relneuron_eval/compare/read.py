"""Reading for ``relneuron compare``: lm-eval result files, runs, the base.

``results_<date>.json`` files are read by ``evaluation.results`` (the parser report and
relcheck use too; sample logs next to them are read when a paired test needs them),
merged per model configuration into runs (newest file wins, duplicates reported), and
the base run is chosen among them. Pure Python.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.results import (  # noqa: F401  (re-exported)
    TaskResult,
    from_files,
    number,
    parse_results,
    read_json,
    read_samples,
)

VARIANT_MODELS = ("relneuron-hf",)

_INTERVENTION_ARGS = ("neuron_set", "name")


@dataclass
class Run:
    """All result files of one model configuration (merged across files, newest wins)."""

    label: str
    model: str
    model_args: dict[str, Any]
    is_variant: bool
    limit: Any
    relneuron: dict[str, Any] | None
    tasks: dict[str, TaskResult]
    files: list[str]

    @property
    def pretrained(self) -> str | None:
        value = self.model_args.get("pretrained")
        return None if value is None else str(value)


def find_result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand folders into their ``results_*.json`` files (recursively); keep files as given."""
    found: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            inside = sorted(p for p in path.rglob("results_*.json") if p.is_file())
            if not inside:
                raise RelNeuronError(
                    "no lm-eval result files (results_*.json) in this folder",
                    path=path,
                    hint="give the folder passed to lm_eval --output_path",
                )
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise RelNeuronError("no such file or folder", path=path)
    unique = list(dict.fromkeys(p.resolve() for p in found))
    return unique


def parse_results_file(path: Path) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """Validate one results file; return its identity fields and its tasks."""
    return from_files(path)


def _is_variant(model: str, model_args: dict[str, Any]) -> bool:
    return model in VARIANT_MODELS and any(
        model_args.get(k) not in (None, "", "None") for k in _INTERVENTION_ARGS
    )


def load_runs(paths: Iterable[str | Path]) -> tuple[list[Run], list[str]]:
    """Read every result file and merge the files of one model configuration into a run."""
    problems: list[str] = []
    by_key: dict[str, tuple[Run, dict[str, float]]] = {}
    parsed = []
    for file in find_result_files(paths):
        identity, tasks = parse_results_file(file)
        parsed.append((identity["date"], str(file), identity, tasks))
    parsed.sort(key=lambda x: (x[0], x[1]))  # oldest first: newer files override
    for _date, file, identity, tasks in parsed:
        args = identity["model_args"]
        key = json.dumps([identity["model"], args], sort_keys=True, default=str)
        if key not in by_key:
            rn = identity["relneuron"]
            label = (
                (rn or {}).get("variant")
                or identity["model_name"]
                or f"{identity['model']}({args.get('pretrained', '?')})"
            )
            run = Run(
                label=str(label),
                model=identity["model"],
                model_args=args,
                is_variant=_is_variant(identity["model"], args),
                limit=identity["limit"],
                relneuron=rn,
                tasks={},
                files=[],
            )
            by_key[key] = (run, {})
        run, _ = by_key[key]
        run.files.append(file)
        for name, result in tasks.items():
            if name in run.tasks:
                problems.append(
                    f"{run.label}: task {name!r} is in several result files; using the newest "
                    f"({Path(file).name}, not {Path(run.tasks[name].source).name})"
                )
            run.tasks[name] = result
    runs = [run for run, _ in by_key.values()]
    seen: dict[str, int] = {}
    for run in runs:  # labels must be unique
        if run.label in seen:
            seen[run.label] += 1
            run.label = f"{run.label}#{seen[run.label]}"
        else:
            seen[run.label] = 1
    return runs, problems


def _model_identity(pretrained: str | None) -> str | None:
    """An embedded model is recorded either by alias or by its cache folder
    (``<name>-<16 hex digits of the GGUF's sha256>``, on whichever machine ran it)."""
    if pretrained is None:
        return None
    from relneuron_eval.core.models import EMBEDDED_MODELS, canonical

    name = Path(pretrained.rstrip("/")).name
    by_folder = next(
        (
            m.name
            for m in EMBEDDED_MODELS
            if re.fullmatch(rf"{re.escape(m.name)}-[0-9a-f]{{16}}", name)
        ),
        None,
    )
    return canonical(pretrained) or by_folder or pretrained.rstrip("/")


def choose_base(runs: list[Run], base: str | None) -> Run:
    """The run every other run is compared against."""
    if base is not None:
        matches = [r for r in runs if r.label == base] or [
            r for r in runs if any(Path(f).resolve() == Path(base).resolve() for f in r.files)
        ]
        if not matches:
            raise RelNeuronError(
                f"--base {base!r} matches no run", hint=f"runs: {[r.label for r in runs]}"
            )
        return matches[0]
    bases = [r for r in runs if not r.is_variant]
    if len(bases) == 1:
        return bases[0]
    if not bases:
        raise RelNeuronError(
            "no base run among the inputs: every run is a relneuron-hf variant",
            hint="add the base model's lm-eval output, or pick one with --base LABEL",
        )
    raise RelNeuronError(
        f"{len(bases)} runs could be the base: {[r.label for r in bases]}",
        hint="pick one with --base LABEL (the others are compared as variants)",
    )
