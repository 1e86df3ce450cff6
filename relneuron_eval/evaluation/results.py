"""The one per-task result type: lm-eval's aggregates plus its per-document records.

``report``, ``relcheck`` and ``compare`` all read the same thing: what
``lm_eval.simple_evaluate`` returned (live) or what ``lm_eval --output_path
--log_samples`` wrote (``results_<date>.json`` and ``samples_<task>_<date>.jsonl``). Both
are parsed here, by the same code, into :class:`TaskResult`, so a fix to how a sample or
an aggregate is read is made once. Pure Python (no torch).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.prior_robust import (
    METRIC,
    add_calibrated,
    choice_loglikelihoods,
    gold_indices,
    missing_hint,
)
from relneuron_eval.files import read_bytes
from relneuron_eval.jsonl import iter_jsonl

_DATE_RE = re.compile(r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}(?:\.\d+)?)")
# Fields of a parsed record that are not metric values.
DOC_KEYS = ("doc_id", "filter", "id", "hop1_fact", "generation", "doc_hash", "choice_ll", "gold")
# Fields of lm-eval's raw sample record that are never metrics (older logs lack "metrics").
_RAW_KEYS = {"doc_id", "doc", "target", "arguments", "resps", "filtered_resps", "filter"}
# Fields of a record that the report's cache does not keep (its format predates them).
_NOT_CACHED = ("filter", "doc_hash")


def number(value: Any) -> float | None:
    """A finite float, or None for anything else (bools, strings, NaN)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    value = float(value)
    return value if math.isfinite(value) else None


def doc_record(rec: dict[str, Any]) -> dict[str, Any]:
    """One lm-eval sample record (live or from a log) reduced to what is compared.

    ``filter`` is kept only when it is not ``none``; ``generation`` is the first filtered
    response when it is text (loglikelihood responses are tuples live, lists in a log).
    """
    doc = rec.get("doc") if isinstance(rec.get("doc"), dict) else {}
    out: dict[str, Any] = {
        "doc_id": int(rec["doc_id"]),
        "id": doc.get("fact_id") or doc.get("chain_id"),
    }
    filt = str(rec.get("filter", "none"))
    if filt != "none":
        out["filter"] = filt
    if "hop1_fact" in doc:
        out["hop1_fact"] = doc["hop1_fact"]
    names = rec.get("metrics")
    if not isinstance(names, list):
        names = [k for k in rec if k not in _RAW_KEYS and not k.endswith("_hash")]
    for metric in names:
        value = rec.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[metric] = float(value)
    resp = rec.get("filtered_resps") or []
    if resp and isinstance(resp[0], str):
        out["generation"] = resp[0][:200]
    lls, gold = choice_loglikelihoods(rec), gold_indices(rec)
    if lls is not None and gold is not None:  # multiple choice: for acc_calibrated
        out["choice_ll"], out["gold"] = lls, gold
    if rec.get("doc_hash") is not None:
        out["doc_hash"] = rec["doc_hash"]
    return out


_SAMPLE_CACHE: dict[tuple[str, int, int], list[dict[str, Any]]] = {}


def read_samples(path: str | Path) -> list[dict[str, Any]]:
    """Parsed records of an lm-eval sample log (``samples_<task>_<date>.jsonl``)."""
    path = str(path)
    stat = Path(path).stat()
    key = (path, stat.st_size, stat.st_mtime_ns)  # a rewritten log is read again
    if key in _SAMPLE_CACHE:
        return _SAMPLE_CACHE[key]
    out: list[dict[str, Any]] = []
    for line_no, record in iter_jsonl(path):
        if "doc_id" not in record:
            raise RelNeuronError("not an lm-eval sample record", path=path, line=line_no)
        out.append(doc_record(record))
    add_calibrated(out)
    _SAMPLE_CACHE[key] = out
    return out


# ================================================================ the result
@dataclass
class TaskResult:
    """One task (or group) of one evaluation: aggregates and per-document records.

    ``docs`` holds one record per (document, filter): ``doc_id``, the metric values and
    optional ``id``/``hop1_fact``/``generation``/``doc_hash``/``filter`` (absent: ``none``);
    multiple-choice records also ``choice_ll``/``gold``, from which ``acc_calibrated`` is
    computed over the result's documents (``evaluation.prior_robust``).
    A result read from files has ``docs=None`` until they are needed; ``samples`` is then
    the log they are read from. ``info`` is relneuron's description of the intervention.
    """

    name: str
    docs: list[dict[str, Any]] | None = None
    info: dict[str, Any] | None = None
    seconds: float | None = None
    metrics: dict[tuple[str, str], float] = field(default_factory=dict)  # (metric, filter)
    stderrs: dict[tuple[str, str], float | None] = field(default_factory=dict)
    is_group: bool = False
    version: Any = None
    n_shot: Any = None
    n_docs: int | None = None  # documents actually evaluated (after --limit)
    task_hash: str | None = None
    higher_is_better: dict[str, bool] = field(default_factory=dict)
    subtasks: list[str] = field(default_factory=list)
    source: str = ""
    samples: str | None = None  # path of the per-sample log, when there is one

    # ------------------------------------------------------------ records
    @property
    def has_docs(self) -> bool:
        return bool(self.docs) or self.samples is not None

    def records(self, filt: str | None = "none") -> list[dict[str, Any]]:
        """Records of one filter (all with None), sorted by document; reads a log once."""
        if self.docs is None:
            self.docs = read_samples(self.samples) if self.samples else []
        rows = [d for d in self.docs if filt is None or d.get("filter", "none") == filt]
        return sorted(rows, key=lambda d: (int(d["doc_id"]), d.get("filter", "none")))

    def doc_ids(self) -> set[int]:
        return {int(d["doc_id"]) for d in self.records()}

    def subset(self, doc_ids: set[int]) -> TaskResult:
        """The same result restricted to some documents (aggregates are dropped;
        ``acc_calibrated`` is calibrated again over the documents kept)."""
        kept = [d for d in self.records(None) if int(d["doc_id"]) in doc_ids]
        if any("choice_ll" in d for d in kept):
            kept = [dict(d) for d in kept]  # the parent's records keep their values
            add_calibrated(kept)
        return TaskResult(self.name, kept, self.info, self.seconds)

    def values(self, metric: str, filt: str = "none") -> list[float]:
        """Per-document values in document order."""
        rows = self.records(filt)
        try:
            return [float(d[metric]) for d in rows]
        except KeyError:
            have = sorted(k for k in (rows[0] if rows else {}) if k not in DOC_KEYS)
            why = missing_hint(rows) if metric == METRIC else None
            raise RelNeuronError(
                f"task {self.name} has no metric {metric!r}", hint=why or f"it has: {have}"
            ) from None

    def by_doc(self, metric: str, filt: str = "none") -> dict[int, float]:
        ids = [int(d["doc_id"]) for d in self.records(filt)]
        return dict(zip(ids, self.values(metric, filt), strict=True))

    def accuracy(self, metric: str, filt: str = "none") -> float:
        values = self.values(metric, filt)
        if not values:
            raise RelNeuronError(f"task {self.name}: no documents were evaluated")
        return sum(values) / len(values)

    def paired(
        self, other: TaskResult, metric: str, filt: str
    ) -> tuple[list[float], list[float]] | str:
        """Matched per-document values of two runs, or the reason why there are none."""
        where = self.samples or f"the {self.name} result"
        there = other.samples or f"the other {self.name} result"
        try:
            left, right = self.records(filt), other.records(filt)
        except RelNeuronError as exc:
            return f"unreadable sample log: {exc}"
        keys = [int(d["doc_id"]) for d in left]
        if not keys or [int(d["doc_id"]) for d in right] != keys:
            expected = f"; lm-eval evaluated {self.n_docs}" if self.n_docs is not None else ""
            return (
                f"the sample logs cover different documents ({len(keys)} in {where}, "
                f"{len(right)} in {there}{expected}; a truncated log?)"
            )
        xs: list[float] = []
        ys: list[float] = []
        for a, b in zip(left, right, strict=True):
            if a.get("doc_hash") != b.get("doc_hash"):
                return f"document {a['doc_id']} differs between the sample logs"
            x, y = number(a.get(metric)), number(b.get(metric))
            if x is None or y is None:
                return f"no per-sample numbers for {metric}"
            xs.append(x)
            ys.append(y)
        return xs, ys

    def check_means(self) -> None:
        """lm-eval's reported means must equal the means of the logged per-document values."""
        for (metric, filt), value in self.metrics.items():
            if filt != "none":
                continue
            values = [d[metric] for d in self.records() if metric in d]
            if values and abs(sum(values) / len(values) - value) > 1e-9:
                raise RelNeuronError(
                    f"{self.name}: lm-eval's {metric} {value} differs from the per-document mean",
                    hint="the per-document log and the aggregate disagree; please report it",
                )

    # ------------------------------------------------------------ the report's cache
    def to_dict(self) -> dict[str, Any]:
        """The report cache's form: documents of filter ``none``, no aggregates."""
        docs = [{k: v for k, v in d.items() if k not in _NOT_CACHED} for d in self.records()]
        return {"task": self.name, "docs": docs, "info": self.info, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskResult:
        docs = list(data["docs"])
        add_calibrated(docs)  # the rule of this version, from the cached log-likelihoods
        return cls(data["task"], docs, data.get("info"), data.get("seconds"))


# ================================================================ parsing
def read_json(path: Path) -> Any:
    """Parse a JSON file with errors that say where it is broken."""
    raw = read_bytes(path, "file")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise RelNeuronError(
            "not a text file", path=path, hint="expected lm-eval results JSON"
        ) from None
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


def _aggregates(entry: dict[str, Any]) -> tuple[dict, dict]:
    """``{"acc,none": .., "acc_stderr,none": ..}`` -> metrics and stderrs by (metric, filter)."""
    metrics: dict[tuple[str, str], float] = {}
    stderrs: dict[tuple[str, str], float | None] = {}
    for key, value in entry.items():
        metric, sep, filt = key.partition(",")
        if not sep or metric.endswith("_stderr"):
            continue
        value = number(value)
        if value is not None:
            metrics[(metric, filt)] = value
            stderrs[(metric, filt)] = number(entry.get(f"{metric}_stderr,{filt}"))
    return metrics, stderrs


def parse_results(
    data: Any, source: str | Path, *, results_file: Path | None = None
) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """Validate lm-eval results (a file's content or ``simple_evaluate``'s return value).

    Returns the run's identity fields and its tasks, without per-document records: use
    :func:`from_evaluate` or :func:`from_files`, which add them.
    """
    path = Path(source)
    _check_lm_eval_results(data, path)
    config = data["config"]
    group_subtasks = {
        k: list(v) for k, v in (data.get("group_subtasks") or {}).items() if isinstance(v, list)
    }
    groups = set(data.get("groups") or {}) | {k for k, v in group_subtasks.items() if v}
    n_samples = data.get("n-samples") or {}
    hib = data.get("higher_is_better") or {}
    tasks: dict[str, TaskResult] = {}
    for name, entry in data["results"].items():
        if not isinstance(entry, dict):
            raise RelNeuronError(f"results[{name!r}] is not an object", path=path)
        metrics, stderrs = _aggregates(entry)
        is_group = name in groups
        leaves = _leaf_tasks(name, group_subtasks) if is_group else [name]
        docs = [n_samples[t].get("effective") for t in leaves if isinstance(n_samples.get(t), dict)]
        n_docs = sum(int(d) for d in docs) if docs and len(docs) == len(leaves) else None
        if n_docs is None and isinstance(entry.get("sample_len"), int):
            n_docs = entry["sample_len"]
        log = None if is_group or results_file is None else _samples_path(results_file, name)
        tasks[name] = TaskResult(
            name=name,
            is_group=is_group,
            metrics=metrics,
            stderrs=stderrs,
            version=(data.get("versions") or {}).get(name),
            n_shot=(data.get("n-shot") or {}).get(name),
            n_docs=n_docs,
            task_hash=(data.get("task_hashes") or {}).get(name) if not is_group else None,
            higher_is_better={k: bool(v) for k, v in (hib.get(name) or {}).items()},
            subtasks=leaves if is_group else [],
            source=str(source),
            samples=str(log) if log else None,
        )
    identity = {
        "model": str(config.get("model")),
        "model_args": _parse_model_args(config.get("model_args")),
        "model_name": data.get("model_name"),
        "limit": config.get("limit"),
        "relneuron": config.get("relneuron") if isinstance(config.get("relneuron"), dict) else None,
        "date": number(data.get("date")) or 0.0,
    }
    return identity, tasks


def from_evaluate(out: Any, source: str) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """``simple_evaluate``'s return value (with ``log_samples=True``) as results."""
    identity, tasks = parse_results(out, source)
    for name, rows in (out.get("samples") or {}).items():
        result = tasks.setdefault(name, TaskResult(name, source=source))
        result.docs = [doc_record(r) for r in rows]
        add_calibrated(result.docs)
    for result in tasks.values():
        result.info = identity["relneuron"]
        if result.docs is None and not result.is_group:
            result.docs = []
    return identity, tasks


def from_files(results_file: Path) -> tuple[dict[str, Any], dict[str, TaskResult]]:
    """One ``results_*.json`` file; each task's records are read from its sample log
    (next to the file) when first needed."""
    identity, tasks = parse_results(
        read_json(results_file), results_file, results_file=results_file
    )
    for result in tasks.values():
        result.info = identity["relneuron"]
    return identity, tasks
