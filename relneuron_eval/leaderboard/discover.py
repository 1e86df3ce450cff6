"""The leaderboard's discovery stage: each method's neuron set, its time and its memory.

Every method reads the same discovery prompts (``discovery.data.discovery_prompts`` with
the settings' ``discovery:`` block) and writes ``OUT/sets/<method>.jsonl.gz``, beside it
``<method>.cost.json``. Cost is measured in the process that ran the method, against a
plain forward pass over the same prompts at the same batch size in that process (so a
loaded machine slows both alike): ``forward_equivalents = seconds / plain_forward_seconds``
(one plain forward of every discovery prompt = 1; timed on an even sample of 256 prompts
and scaled). Peak memory is the process's peak
resident memory while the method ran (CPU; sampled every 20 ms) or the peak CUDA
allocation, each also given above what was in use before it started.

DiffMean, activation magnitude and the matched random control share one token-mean pass
(``simple_methods``): it is timed once and counted in full in each of their costs.
Steps are claimed like the runner's evaluations (``evaluation.claims``), so two
processes with the same ``--out`` split the stage; a finished step is never run again.
"""

from __future__ import annotations

import json
import math
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.leaderboard.settings import MethodSpec, Settings

STORE_STEP = "token-means"
STORE_USERS = ("diffmean", "activation-magnitude", "random-matched")


@dataclass
class Context:
    """What every step needs; the model loads on first use."""

    settings: Settings
    out: Path
    device: str
    dtype: str
    progress: bool
    stream: Any
    _model: Any = None
    _prompts: list | None = None
    _forward: float | None = None

    @property
    def sets(self) -> Path:
        return self.out / "sets"

    def prompts(self) -> list:
        if self._prompts is None:
            from relneuron_eval.discovery.data import discovery_prompts, resolve_relations

            d = self.settings.discovery
            self._prompts = discovery_prompts(
                resolve_relations(d["relations"]),
                fewshot=None if d["fewshot"] == "task" else d["fewshot"],
                seed=d["seed"],
                max_facts=d["max_facts"],
                demos=d["demos"],
            )
        return self._prompts

    def model(self) -> tuple[Any, Any, str]:
        if self._model is None:
            from relneuron_eval.discovery.cli import load_model

            self._model = load_model(self.settings.model, self.device, self.dtype)
        return self._model

    def forward_seconds(self) -> float:
        """A plain batched forward over every discovery prompt, timed once per process."""
        if self._forward is None:
            self._forward = plain_forward_seconds(
                *self.model()[:2], [p.text for p in self.prompts()], self.batch_size
            )
        return self._forward

    @property
    def batch_size(self) -> int:
        return int(self.settings.discovery["batch_size"])


REFERENCE_PROMPTS = 256  # the plain forward is timed on an even sample, then scaled


def plain_forward_seconds(model: Any, tokenizer: Any, texts: list[str], batch_size: int) -> float:
    """Seconds of one plain forward (logits included) over every prompt, batched as the
    discovery passes batch: timed on an evenly spaced sample of at most
    ``REFERENCE_PROMPTS`` prompts and scaled to all (the reference must not cost as much
    as a method)."""
    import torch

    from relneuron_eval.discovery.activations import _pad_id, make_batches, pad_right

    step = max(1, -(-len(texts) // REFERENCE_PROMPTS))
    sample = texts[::step]
    device = model.get_input_embeddings().weight.device
    started = time.perf_counter()
    with torch.no_grad():
        for batch in make_batches(tokenizer, sample, batch_size):
            seqs = [tokenizer(sample[i])["input_ids"] for i in batch]
            ids, mask = pad_right(seqs, _pad_id(tokenizer))
            model(input_ids=ids.to(device), attention_mask=mask.to(device))
    return (time.perf_counter() - started) * len(texts) / max(1, len(sample))


def _rss_mb() -> float:
    try:
        pages = int(Path("/proc/self/statm").read_text().split()[1])
    except (OSError, ValueError, IndexError):
        return float("nan")
    import os

    return pages * os.sysconf("SC_PAGE_SIZE") / 2**20


@contextmanager
def measured(device: str) -> Iterator[dict[str, float]]:
    """Wall seconds and peak memory of the block (filled in when it ends)."""
    record: dict[str, float] = {}
    cuda = device.startswith("cuda")
    if cuda:
        import torch

        torch.cuda.synchronize()
        before = torch.cuda.memory_allocated()
        torch.cuda.reset_peak_memory_stats()
    else:
        before = _rss_mb()
    peak = [before]
    stop = threading.Event()

    def sample() -> None:
        while not stop.wait(0.02):
            peak[0] = max(peak[0], _rss_mb())

    sampler = None if cuda else threading.Thread(target=sample, daemon=True)
    if sampler is not None:
        sampler.start()
    started = time.perf_counter()
    try:
        yield record
    finally:
        seconds = time.perf_counter() - started
        stop.set()
        if sampler is not None:
            sampler.join()
            peak[0] = max(peak[0], _rss_mb())
            known = math.isfinite(peak[0])  # no /proc (not Linux): unknown, never NaN in JSON
            record.update(
                peak_memory_mb=round(peak[0], 1) if known else None,
                extra_memory_mb=round(peak[0] - before, 1) if known else None,
            )
        else:
            import torch

            torch.cuda.synchronize()
            top = torch.cuda.max_memory_allocated() / 2**20
            record.update(
                peak_memory_mb=round(top, 1), extra_memory_mb=round(top - before / 2**20, 1)
            )
        record["memory"] = "CUDA allocated" if cuda else "resident (RSS)"
        record["seconds"] = round(seconds, 3)


def _write_cost(path: Path, record: dict[str, Any]) -> None:
    with atomic_write(path) as handle:
        json.dump(record, handle, indent=1, sort_keys=True)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) else None


# ======================================================================== steps
def _config(ctx: Context, top_k: int) -> Any:
    from relneuron_eval.discovery.simple_methods import PassConfig

    return PassConfig(
        top_k=top_k, sites=tuple(ctx.settings.discovery["sites"]), batch_size=ctx.batch_size
    )


def _data(ctx: Context) -> dict[str, Any]:
    d = ctx.settings.discovery
    return {
        "relations": d["relations"],
        "fewshot": d["fewshot"],
        "demos": d["demos"],
        "max_facts_per_relation": d["max_facts"],
        "seed": d["seed"],
        "source": "relneuron_eval.data.facts",
    }


def _run_relation_specific(ctx: Context, out: Path) -> None:
    from relneuron_eval.discovery.data import fewshot_record, resolve_relations
    from relneuron_eval.discovery.relation_specific import (
        RelationSpecificConfig,
        find_relation_specific,
    )

    d = ctx.settings.discovery
    relations = resolve_relations(d["relations"])
    config = RelationSpecificConfig(
        top_k=max(ctx.settings.budgets),
        sites=tuple(d["sites"]),
        seed=d["seed"],
        fewshot=fewshot_record(relations, None if d["fewshot"] == "task" else d["fewshot"]),
        demos=d["demos"],
        min_positives=d["min_positives"],
        skip_unscorable=True,
        batch_size=ctx.batch_size,
    )
    model, tokenizer, model_id = ctx.model()
    find_relation_specific(
        model,
        tokenizer,
        ctx.prompts(),
        ctx.out / "work" / "relation-specific",
        out,
        config,
        model_id=model_id,
        data={**_data(ctx), "max_facts_per_relation": d["max_facts"]},
        progress=ctx.progress,
    )


def _run_attribution(ctx: Context, out: Path) -> None:
    from relneuron_eval.discovery.methods_cli import find

    model, tokenizer, model_id = ctx.model()
    work = ctx.out / "work" / "attribution-patching"
    neuron_set = find(
        "attribution-patching",
        model,
        tokenizer,
        ctx.prompts(),
        work,
        _config(ctx, max(ctx.settings.budgets)),
        model_id=model_id,
        data=_data(ctx),
        progress=ctx.progress,
    )
    neuron_set.save(out)
    import shutil

    shutil.rmtree(work, ignore_errors=True)


def _store(ctx: Context) -> Any:
    from relneuron_eval.discovery.simple_methods import token_mean_store

    model, tokenizer, model_id = ctx.model()
    store, _, _ = token_mean_store(
        model,
        tokenizer,
        ctx.prompts(),
        ctx.out / "work" / STORE_STEP,
        _config(ctx, max(ctx.settings.budgets)),
        model_id=model_id,
        progress=ctx.progress,
    )
    return store


def _run_simple(ctx: Context, name: str, out: Path, of_path: Path | None, spec: MethodSpec) -> None:
    from relneuron_eval.core.architectures import model_card
    from relneuron_eval.discovery.matched_random import find_matched
    from relneuron_eval.discovery.simple_methods import find_simple

    store = _store(ctx)  # finished: only opened and verified
    if name == "random-matched":
        assert of_path is not None
        neuron_set = find_matched(
            str(of_path),
            store,
            ctx.prompts(),
            top_k=max(ctx.settings.budgets),
            seed=spec.seed,
            pool=spec.pool,
        )
    else:
        card = model_card(ctx.model()[0], ctx.model()[2])
        neuron_set = find_simple(
            name, store, ctx.prompts(), _config(ctx, max(ctx.settings.budgets)), card, _data(ctx)
        )
    neuron_set.save(out)


def _prompts_done(ctx: Context, step: str) -> int:
    """Prompts an earlier, interrupted run of ``step`` already finished (its store's
    ``done.npy``): a resumed step's seconds cover only the rest."""
    import numpy as np

    try:
        return int(np.load(ctx.out / "work" / step / "done.npy").astype(bool).sum())
    except (OSError, ValueError):
        return 0


def run_step(ctx: Context, step: str, spec: MethodSpec | None, of_path: Path | None) -> None:
    """Run one step and write its cost record (the set first, the record last)."""
    ctx.sets.mkdir(parents=True, exist_ok=True)
    reference = ctx.forward_seconds()
    out = ctx.sets / f"{step}.jsonl.gz"
    done_before = _prompts_done(ctx, step)
    with measured(ctx.device) as cost:
        if step == STORE_STEP:
            _store(ctx)
        elif step == "relation-specific":
            _run_relation_specific(ctx, out)
        elif step == "attribution-patching":
            _run_attribution(ctx, out)
        else:
            assert spec is not None
            _run_simple(ctx, step, out, of_path, spec)
    cost.update(
        plain_forward_seconds=round(reference, 3),
        prompts=len(ctx.prompts()),
        device=ctx.device,
    )
    if done_before:
        cost["prompts_done_before"] = done_before  # seconds cover the rest only
    cost["forward_equivalents"] = round(cost["seconds"] / reference, 2) if reference > 0 else None
    _write_cost(ctx.sets / f"{step}.cost.json", cost)


def read_cost(path: Path) -> dict[str, Any] | None:
    """A step's cost record; a method that reads the shared token-mean store also gets
    that pass's share (``shared_pass_seconds``, and its forward passes added: each ratio
    is taken against the plain forward timed in the process that ran it, so a pass and a
    method run in different processes or sessions are each measured under their own load)."""
    own = _read_json(path)
    if own is None or path.name.split(".")[0] not in STORE_USERS:
        return own
    shared = _read_json(path.with_name(f"{STORE_STEP}.cost.json")) or {}
    out = dict(own)
    own_seconds = own.get("seconds_own", own.get("seconds", 0.0))  # records from before
    out["seconds_own"] = own_seconds
    out["shared_pass_seconds"] = shared.get("seconds", 0.0)
    out["seconds"] = round(own_seconds + out["shared_pass_seconds"], 3)
    ref = own.get("plain_forward_seconds") or 0.0
    fe_own = own_seconds / ref if ref > 0 else None
    fe_shared = shared.get("forward_equivalents")
    out["forward_equivalents"] = (
        round(fe_own + fe_shared, 2) if fe_own is not None and fe_shared is not None else None
    )
    peaks = [m for m in (own.get("peak_memory_mb"), shared.get("peak_memory_mb")) if m is not None]
    out["peak_memory_mb"] = max(peaks, default=None)
    if shared.get("prompts_done_before"):
        out["prompts_done_before"] = shared["prompts_done_before"]
    return out


@dataclass
class Found:
    """A method's full neuron set (all budgets are its top-k) and how much it cost."""

    spec: MethodSpec
    path: Path
    cost: dict[str, Any] | None


def _steps(methods: list[MethodSpec]) -> list[tuple[str, MethodSpec | None, list[str]]]:
    """(step, method, steps it waits for), in an order that respects the waits."""
    steps: list[tuple[str, MethodSpec | None, list[str]]] = []
    if any(m.kind == "find" and m.name in STORE_USERS for m in methods) or any(
        m.name == "random-matched" for m in methods
    ):
        steps.append((STORE_STEP, None, []))
    for m in methods:
        if m.kind == "find":
            steps.append((m.name, m, [STORE_STEP] if m.name in STORE_USERS else []))
        elif m.kind == "derived" and m.name == "random-matched":
            assert m.of is not None
            steps.append((m.name, m, [STORE_STEP, m.of]))
    return steps


def run_discovery(ctx: Context, poll: float = 3.0) -> dict[str, Found]:
    """Every method's set (found, given or derived), running only what is missing."""
    from relneuron_eval.evaluation.claims import Claims

    methods = ctx.settings.methods
    paths = {m.name: _method_path(ctx, m) for m in methods}
    steps = _steps(methods)
    claims = Claims(ctx.out / "claims", ctx.stream)
    done: Callable[[str], bool] = lambda s: (ctx.sets / f"{s}.cost.json").is_file()  # noqa: E731
    while not all(done(s) for s, _, _ in steps):
        ran = False
        for step, spec, needs in steps:
            if done(step) or not all(done(n) or _given(methods, n) for n in needs):
                continue
            key = f"discovery-{step}"
            if claims.acquire(key) is not None:
                continue
            try:
                if not done(step):
                    print(f"discovery: {step}", file=ctx.stream, flush=True)
                    of = paths.get(spec.of) if spec is not None and spec.of else None
                    run_step(ctx, step, spec, of)
                    ran = True
            finally:
                claims.release(key)
        if not ran and not all(done(s) for s, _, _ in steps):
            time.sleep(poll)
    return {
        m.name: Found(m, paths[m.name], read_cost(ctx.sets / f"{m.name}.cost.json"))
        for m in methods
    }


def _given(methods: list[MethodSpec], name: str) -> bool:
    return any(m.name == name and m.kind == "given" for m in methods)


def _method_path(ctx: Context, spec: MethodSpec) -> Path:
    if spec.kind != "given":
        return ctx.sets / f"{spec.name}.jsonl.gz"  # random: none (drawn per budget)
    from relneuron_eval.resources import resolve_shipped

    path = resolve_shipped(spec.set or "")
    if not path.is_file():
        raise RelNeuronError(
            f"{spec.name}: neuron set {spec.set!r} not found", path=ctx.settings.path
        )
    return path
