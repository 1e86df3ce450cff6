"""Run-time cost of an intervention: relneuron-hf (folded, hooked) vs plain hf.

The same lm-eval requests (built by the real tasks) go through models of the same
checkpoint and batch size: plain ``hf``; ``relneuron-hf`` with a seeded random
3,000-unit ``mlp.act`` deactivation folded into the weights (``fold``), the same
deactivation with forward hooks (``hook``), only at the last prompt token
(``positions=last``, hooks by necessity), and per document (``per_doc=relation``: each
document gets the 3,000 units of its own relation's group, batched), plus a second
plain ``hf`` loaded last, whose ratio to the first shows what the machine can resolve.
Model loading is not timed; each arm's ``loglikelihood`` / ``generate_until`` calls are, interleaved
over several rounds.
"""

from __future__ import annotations

import argparse
import random
import tempfile
from pathlib import Path
from typing import Any

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


def _requests(tasks: list[str], include_path: str | None, limit: int) -> dict[str, list[Any]]:
    """The requests lm-eval would send for these tasks, grouped by request type."""
    from lm_eval.tasks import get_task_dict

    from relneuron_eval.harness.task_index import manager as task_manager

    manager = task_manager([include_path] if include_path else [])
    by_type: dict[str, list[Any]] = {}
    for task in get_task_dict(tasks, manager).values():
        task.build_all_requests(limit=limit, rank=0, world_size=1)
        for instance in task.instances:
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


def run(args: argparse.Namespace) -> dict[str, Any]:
    from lm_eval.models.huggingface import HFLM

    from relneuron_eval.core.embedded import resolve_pretrained
    from relneuron_eval.harness.lm_model import RelNeuronLM

    pretrained = str(resolve_pretrained(args.model))
    requests = _requests([t for t in args.tasks.split(",") if t], args.include_path, args.limit)
    relations = _relations(requests)
    common = {"pretrained": pretrained, "batch_size": args.batch_size, "device": args.device}
    plain = HFLM(**common, dtype="float32")
    with tempfile.TemporaryDirectory() as tmp:
        path = _random_set(plain.model, args.neurons, relations, Path(tmp) / "random.jsonl")
        variant = {**common, "dtype": "float32", "neuron_set": str(path)}
        one = {**variant, "groups": relations[0]}
        arms = {
            "hf": plain,
            "fold": RelNeuronLM(**one, strategy="fold"),
            "hook": RelNeuronLM(**one, strategy="hook"),
            "last": RelNeuronLM(**one, positions="last"),
            "per_doc": RelNeuronLM(**variant, per_doc="relation"),
            # a second plain model, loaded last: its ratio to ``hf`` is the resolution of
            # this measurement (same computation; only load order and memory placement)
            "hf_again": HFLM(**common, dtype="float32"),
        }

    def evaluate(lm: Any) -> Any:
        return lambda: [
            getattr(lm, kind)(reqs, disable_tqdm=True) for kind, reqs in requests.items()
        ]

    outputs = {name: evaluate(lm)() for name, lm in arms.items()}
    times = interleaved({name: evaluate(lm) for name, lm in arms.items()}, rounds=args.rounds)
    ratio = ratios(times, "hf")
    counts = {kind: len(reqs) for kind, reqs in requests.items()}
    return {
        "requests": counts,
        "batch_size": args.batch_size,
        "units": args.neurons,
        "per_doc_groups": relations,
        "median_seconds": {k: round(median(v), 4) for k, v in times.items()},
        "ratio_vs_hf": ratio,
        "fold_vs_hook": _agreement(outputs["fold"], outputs["hook"]),
        "intervention_changes_outputs": {
            name: outputs[name] != outputs["hf"] for name in arms if not name.startswith("hf")
        },
        "summary": [
            f"requests: {counts}, batch size {args.batch_size}, {args.neurons} units deactivated"
            f" (per_doc: {args.neurons} per relation of {relations})",
            "median seconds: " + ", ".join(f"{k} {median(v):.3f}" for k, v in times.items()),
            f"ratio vs hf: folded {ratio['fold']:.3f} (goal <= 1.02), hooked {ratio['hook']:.3f}, "
            f"positions=last {ratio['last']:.3f}, per_doc {ratio['per_doc']:.3f} "
            "(goal <= 1.10 with hooks)",
            f"resolution: a second plain hf model, loaded last, runs at {ratio['hf_again']:.3f} "
            "of the first; ratios closer to 1 than that are not measurable here",
        ],
    }


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
