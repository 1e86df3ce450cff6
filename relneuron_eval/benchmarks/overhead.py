"""Run-time cost of an intervention: relneuron-hf (folded, hooked) vs plain hf.

The same lm-eval requests (built by the real tasks) go through models of the same
checkpoint and batch size: plain ``hf``; ``relneuron-hf`` with a seeded random
3,000-unit ``mlp.act`` deactivation folded into the weights (``fold``), the same
deactivation with forward hooks (``hook``), only at the last prompt token
(``positions=last``, hooks by necessity), and per document (``per_doc=relation``: each
document gets the 3,000 units of its own relation's group, batched), plus a second
plain ``hf`` loaded last, whose ratio to the first shows what the machine can resolve.

Like is compared with like: every intervention arm runs HFLM's path (``prefix_cache``
off, as plain ``hf`` has no cache), and every generation makes exactly
``--fixed-tokens`` tokens (no stop sequence), because an intervention changes the
answers and so, with stop sequences, the number of decoding steps. Each arm's model
forwards are counted to show the work is equal. One more arm, ``relneuron-hf`` with
its defaults and no intervention (``rn_default``: the prefix cache on), gives the
end-to-end view: what a user's ``relneuron-hf`` run costs next to ``hf``. Model loading
is not timed; each arm's ``loglikelihood`` / ``generate_until`` calls are, interleaved
over several rounds, in wall and CPU seconds.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

from relneuron_eval.benchmarks.requests import counted_forwards, fixed_length
from relneuron_eval.benchmarks.timing import interleaved, median, ratios

DEFAULT_TASKS = "relfacts_mc_landmark_on_continent,relfacts_country_capital_city"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--model", default="smollm2-135m", help="pretrained (default: embedded)")
    parser.add_argument("--tasks", default=DEFAULT_TASKS, help="comma-separated lm-eval tasks")
    parser.add_argument("--include-path", default=None, help="extra lm-eval task folder")
    parser.add_argument("--limit", type=int, default=48, help="documents per task")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--neurons", type=int, default=3000, help="units deactivated")
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--device", default="cpu")
    parser.add_argument(
        "--fixed-tokens",
        type=int,
        default=8,
        help="tokens generated per row in every arm (no stop sequence), so every arm makes "
        "the same forwards (0: the tasks' stop sequences)",
    )


def _requests(
    tasks: list[str], include_path: str | None, limit: int, fixed_tokens: int
) -> dict[str, list[Any]]:
    """The requests lm-eval would send for these tasks, grouped by request type;
    generations made ``fixed_tokens`` long (when not 0)."""
    from relneuron_eval.harness.task_index import manager as task_manager

    manager = task_manager([include_path] if include_path else [])
    by_type: dict[str, list[Any]] = {}
    for task in manager.load(tasks)["tasks"].values():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        for instance in task.instances:
            if instance.request_type == "generate_until" and fixed_tokens:
                instance = fixed_length(instance, fixed_tokens)
            by_type.setdefault(instance.request_type, []).append(instance)
    return by_type


def _random_set(model: Any, count: int, groups: list[str], path: Path) -> Path:
    """``count`` seeded random ``mlp.act`` units for each group."""
    from relneuron_eval.core.architectures import model_card, model_shape
    from relneuron_eval.core.neuron_set import Neuron, NeuronSet, make_header

    shape = model_shape(model)
    rng = random.Random(0)
    neurons = []
    for group in groups:
        units = rng.sample(range(shape.num_layers * shape.intermediate_size), count)
        neurons += [
            Neuron(group, "mlp.act", *divmod(u, shape.intermediate_size), 0.0) for u in units
        ]
    header = make_header(model=model_card(model), method={"name": "benchmark-random"})
    return NeuronSet(header, neurons).save(path)


def _relations(requests: dict[str, list[Any]]) -> list[str]:
    """The ``relation`` field of the requests' documents, in first-seen order."""
    seen: dict[str, None] = {}
    for reqs in requests.values():
        for instance in reqs:
            seen.setdefault(str(instance.doc["relation"]), None)
    return list(seen)


def _arms(args: argparse.Namespace, requests: dict[str, list[Any]], tmp: Path) -> dict[str, Any]:
    """The models: plain hf twice, relneuron-hf's defaults, and four interventions on
    HFLM's path."""
    from lm_eval.models.huggingface import HFLM

    from relneuron_eval.core.embedded import resolve_pretrained
    from relneuron_eval.harness.lm_model import RelNeuronLM

    relations = _relations(requests)
    common = {"pretrained": str(resolve_pretrained(args.model)), "device": args.device}
    common |= {"batch_size": args.batch_size, "dtype": "float32"}
    plain = HFLM(**common)
    path = _random_set(plain.model, args.neurons, relations, tmp / "random.jsonl")
    variant = {**common, "neuron_set": str(path), "prefix_cache": False}
    one = {**variant, "groups": relations[0]}
    return {
        "hf": plain,
        "fold": RelNeuronLM(**one, strategy="fold"),
        "hook": RelNeuronLM(**one, strategy="hook"),
        "last": RelNeuronLM(**one, positions="last"),
        "per_doc": RelNeuronLM(**variant, per_doc="relation"),
        "rn_default": RelNeuronLM(**common),  # end to end: prefix cache on, no intervention
        # a second plain model, loaded last: its ratio to ``hf`` is the resolution of
        # this measurement (same computation; only load order and memory placement)
        "hf_again": HFLM(**common),
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    import torch

    tasks = [t for t in args.tasks.split(",") if t]
    requests = _requests(tasks, args.include_path, args.limit, args.fixed_tokens)
    with tempfile.TemporaryDirectory() as tmp:
        arms = _arms(args, requests, Path(tmp))
    forwards: dict[str, list[int]] = {name: [] for name in arms}
    cpu: dict[str, list[float]] = {name: [] for name in arms}
    calls = {
        name: counted_forwards(lm, _all(lm, requests), forwards[name], cpu[name])
        for name, lm in arms.items()
    }
    with torch.no_grad():
        outputs = {name: call() for name, call in calls.items()}  # also the warm-up
        for values in (*forwards.values(), *cpu.values()):
            values.clear()
        times = interleaved(calls, rounds=args.rounds, warmup=0)
    result = {
        "requests": {kind: len(reqs) for kind, reqs in requests.items()},
        "batch_size": args.batch_size,
        "units": args.neurons,
        "fixed_tokens": args.fixed_tokens,
        "per_doc_groups": _relations(requests),
        "median_seconds": {k: round(median(v), 4) for k, v in times.items()},
        "ratio_vs_hf": ratios(times, "hf"),
        "cpu_ratio_vs_hf": ratios(cpu, "hf"),
        "forwards": {name: median(counts) for name, counts in forwards.items()},
        "fold_vs_hook": _agreement(outputs["fold"], outputs["hook"]),
        "intervention_changes_outputs": {
            name: outputs[name] != outputs["hf"] for name in ("fold", "hook", "last", "per_doc")
        },
    }
    result["summary"] = _summary(result)
    return result


def _all(lm: Any, requests: dict[str, list[Any]]) -> Any:
    """One call of every request type, in a fixed order."""
    return lambda: [getattr(lm, kind)(reqs, disable_tqdm=True) for kind, reqs in requests.items()]


def _summary(result: dict[str, Any]) -> list[str]:
    ratio, cpu = result["ratio_vs_hf"], result["cpu_ratio_vs_hf"]
    tokens = result["fixed_tokens"] or "the tasks' stop sequences"
    return [
        f"requests: {result['requests']}, batch size {result['batch_size']}, "
        f"{result['units']} units deactivated (per_doc: {result['units']} per relation of "
        f"{result['per_doc_groups']}); generations: {tokens} tokens per row",
        "median seconds: " + ", ".join(f"{k} {v:.3f}" for k, v in result["median_seconds"].items()),
        f"model forwards per call: {result['forwards']}",
        f"intervention vs hf on the same path (wall / CPU): folded {ratio['fold']:.3f} / "
        f"{cpu['fold']:.3f} (goal <= 1.02), hooked {ratio['hook']:.3f} / {cpu['hook']:.3f}, "
        f"positions=last {ratio['last']:.3f} / {cpu['last']:.3f}, per_doc "
        f"{ratio['per_doc']:.3f} / {cpu['per_doc']:.3f} (goal <= 1.10 with hooks)",
        f"end to end: relneuron-hf's defaults (prefix cache on, no intervention) "
        f"{ratio['rn_default']:.3f} / {cpu['rn_default']:.3f} of hf",
        f"resolution: a second plain hf model, loaded last, runs at {ratio['hf_again']:.3f} / "
        f"{cpu['hf_again']:.3f} of the first; ratios closer to 1 than that are not measurable",
    ]


def _agreement(a: list[list[Any]], b: list[list[Any]]) -> dict[str, Any]:
    """How closely two arms' outputs agree: loglikelihood gap and equal generations."""
    gaps, same_text = [0.0], True
    for x_kind, y_kind in zip(a, b, strict=True):
        for x, y in zip(x_kind, y_kind, strict=True):
            if isinstance(x, tuple):
                gaps.append(abs(x[0] - y[0]))
            else:
                same_text &= x == y
    return {"max_loglikelihood_gap": max(gaps), "generations_identical": same_text}
