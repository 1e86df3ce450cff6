"""Evaluations of ``relneuron report``: variants, a per-task result cache, the lm-eval runner.

Every number of a report comes from one (variant, task, documents) evaluation. Each is
stored as ``runs/<label>-<key>.json`` with its per-document outcomes, keyed by the
model, the variant's arguments (a neuron set by its content hash, not its path), the
task and the exact document indices. A report that is interrupted resumes where it
stopped; a later report with more experiments reuses every evaluation it shares.
Tasks a variant needs are evaluated in one ``lm_eval.simple_evaluate`` call, so
requests of all tasks are batched together.

Not part of the key: batch size and device. Padding can move float results in the
last digits, which can flip a greedy token in rare ties; delete ``runs/`` to redo all.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import re
import sys
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError

CACHE_FORMAT = "relneuron-report-run"
CACHE_VERSION = 1


# =================================================================== variants
@dataclass(frozen=True)
class Variant:
    """A model configuration: the base model (no args) or ``relneuron-hf`` intervention args.

    Equality and hashing use only ``args`` and ``set_hash``; ``label`` is for people.
    """

    args: tuple[tuple[str, Any], ...] = ()
    set_hash: str | None = None
    label: str = field(default="base", compare=False)

    @classmethod
    def base(cls) -> Variant:
        return cls()

    @classmethod
    def make(cls, label: str, neuron_set: str, set_hash: str, **args: Any) -> Variant:
        clean = {k: v for k, v in args.items() if v is not None}
        clean["neuron_set"] = str(neuron_set)
        return cls(tuple(sorted(clean.items())), set_hash, label)

    @property
    def is_base(self) -> bool:
        return not self.args

    def lm_args(self) -> dict[str, Any]:
        return dict(self.args)

    def key(self) -> dict[str, Any]:
        """What identifies the variant's numbers: args with the set's path replaced by its hash."""
        out = {k: v for k, v in self.args if k != "neuron_set"}
        if self.set_hash is not None:
            out["neuron_set_sha256"] = self.set_hash
        return out


# ================================================================ task results
@dataclass
class TaskRun:
    """Per-document outcomes of one task under one variant."""

    task: str
    docs: list[dict[str, Any]]  # doc_id, id, metric values, optional hop1_fact/generation
    info: dict[str, Any] | None = None
    seconds: float | None = None

    def values(self, metric: str) -> list[float]:
        try:
            return [float(d[metric]) for d in sorted(self.docs, key=lambda d: d["doc_id"])]
        except KeyError:
            have = sorted(k for k in (self.docs[0] if self.docs else {}) if k not in _DOC_KEYS)
            raise RelNeuronError(
                f"task {self.task} has no metric {metric!r}", hint=f"it has: {have}"
            ) from None

    def by_doc(self, metric: str) -> dict[int, float]:
        return {int(d["doc_id"]): float(d[metric]) for d in self.docs}

    def accuracy(self, metric: str) -> float:
        values = self.values(metric)
        if not values:
            raise RelNeuronError(f"task {self.task}: no documents were evaluated")
        return sum(values) / len(values)

    def to_dict(self) -> dict[str, Any]:
        return {"task": self.task, "docs": self.docs, "info": self.info, "seconds": self.seconds}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TaskRun:
        return cls(data["task"], list(data["docs"]), data.get("info"), data.get("seconds"))


_DOC_KEYS = ("doc_id", "id", "hop1_fact", "generation")


# ================================================================== the cache
def cache_key(
    model: dict[str, Any], variant: Variant, task: str, task_hash: str | None = None
) -> str:
    """Identity of one (model, variant, task); ``task_hash`` fingerprints the task's
    definition and data. The documents are stored in the file, not in the key: a stored
    run over the first 50 documents also answers a request for the first 20."""
    payload = {
        "format": CACHE_VERSION,
        "model": model,
        "variant": variant.key(),
        "task": task,
        "task_hash": task_hash,
    }
    text = json.dumps(payload, sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:20]


def _slug(text: str, limit: int = 80) -> str:
    return re.sub(r"[^A-Za-z0-9_.=+-]+", "-", text).strip("-")[:limit]


Evaluate = Callable[[Variant, dict[str, list[int]]], dict[str, TaskRun]]


class Runner:
    """Collects the (variant, task, documents) evaluations a report needs and runs the
    missing ones.

    ``evaluate(variant, {task: doc indices})`` does the work (lm-eval in a real report,
    a stub in tests). Requests for the same variant and task are merged (the union of
    their documents); a stored run whose documents include all requested ones is reused
    and cut down on ``get``. Relation tasks are always asked for their first N
    documents, which lm-eval processes in order, so a longer run holds exactly the
    prompts (and few-shot demos) of a shorter one. ``calls`` and ``evaluated`` count
    what was actually run, so a resumed report can be checked to evaluate nothing.
    """

    def __init__(
        self,
        cache_dir: Path,
        model_key: dict[str, Any],
        evaluate: Evaluate,
        *,
        progress: bool = True,
        stream: Any = None,
        fingerprint: Callable[[str], str] | None = None,
    ) -> None:
        self.cache_dir = Path(cache_dir)
        self.fingerprint = fingerprint
        self.model_key = model_key
        self.evaluate = evaluate
        self.progress = progress
        self.stream = stream if stream is not None else sys.stderr
        self._wanted: dict[str, tuple[Variant, str, set[int]]] = {}
        self._results: dict[str, TaskRun] = {}
        self._computed: set[str] = set()
        self.calls = 0  # evaluate() calls made
        self.evaluated = 0  # (variant, task) results computed (not read from the cache)
        self.reused = 0  # results read from the cache
        self.seconds = 0.0

    # ------------------------------------------------------------- requests
    def key(self, variant: Variant, task: str) -> str:
        task_hash = self.fingerprint(task) if self.fingerprint else None
        return cache_key(self.model_key, variant, task, task_hash)

    def path(self, variant: Variant, task: str) -> Path:
        key = self.key(variant, task)
        return self.cache_dir / f"{_slug(variant.label + '__' + task)}-{key}.json"

    def request(self, variant: Variant, tasks: Iterable[str], docs: dict[str, list[int]]) -> None:
        """Ask for ``variant`` on each task with that task's document indices."""
        for task in tasks:
            key = self.key(variant, task)
            entry = self._wanted.setdefault(key, (variant, task, set()))
            entry[2].update(int(d) for d in docs[task])

    def _load(self, key: str, variant: Variant, task: str) -> TaskRun | None:
        if key in self._results:
            return self._results[key]
        path = self.path(variant, task)
        if not path.is_file():
            return None
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                return None
            run = TaskRun.from_dict(data["result"])
        except (ValueError, KeyError, TypeError, OSError):
            print(f"note: unreadable cached run {path.name}; evaluating again", file=self.stream)
            return None
        self._results[key] = run
        return run

    def _save(self, key: str, variant: Variant, task: str, run: TaskRun) -> None:
        data = {
            "format": CACHE_FORMAT,
            "version": CACHE_VERSION,
            "key": key,
            "key_fields": {
                "model": self.model_key,
                "variant": variant.key(),
                "task": task,
                "task_hash": self.fingerprint(task) if self.fingerprint else None,
            },
            "label": variant.label,
            "result": run.to_dict(),
        }
        with atomic_write(self.path(variant, task)) as handle:
            json.dump(data, handle, ensure_ascii=False)

    @staticmethod
    def _doc_ids(run: TaskRun) -> set[int]:
        return {int(d["doc_id"]) for d in run.docs}

    def pending(self) -> list[tuple[Variant, dict[str, list[int]]]]:
        """Missing evaluations grouped into calls: one per variant (a task once per call).

        A stored run that lacks some requested documents is evaluated again on the union
        of its documents and the requested ones (never on the missing ones alone, which
        would change their order and so their few-shot demos).
        """
        calls: list[tuple[Variant, dict[str, list[int]]]] = []
        for key, (variant, task, wanted) in self._wanted.items():
            cached = self._load(key, variant, task)
            if cached is not None and wanted <= self._doc_ids(cached):
                continue
            docs = sorted(wanted | (self._doc_ids(cached) if cached is not None else set()))
            for v, tasks in calls:
                if v == variant and task not in tasks:
                    tasks[task] = docs
                    break
            else:
                calls.append((variant, {task: docs}))
        return calls

    # ----------------------------------------------------------------- running
    def run(self) -> None:
        """Evaluate everything requested that is not cached; save each result at once."""
        calls = self.pending()
        planned = {self.key(v, t) for v, tasks in calls for t in tasks}
        self.reused += sum(
            1 for key in self._wanted if key not in planned and key not in self._computed
        )
        if not calls:
            self._wanted.clear()
            return
        bar = None
        if self.progress:
            from tqdm import tqdm

            docs_total = sum(len(d) for _, tasks in calls for d in tasks.values())
            bar = tqdm(
                total=docs_total, file=self.stream, unit="doc", desc="report", dynamic_ncols=True
            )
        try:
            for number, (variant, tasks) in enumerate(calls, start=1):
                if bar is not None:
                    bar.set_description(f"[{number}/{len(calls)}] {variant.label}")
                started = time.perf_counter()
                results = self.evaluate(variant, tasks)
                seconds = time.perf_counter() - started
                self.calls += 1
                self.seconds += seconds
                n_docs = sum(len(d) for d in tasks.values()) or 1
                for task, docs in tasks.items():
                    run = results.get(task)
                    if run is None or self._doc_ids(run) != set(docs):
                        raise RelNeuronError(
                            f"evaluation of {variant.label} returned no or other documents "
                            f"for {task}"
                        )
                    run.seconds = round(seconds * len(docs) / n_docs, 3)  # share of the call
                    key = self.key(variant, task)
                    self._save(key, variant, task, run)
                    self._results[key] = run
                    self._computed.add(key)
                    self.evaluated += 1
                if bar is not None:
                    bar.update(sum(len(d) for d in tasks.values()))
        finally:
            if bar is not None:
                bar.close()
        self._wanted.clear()

    def get(self, variant: Variant, task: str, docs: list[int]) -> TaskRun:
        """The outcomes of exactly ``docs`` (cut from a stored run that may hold more)."""
        key = self.key(variant, task)
        run = self._load(key, variant, task)
        wanted = {int(d) for d in docs}
        if run is None or not wanted <= self._doc_ids(run):
            raise RelNeuronError(
                f"no result for {variant.label} on {task} (was it requested and run?)"
            )
        if self._doc_ids(run) == wanted:
            return run
        kept = [d for d in run.docs if int(d["doc_id"]) in wanted]
        return TaskRun(task, kept, run.info, run.seconds)

    def all_runs(self) -> list[TaskRun]:
        return list(self._results.values())


# ======================================================= lm-eval evaluations
def _doc_record(rec: dict[str, Any]) -> dict[str, Any]:
    doc = rec.get("doc") or {}
    out: dict[str, Any] = {
        "doc_id": int(rec["doc_id"]),
        "id": doc.get("fact_id") or doc.get("chain_id"),
    }
    if "hop1_fact" in doc:
        out["hop1_fact"] = doc["hop1_fact"]
    for metric in rec.get("metrics", []):
        value = rec.get(metric)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            out[metric] = float(value)
    resp = rec.get("filtered_resps") or []
    if resp and isinstance(resp[0], str):
        out["generation"] = resp[0][:200]
    return out


class LMEvaluator:
    """Loads the model once and evaluates variants of it through ``lm_eval.simple_evaluate``.

    Each variant is a ``RelNeuronLM`` wrapped around the same loaded model (interventions
    fold into the weights and restore them bit-exactly; a parameter checksum after every
    evaluation makes sure of it). lm-eval's own progress bars and warnings are kept out
    of the terminal and shown only if an evaluation fails.
    """

    def __init__(
        self,
        model: str,
        *,
        task_manager: Any,
        device: str,
        dtype: str,
        batch_size: int | str,
    ) -> None:
        self.model_name = model
        self.task_manager = task_manager
        self.device = device
        self.dtype = dtype
        self.batch_size = batch_size
        self._model: Any = None
        self._tokenizer: Any = None
        self._checksum: list[float] | None = None

    def _load(self) -> None:
        if self._model is not None:
            return
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        from relneuron_eval.core.embedded import resolve_pretrained

        path = resolve_pretrained(self.model_name)
        dtype = getattr(torch, self.dtype)
        try:
            with contextlib.redirect_stderr(io.StringIO()):  # no loading bars mid-progress
                self._tokenizer = AutoTokenizer.from_pretrained(path)
                model = AutoModelForCausalLM.from_pretrained(path, dtype=dtype)
        except (OSError, ValueError) as exc:
            raise RelNeuronError(f"cannot load model {self.model_name!r}: {exc}") from None
        self._model = model.to(self.device).eval()
        self._checksum = self._params_checksum()

    def _params_checksum(self) -> list[float]:
        import torch

        with torch.no_grad():
            return [float(p.detach().double().sum()) for p in self._model.parameters()]

    def __call__(self, variant: Variant, samples: dict[str, list[int]]) -> dict[str, TaskRun]:
        self._load()
        import lm_eval

        from relneuron_eval.harness.lm_model import RelNeuronLM

        captured = io.StringIO()
        try:
            with contextlib.redirect_stderr(captured):
                lm = RelNeuronLM(
                    pretrained=self._model,
                    tokenizer=self._tokenizer,
                    batch_size=self.batch_size,
                    **variant.lm_args(),
                )
                out = lm_eval.simple_evaluate(
                    model=lm,
                    tasks=sorted(samples),
                    samples={t: sorted(d) for t, d in samples.items()},
                    task_manager=self.task_manager,
                    log_samples=True,
                    bootstrap_iters=0,
                    verbosity="ERROR",
                )
                info = (lm.get_model_info() or {}).get("relneuron")
        except RelNeuronError:
            raise
        except Exception as exc:
            tail = captured.getvalue()[-3000:]
            raise RelNeuronError(
                f"evaluation of {variant.label} failed: {type(exc).__name__}: {exc}",
                hint=f"lm-eval said:\n{tail}" if tail else None,
            ) from exc
        if self._params_checksum() != self._checksum:
            raise RelNeuronError(
                f"the model's weights changed during {variant.label}; results are unreliable",
                hint="this is a bug in the intervention's restore; please report it",
            )
        runs: dict[str, TaskRun] = {}
        for task in samples:
            records = (out.get("samples") or {}).get(task)
            if not records:
                raise RelNeuronError(f"lm-eval returned no samples for {task}")
            docs = [_doc_record(r) for r in records if r.get("filter", "none") == "none"]
            _check_aggregates(task, docs, out["results"].get(task, {}))
            runs[task] = TaskRun(task, docs, info)
        return runs


def _check_aggregates(task: str, docs: list[dict[str, Any]], results: dict[str, Any]) -> None:
    """lm-eval's reported mean must equal the mean of the logged per-document values."""
    for key, value in results.items():
        metric, _, filt = key.partition(",")
        if filt != "none" or metric.endswith("_stderr") or not isinstance(value, (int, float)):
            continue
        values = [d[metric] for d in docs if metric in d]
        if values and abs(sum(values) / len(values) - float(value)) > 1e-9:
            raise RelNeuronError(
                f"{task}: lm-eval's {metric} {value} differs from the per-document mean",
                hint="the per-document log and the aggregate disagree; please report it",
            )
