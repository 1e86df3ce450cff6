"""The one way relneuron evaluates: a model loaded once, variants of it, ``simple_evaluate``.

``report`` and ``relcheck`` both evaluate (variant, tasks, documents) through here:
:class:`LoadedModel` loads the weights once and wraps them in a ``RelNeuronLM`` per
variant (interventions fold into the weights and restore them bit-exactly; a parameter
checksum after every evaluation makes sure of it), :func:`evaluate` runs lm-eval and
parses its output into :class:`~relneuron_eval.evaluation.results.TaskResult`, and
:class:`Runner` caches results per (variant, task, documents) on disk for the report.

Several processes with the same requests and the same cache folder share the work: each
claims a call before evaluating it (:mod:`relneuron_eval.evaluation.claims`), skips
calls claimed by a live process, and ``run`` returns only when every requested result
is in the cache, whoever computed it.

Not part of the report's cache key: batch size and device. Padding can move float
results in the last digits, which can flip a greedy token in rare ties; delete the cache
folder to redo all.
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
from relneuron_eval.core.spec import InterventionSpec
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.claims import Claims, Holder
from relneuron_eval.evaluation.results import TaskResult, from_evaluate

CACHE_FORMAT = "relneuron-report-run"
CACHE_VERSION = 1


# =================================================================== variants
@dataclass(frozen=True)
class Variant:
    """A model configuration: an :class:`InterventionSpec` (the base model: the empty
    one), the content hash of its neuron set, and a label for people.

    Equality and hashing use only ``spec`` and ``set_hash``. ``key()`` is the spec's key
    with the set's path replaced by ``set_hash``: it names the numbers in the cache.
    """

    spec: InterventionSpec = field(default_factory=InterventionSpec)
    set_hash: str | None = None
    label: str = field(default="base", compare=False)

    @classmethod
    def base(cls) -> Variant:
        return cls()

    @classmethod
    def make(cls, label: str, neuron_set: str, set_hash: str, **args: Any) -> Variant:
        spec = InterventionSpec.from_model_args({**args, "neuron_set": str(neuron_set)})
        return cls(spec, set_hash, label)

    @property
    def is_base(self) -> bool:
        return self.spec.is_base

    def to_model_args(self) -> dict[str, Any]:
        return self.spec.to_model_args()

    def key(self) -> dict[str, Any]:
        """What identifies the variant's numbers (the set by its content, not its path)."""
        return self.spec.key(self.set_hash)


# ================================================================== the model
# Model args that only say how to load the weights (HFLM ignores or refuses them for a
# loaded model); the others (batch size, intervention, prefix cache, ...) apply per variant.
_LOAD_ONLY = (
    "pretrained",
    "tokenizer",
    "device",
    "dtype",
    "revision",
    "subfolder",
    "trust_remote_code",
    "use_fast_tokenizer",
    "parallelize",
    "tp_plan",
    "device_map",
    "max_memory_per_gpu",
    "max_cpu_memory",
    "offload_folder",
    "peft",
    "delta",
    "autogptq",
    "gptqmodel",
    "gguf_file",
)


class LoadedModel:
    """One model in memory for every variant; checks that each evaluation restores it."""

    def __init__(self, load: Callable[[], tuple[Any, Any]], batch_size: int | str) -> None:
        self._loader = load
        self.batch_size = batch_size
        self.model: Any = None
        self.tokenizer: Any = None
        self._checksum: list[float] | None = None

    @classmethod
    def from_path(
        cls, model: str, *, device: str, dtype: str, batch_size: int | str
    ) -> LoadedModel:
        """``transformers`` loading of a path or the embedded model's alias (the report)."""

        def load() -> tuple[Any, Any]:
            import torch
            from transformers import AutoModelForCausalLM, AutoTokenizer

            from relneuron_eval.core.embedded import resolve_pretrained

            path = resolve_pretrained(model)
            try:
                with contextlib.redirect_stderr(io.StringIO()):  # no loading bars mid-progress
                    tokenizer = AutoTokenizer.from_pretrained(path)
                    loaded = AutoModelForCausalLM.from_pretrained(path, dtype=getattr(torch, dtype))
            except (OSError, ValueError) as exc:
                raise RelNeuronError(f"cannot load model {model!r}: {exc}") from None
            return loaded.to(device).eval(), tokenizer

        return cls(load, batch_size)

    @classmethod
    def from_model_args(
        cls, model_args: dict[str, Any], *, device: str | None, batch_size: int | str
    ) -> LoadedModel:
        """Loading as ``lm_eval --model relneuron-hf --model_args ...`` does (relcheck)."""

        def load() -> tuple[Any, Any]:
            from relneuron_eval.harness.lm_model import RelNeuronLM

            lm = RelNeuronLM.create_from_arg_obj(
                dict(model_args), {"batch_size": batch_size, "device": device}
            )
            return lm.model, lm.tokenizer

        return cls(load, batch_size)

    def _load(self) -> None:
        if self.model is None:
            self.model, self.tokenizer = self._loader()
            self._checksum = self._params_checksum()

    def _params_checksum(self) -> list[float]:
        import torch

        with torch.no_grad():
            return [float(p.detach().double().sum()) for p in self.model.parameters()]

    def lm(self, args: dict[str, Any]) -> Any:
        """A ``RelNeuronLM`` on the loaded weights; ``args`` are its model args."""
        self._load()
        from relneuron_eval.harness.lm_model import RelNeuronLM

        args = {k: v for k, v in args.items() if k not in _LOAD_ONLY}
        args.setdefault("batch_size", self.batch_size)
        return RelNeuronLM(pretrained=self.model, tokenizer=self.tokenizer, **args)

    def check_restored(self, label: str) -> None:
        if self.model is not None and self._params_checksum() != self._checksum:
            raise RelNeuronError(
                f"the model's weights changed during {label}; results are unreliable",
                hint="this is a bug in the intervention's restore; please report it",
            )


class ModelSlot:
    """At most one :class:`LoadedModel` in memory (relcheck): asking for another model
    frees the previous one first, as when each evaluation loaded and freed its own."""

    def __init__(self) -> None:
        self._key: str | None = None
        self._loaded: LoadedModel | None = None

    def get(
        self, load_args: dict[str, Any], *, device: str | None, batch_size: int | str
    ) -> LoadedModel:
        """The model for ``load_args`` on ``device``; ``batch_size`` is only the default
        of its evaluations (each may pass its own), so it does not select the model."""
        key = json.dumps([load_args, device], sort_keys=True, default=str)
        if key != self._key or self._loaded is None:
            self.free()
            self._loaded = LoadedModel.from_model_args(
                load_args, device=device, batch_size=batch_size
            )
            self._key = key
        return self._loaded

    def free(self) -> None:
        """Drop the model and give its memory back (``torch.cuda.empty_cache`` on GPU)."""
        if self._loaded is None:
            return
        self._loaded = self._key = None
        import gc

        import torch

        gc.collect()
        if torch.cuda.is_available():
            torch.cuda.empty_cache()


def evaluate(
    model: LoadedModel,
    args: dict[str, Any],
    tasks: list[str],
    *,
    label: str,
    task_manager: Any,
    quiet: bool = False,
    hint: str | None = None,
    **options: Any,
) -> dict[str, TaskResult]:
    """One ``simple_evaluate`` call of a variant (model ``args``) on ``tasks``.

    ``options`` go to lm-eval (``samples``, ``limit``, ``num_fewshot``,
    ``bootstrap_iters``). ``quiet`` keeps lm-eval's output off the terminal and shows it
    only if the evaluation fails; otherwise ``hint`` is the failure's hint.
    """
    import lm_eval

    from relneuron_eval.harness.env_info import env_info_once

    env_info_once()
    captured = io.StringIO()
    try:
        with contextlib.redirect_stderr(captured) if quiet else contextlib.nullcontext():
            out = lm_eval.simple_evaluate(
                model=model.lm(args),
                tasks=tasks,
                task_manager=task_manager,
                log_samples=True,
                **({"verbosity": "ERROR"} if quiet else {}),
                **options,
            )
    except RelNeuronError:
        raise
    except Exception as exc:  # lm-eval / transformers errors: keep the cause readable
        tail = captured.getvalue()[-3000:]
        raise RelNeuronError(
            f"evaluation of {label} failed: {type(exc).__name__}: {exc}",
            hint=(f"lm-eval said:\n{tail}" if tail else None) if quiet else hint,
        ) from exc
    model.check_restored(label)
    if out is None:
        raise RelNeuronError(f"evaluation of {label} returned nothing (not rank 0?)")
    return from_evaluate(out, f"<{label}>")[1]


class LMEvaluator:
    """The report's ``Evaluate``: a variant on {task: document indices}, lm-eval quiet."""

    def __init__(
        self, model: str, *, task_manager: Any, device: str, dtype: str, batch_size: int | str
    ) -> None:
        self.model_name = model
        self.task_manager = task_manager
        self.model = LoadedModel.from_path(model, device=device, dtype=dtype, batch_size=batch_size)

    def __call__(self, variant: Variant, samples: dict[str, list[int]]) -> dict[str, TaskResult]:
        results = evaluate(
            self.model,
            variant.to_model_args(),
            sorted(samples),
            label=variant.label,
            task_manager=self.task_manager,
            quiet=True,
            samples={t: sorted(d) for t, d in samples.items()},
            bootstrap_iters=0,
        )
        out: dict[str, TaskResult] = {}
        for task in samples:
            result = results.get(task)
            if result is None or not result.records():
                raise RelNeuronError(f"lm-eval returned no samples for {task}")
            result.check_means()
            out[task] = result
        return out


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


def _n_docs(calls: list[tuple[Any, dict[str, list[int]]]]) -> int:
    return sum(len(d) for _, tasks in calls for d in tasks.values())


Evaluate = Callable[[Any, dict[str, list[int]]], dict[str, TaskResult]]


class Runner:
    """Collects the (variant, task, documents) evaluations a report needs and runs the
    missing ones, one ``evaluate`` call per variant, each result saved at once.

    ``evaluate(variant, {task: doc indices})`` does the work (:class:`LMEvaluator` in a
    real report, a stub in tests). Requests for the same variant and task are merged (the
    union of their documents); a stored run whose documents include all requested ones
    is reused and cut down on ``get``. Relation tasks are always asked for their first N
    documents, which lm-eval processes in order, so a longer run holds exactly the
    prompts (and few-shot demos) of a shorter one. ``calls`` and ``evaluated`` count what
    was actually run, so a resumed report can be checked to evaluate nothing.

    Another process may run the same requests on the same folder: calls it has claimed
    are skipped, and ``run`` waits (polling every ``poll_seconds``) until their results
    are saved; a call whose claimer died is taken over.
    """

    poll_seconds = 3.0

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
        self._wanted: dict[str, tuple[Any, str, set[int]]] = {}
        self._results: dict[str, TaskResult] = {}
        self._computed: set[str] = set()
        self._seen: dict[str, tuple[int, int]] = {}  # file state last read, per key
        self.claims = Claims(self.cache_dir, self.stream)
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

    def _load(
        self, key: str, variant: Variant, task: str, wanted: set[int] | None = None
    ) -> TaskResult | None:
        """The stored run of (variant, task); read again from disk when the one in memory
        lacks some ``wanted`` documents and the file changed (another process saved it)."""
        run = self._results.get(key)
        if run is not None and (wanted is None or wanted <= run.doc_ids()):
            return run
        path = self.path(variant, task)
        try:
            stat = path.stat()
        except OSError:
            return run
        state = (stat.st_mtime_ns, stat.st_size)
        if self._seen.get(key) == state:
            return run
        self._seen[key] = state
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
            if data.get("format") != CACHE_FORMAT or data.get("key") != key:
                return run
            loaded = TaskResult.from_dict(data["result"])
        except (ValueError, KeyError, TypeError, OSError):
            print(f"note: unreadable cached run {path.name}; evaluating again", file=self.stream)
            return run
        self._results[key] = loaded
        return loaded

    def _save(self, key: str, variant: Variant, task: str, run: TaskResult) -> None:
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

    def requests(self) -> list[tuple[Any, str, set[int]]]:
        """What was requested and not yet run: (variant, task, document indices)."""
        return [(v, t, set(d)) for v, t, d in self._wanted.values()]

    def pending(
        self, assume: dict[str, set[int]] | None = None
    ) -> list[tuple[Any, dict[str, list[int]]]]:
        """Missing evaluations grouped into calls: one per variant (a task once per call).

        A stored run that lacks some requested documents is evaluated again on the union
        of its documents and the requested ones (never on the missing ones alone, which
        would change their order and so their few-shot demos). ``assume`` adds runs as if
        stored ({key: documents}), for planning a stage whose previous one has not run.
        """
        assume = assume or {}
        calls: list[tuple[Any, dict[str, list[int]]]] = []
        for key, (variant, task, wanted) in self._wanted.items():
            cached = self._load(key, variant, task, wanted)
            have = cached.doc_ids() if cached is not None else set()
            have = have | assume.get(key, set())
            if (cached is not None or key in assume) and wanted <= have:
                continue
            docs = sorted(wanted | have)
            for v, tasks in calls:
                if v == variant and task not in tasks:
                    tasks[task] = docs
                    break
            else:
                calls.append((variant, {task: docs}))
        return calls

    # ----------------------------------------------------------------- running
    def run(self) -> None:
        """Evaluate everything requested that is not cached; save each result at once.

        Calls claimed by another live process are left to it; returns when all results
        are in the cache (waiting for the other process's ones if need be).
        """
        calls = self.pending()
        if calls:
            bar = self._bar(calls)
            try:
                self._work(calls, bar)
            finally:
                if bar is not None:
                    bar.close()
        self.reused += sum(1 for key in self._wanted if key not in self._computed)
        self._wanted.clear()

    def _bar(self, calls: list[tuple[Any, dict[str, list[int]]]]) -> Any:
        if not self.progress:
            return None
        from tqdm import tqdm

        return tqdm(
            total=_n_docs(calls), file=self.stream, unit="doc", desc="report", dynamic_ncols=True
        )

    def _work(self, calls: list[tuple[Any, dict[str, list[int]]]], bar: Any) -> None:
        """Claim and run the calls no one else runs; wait for the others' results."""
        number, total, shown = 0, len(calls), ""
        while calls:
            blocked: list[Holder] = []
            ran = False
            for variant, _ in calls:
                key = self.claim_key(variant)
                holder = self.claims.acquire(key)
                if holder is not None:
                    blocked.append(holder)
                    continue
                try:  # claimed: what is still missing (another process may have saved it)
                    tasks = next((t for v, t in self.pending() if v == variant), None)
                    if tasks:
                        number += 1
                        if bar is not None:
                            bar.set_description(f"[{number}/{total}] {variant.label}")
                        self._run_call(variant, tasks)
                        ran = True
                        if bar is not None:
                            bar.update(_n_docs([(variant, tasks)]))
                finally:
                    self.claims.release(key)
            calls = self.pending()
            if calls and not ran:
                shown = self._wait(blocked, shown, bar, calls)

    def _wait(self, blocked: list[Holder], shown: str, bar: Any, calls: list[Any]) -> str:
        """Say (when it changes) whose evaluations this process waits for; sleep a poll.

        A claim of another host is never taken over (its process cannot be checked), so
        the message names the claim files for a person to delete.
        """
        who = sorted({h.describe() for h in blocked})
        files = sorted({str(h.path) for h in blocked if h.path is not None})
        named = ", ".join(files[:3]) + (f" and {len(files) - 3} more" if len(files) > 3 else "")
        message = (
            f"waiting for {len(blocked)} evaluation(s) claimed by {', '.join(who)} "
            f"(polling every {self.poll_seconds:g} s)"
            + (f"; claim file {named}: delete it if that process is gone" if files else "")
        )
        if bar is not None:  # the other process's progress counts too
            bar.n = max(bar.n, bar.total - _n_docs(calls))
            bar.refresh()
        if message != shown:
            if bar is not None:
                bar.write(message, file=self.stream)
            else:
                print(message, file=self.stream)
        time.sleep(self.poll_seconds)
        return message

    def claim_key(self, variant: Variant) -> str:
        """Names one call (a variant of this model): what two processes claim."""
        text = json.dumps({"model": self.model_key, "variant": variant.key()}, sort_keys=True)
        digest = hashlib.sha256(text.encode()).hexdigest()[:20]
        return f"{_slug(variant.label, 40)}-{digest}"

    def _run_call(self, variant: Variant, tasks: dict[str, list[int]]) -> None:
        started = time.perf_counter()
        results = self.evaluate(variant, tasks)
        seconds = time.perf_counter() - started
        self.calls += 1
        self.seconds += seconds
        n_docs = sum(len(d) for d in tasks.values()) or 1
        for task, docs in tasks.items():
            run = results.get(task)
            if run is None or run.doc_ids() != set(docs):
                raise RelNeuronError(
                    f"evaluation of {variant.label} returned no or other documents for {task}"
                )
            run.seconds = round(seconds * len(docs) / n_docs, 3)  # share of the call
            key = self.key(variant, task)
            self._save(key, variant, task, run)
            self._results[key] = run
            self._computed.add(key)
            self.evaluated += 1

    def get(self, variant: Variant, task: str, docs: list[int]) -> TaskResult:
        """The outcomes of exactly ``docs`` (cut from a stored run that may hold more)."""
        key = self.key(variant, task)
        wanted = {int(d) for d in docs}
        run = self._load(key, variant, task, wanted)
        if run is None or not wanted <= run.doc_ids():
            raise RelNeuronError(
                f"no result for {variant.label} on {task} (was it requested and run?)"
            )
        return run if run.doc_ids() == wanted else run.subset(wanted)

    def all_runs(self) -> list[TaskResult]:
        return list(self._results.values())
