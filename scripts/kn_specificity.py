"""Fact-specificity (own - swapped) of knowledge-neuron sets on the two-hop chains, and
the partial numbers of a reasoning report that has not finished.

``--kn-set SET [--refine drop-shared=10]``: evaluates only what own - swapped needs
(base, the set's own and its swapped neurons, suppressed and/or enhanced) through the
report's Runner, in the runs folder given (shared with the report, so base and own runs
are reused), and writes ``specificity.json``. ``--summarize`` evaluates nothing: it
reads whatever runs exist and prints the reasoning analysis so far.

Used by docs/report-kn-v2 and docs/report-kn-gemma (settings.yaml); resumable (every finished variant is saved).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from relneuron_eval.atomic import atomic_write
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.report.reasoning import TASKS


def _args(argv: list[str]) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--model", default="smollm2-135m", help="pretrained (an embedded model or path)")
    p.add_argument("--kn-set", required=True)
    p.add_argument("--refine", default=None, help="drop-shared=N or drop-objects=N")
    p.add_argument("--out", required=True, help="folder for the refined set and its controls")
    p.add_argument("--runs", required=True, help="the runs folder (shared with the report)")
    p.add_argument("--modes", default="deactivate", help="deactivate,enhance")
    p.add_argument("--tasks", default=",".join(TASKS), help="two-hop tasks to evaluate")
    p.add_argument("--summarize", action="store_true", help="evaluate nothing; print")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--batch-size", default="32")
    return p.parse_args(argv)


def _refined(path: str, spec: str | None, out: Path) -> str:
    """The set to measure: the given one, or its refinement (saved under ``out``)."""
    if not spec:
        return path
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.discovery.kn_transform import transform_set

    name, _, value = spec.partition("=")
    if name not in ("drop-shared", "drop-objects") or not value.isdigit():
        raise RelNeuronError(f"--refine: drop-shared=N or drop-objects=N, got {spec!r}")
    refined = transform_set(load(path), **{name.replace("-", "_"): int(value)})
    target = out / f"knowledge_neurons_{name}{value}.jsonl.gz"
    refined.save(target)
    return str(target)


def main(argv: list[str]) -> int:
    from relneuron_eval.evaluation.runner import LMEvaluator, Runner, Variant
    from relneuron_eval.harness.task_data import task_fingerprint
    from relneuron_eval.report import reasoning
    from relneuron_eval.report.command import add_arguments, build_setup, task_manager
    from relneuron_eval.report.setup import KN_MODES

    a = _args(argv)
    out = Path(a.out)
    out.mkdir(parents=True, exist_ok=True)
    kn_path = _refined(a.kn_set, a.refine, out)
    parser = argparse.ArgumentParser()
    add_arguments(parser)
    args = parser.parse_args(
        [
            "--model", a.model, "--kn-set", kn_path, "--out", str(out), "--seeds", "0",
            "--metric", "acc_match", "--experiments", "reasoning", "--reasoning-limit", "none",
            "--threads", str(a.threads), "--no-progress",
        ]
    )  # fmt: skip
    setup, _ = build_setup(args)
    modes = [m for m in a.modes.split(",") if m]
    if a.summarize:
        evaluate = None
    else:
        import torch

        torch.set_num_threads(a.threads)
        bs = int(a.batch_size) if a.batch_size.isdigit() else a.batch_size
        evaluate = LMEvaluator(
            a.model, task_manager=task_manager(), device="cpu", dtype="float32",
            batch_size=bs,
        )  # fmt: skip
    runner = Runner(Path(a.runs), setup.model_key, evaluate, progress=False,
                    fingerprint=task_fingerprint)  # fmt: skip
    if evaluate is not None:
        tasks = [t for t in a.tasks.split(",") if t]
        assert set(tasks) <= set(TASKS), tasks
        docs = {t: reasoning.chain_docs(setup) for t in tasks}
        named = reasoning.named_variants(setup)
        runner.request(Variant.base(), tasks, docs)
        for mode in modes:
            assert mode in KN_MODES, mode
            runner.request(setup.kn(mode), tasks, docs)
            runner.request(named[("swapped", mode)], tasks, docs)
        runner.run()
    result = reasoning.analyze_reasoning(setup, runner)
    result["kn_set"] = kn_path
    result["refine"] = a.refine
    with atomic_write(out / "specificity.json") as handle:
        json.dump(result, handle, indent=1, default=str)
    for name, m in result["measures"].items():
        for mode in modes:
            s = m["all"][mode]["specificity"]
            own = m["all"][mode]["own"]
            if s is None or own is None:
                print(f"{name:14} {mode:10} not run yet")
                continue
            print(
                f"{name:14} {mode:10} base {s['base']:.3f} own {s['own']:.3f} swapped "
                f"{s['swapped']:.3f} own-swapped {s['own_minus_swapped']:+.3f} "
                f"CI {s['ci']} p {s['p']:.4f} n {s['n']}"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
