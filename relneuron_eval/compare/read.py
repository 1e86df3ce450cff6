"""Reading for ``relneuron compare``: lm-eval result files, sample logs, runs, the base.

``results_<date>.json`` files (and the ``samples_<task>_<date>.jsonl`` files next to
them) are validated with errors that name the file and line, merged per model
configuration into runs (newest file wins, duplicates reported), and the base run is
chosen among them. Pure Python.
"""

from __future__ import annotations

import json
import math
import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError

VARIANT_MODELS = ("relneuron-hf",)

_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)")

_INTERVENTION_ARGS = ("neuron_set", "name")


@dataclass
class TaskResult:
    """One task or group of one run, as lm-eval recorded it."""

    name: str
    is_group: bool
    metrics: dict[tuple[str, str], float]  # (metric, filter) -> value
    stderrs: dict[tuple[str, str], float | None]
    version: Any = None
    n_shot: Any = None
    n_docs: int | None = None  # documents actually evaluated (after --limit)
    task_hash: str | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    subtasks: list[str] = field(default_factory=list)
    source: str = ""
    samples: str | None = None  # path of the per-sample log, when there is one


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


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def _parse_model_args(value: Any) -> dict[str, Any]:
    if isinstance(value, dict):
        return dict(value)
    if isinstance(value, str) and value.strip():
        out: dict[str, Any] = {}
        for part in value.split(","):
            if "=" in part:
                key, _, val = part.partition("=")
                out[key.strip()] = val.strip()
        return out
    return {}


def read_json(path: Path) -> Any:
    """Parse a JSON file with errors that say where it is broken."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise RelNeuronError("file not found", path=path) from None
    except UnicodeDecodeError:
        raise RelNeuronError(
            "not a text file", path=path, hint="expected lm-eval results JSON"
        ) from None
    except OSError as exc:
        raise RelNeuronError(f"cannot read: {exc.strerror}", path=path) from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        hint = (
            "the file looks truncated (was the run interrupted?)"
            if exc.pos >= len(text.rstrip())
            else None
        )
        raise RelNeuronError(
            f"invalid JSON: {exc.msg}", path=path, line=exc.lineno, hint=hint
        ) from None


def _check_lm_eval_results(data: Any, path: Path) -> None:
    hint = "pass lm-eval output folders (--output_path) or their results_*.json files"
    if not isinstance(data, dict):
        raise RelNeuronError(
            "not an lm-eval results file (top level is not an object)", path=path, hint=hint
        )
    missing = [k for k in ("results", "config") if not isinstance(data.get(k), dict)]
    if missing:
        raise RelNeuronError(
            f"not an lm-eval results file: no {' / '.join(repr(m) for m in missing)} object",
            path=path,
            hint=hint,
        )
    if "model" not in data["config"]:
        raise RelNeuronError(
            "not an lm-eval results file: config has no 'model'", path=path, hint=hint
        )


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


def _samples_path(results_file: Path, task: str) -> Path | None:
    match = _DATE_RE.search(results_file.name)
    if not match:
        return None
    candidate = results_file.parent / f"samples_{task}_{match.group(1)}.jsonl"
    return candidate if candidate.is_file() else None


def _leaf_tasks(name: str, group_subtasks: dict[str, list[str]]) -> list[str]:
    if name not in group_subtasks:
        return [name]
    out: list[str] = []
    for sub in group_subtasks[name]:
        out.extend(_leaf_tasks(sub, group_subtasks))
    return out


def parse_results_file(path: Path) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """Validate one results file; return its identity fields and its tasks."""
    return parse_results(read_json(path), path, results_file=path)


def parse_results(
    data: Any, source: str | Path, *, results_file: Path | None = None
) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """Validate lm-eval results (a file's content or ``simple_evaluate``'s return value).

    ``results_file`` is where the data was read from; sample logs are looked up next to
    it. In-memory results (relcheck) pass none and keep their samples themselves.
    """
    path = Path(source)
    _check_lm_eval_results(data, path)
    config = data["config"]
    group_subtasks = {
        k: list(v) for k, v in (data.get("group_subtasks") or {}).items() if isinstance(v, list)
    }
    groups = set(data.get("groups") or {}) | {k for k, v in group_subtasks.items() if v}
    versions = data.get("versions") or {}
    n_shot = data.get("n-shot") or {}
    n_samples = data.get("n-samples") or {}
    hashes = data.get("task_hashes") or {}
    hib = data.get("higher_is_better") or {}
    tasks: dict[str, TaskResult] = {}
    for name, entry in data["results"].items():
        if not isinstance(entry, dict):
            raise RelNeuronError(f"results[{name!r}] is not an object", path=path)
        metrics: dict[tuple[str, str], float] = {}
        stderrs: dict[tuple[str, str], float | None] = {}
        for key, value in entry.items():
            if "," not in key:
                continue
            metric, _, filt = key.partition(",")
            if metric.endswith("_stderr"):
                continue
            number = _number(value)
            if number is None:
                continue
            metrics[(metric, filt)] = number
            stderrs[(metric, filt)] = _number(entry.get(f"{metric}_stderr,{filt}"))
        is_group = name in groups
        leaves = _leaf_tasks(name, group_subtasks) if is_group else [name]
        docs = [
            n_samples.get(t, {}).get("effective")
            for t in leaves
            if isinstance(n_samples.get(t), dict)
        ]
        n_docs = sum(int(d) for d in docs) if docs and len(docs) == len(leaves) else None
        if n_docs is None and isinstance(entry.get("sample_len"), int):
            n_docs = entry["sample_len"]
        tasks[name] = TaskResult(
            name=name,
            is_group=is_group,
            metrics=metrics,
            stderrs=stderrs,
            version=versions.get(name),
            n_shot=n_shot.get(name),
            n_docs=n_docs,
            task_hash=hashes.get(name) if not is_group else None,
            higher_is_better={k: bool(v) for k, v in (hib.get(name) or {}).items()},
            subtasks=leaves if is_group else [],
            source=str(source),
            samples=None
            if is_group or results_file is None
            else (str(p) if (p := _samples_path(results_file, name)) else None),
        )
    identity = {
        "model": str(config.get("model")),
        "model_args": _parse_model_args(config.get("model_args")),
        "model_name": data.get("model_name"),
        "limit": config.get("limit"),
        "relneuron": config.get("relneuron") if isinstance(config.get("relneuron"), dict) else None,
        "date": _number(data.get("date")) or 0.0,
    }
    return identity, tasks


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
    """The embedded model is recorded either by alias or by its cache path."""
    if pretrained is None:
        return None
    from relneuron_eval.core.embedded import EMBEDDED_ALIASES

    name = Path(pretrained.rstrip("/")).name.lower()
    if pretrained.lower() in EMBEDDED_ALIASES or name.startswith("smollm2-135m-"):
        return "smollm2-135m"
    return pretrained.rstrip("/")


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


_SAMPLE_CACHE: dict[tuple[str, int, int], dict[tuple[int, str], dict[str, Any]]] = {}


def read_samples(path: str) -> dict[tuple[int, str], dict[str, Any]]:
    """Per-sample records keyed by (doc_id, filter); raises on broken lines."""
    stat = Path(path).stat()
    key = (path, stat.st_size, stat.st_mtime_ns)  # a rewritten log is read again
    if key in _SAMPLE_CACHE:
        return _SAMPLE_CACHE[key]
    out: dict[tuple[int, str], dict[str, Any]] = {}
    with open(path, encoding="utf-8") as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise RelNeuronError(
                    f"broken sample line ({exc.msg})", path=path, line=number
                ) from None
            if not isinstance(record, dict) or "doc_id" not in record:
                raise RelNeuronError("not an lm-eval sample record", path=path, line=number)
            out[(int(record["doc_id"]), str(record.get("filter", "none")))] = record
    _SAMPLE_CACHE[key] = out
    return out
