"""``relneuron report``: do the papers' properties hold on a model and its neuron sets?

Runs the experiments of the relation-specific neurons paper (cumulativity, versatility,
interference) and the knowledge-neuron reasoning-recall experiment as ordinary lm-eval
evaluations of ``relneuron-hf`` variants of one loaded model, each deactivation next to
size-matched random controls, and writes ``report.md``, PNG figures and
``results.json`` (every number of the markdown) into ``--out``. Evaluations are cached
per (variant, task, documents) in ``--out/runs``: an interrupted report resumes, and a
later report with more experiments reuses what it shares.

Everything is validated (neuron-set groups vs relations, the k grid, control draws,
tasks, model shape) before the model is loaded.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import shlex
import sys
import time
from pathlib import Path
from typing import Any

from relneuron_eval.core.arglists import parse_named, parse_names
from relneuron_eval.core.models import shipped_set
from relneuron_eval.data.prefix_check import report_record as prefix2_record
from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.runner import Evaluate, Runner
from relneuron_eval.harness.task_data import task_fingerprint
from relneuron_eval.report.analysis import canonical_top_k, parse_ks, parse_top_ks
from relneuron_eval.report.controls import attach_matrix, eligibility_record
from relneuron_eval.report.experiments import (
    ALPHA,
    analyze_crosslingual,
    analyze_cumulativity,
    analyze_interference,
    analyze_overlap,
    analyze_reasoning,
    base_accuracy,
    base_tasks,
    cumulativity_points,
    kn_coverage,
    plan_base,
)
from relneuron_eval.report.options import HELP, add_arguments
from relneuron_eval.report.others import attach_control_sets, attach_others
from relneuron_eval.report.planning import plan_experiments
from relneuron_eval.report.setup import (
    EXPERIMENTS,
    LANGS,
    Setup,
    lang_task,
)

# The options live in report/options.py; ``HELP`` and ``add_arguments`` are this
# subcommand's interface to the CLI.
__all__ = ["HELP", "add_arguments", "build_setup", "run", "run_report", "write_outputs"]


# ================================================================ validation
def _csv(text: str) -> list[str]:
    return parse_names(text) or []


def _limit(text: str, name: str) -> int | None:
    if str(text).strip().lower() in ("none", "all"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise RelNeuronError(f"{name}: not an integer: {text!r}", hint="e.g. 20, or none") from None
    if value < 1:
        raise RelNeuronError(f"{name} must be positive, got {value}")
    return value


def _subset(spec: str, relations: list[str], name: str) -> list[str] | int:
    text = spec.strip().lower()
    if text == "all":
        return list(relations)
    if text.startswith("auto"):
        _, _, number = text.partition(":")
        try:
            n = int(number or 3)
        except ValueError:
            raise RelNeuronError(f"{name}: expected auto:N, got {spec!r}") from None
        if n < 1:
            raise RelNeuronError(f"{name}: N in auto:N must be positive")
        return n
    names = _csv(spec)
    missing = [r for r in names if r not in relations]
    if missing:
        raise RelNeuronError(
            f"{name}: {missing} not among the report's relations",
            hint=f"report relations: {', '.join(relations)}",
        )
    return names


def _available_tasks() -> set[str]:
    """Task names in the shipped folder (one cheap TaskManager without lm-eval's own)."""
    return set(task_manager().all_tasks)


def task_manager() -> Any:
    """The shipped tasks only (cached per process by ``task_index``)."""
    from relneuron_eval.harness.task_index import manager

    return manager()


def _relations(args: argparse.Namespace, groups: list[str], tasks: set[str], path: str):
    from relneuron_eval.data.facts import RELATIONS
    from relneuron_eval.evaluation.metrics import is_multiple_choice, metric_task

    def has_task(r: str) -> bool:
        return metric_task(args.metric, r)[0] in tasks

    notes = []
    if args.relations.strip().lower() == "all":
        relations = [g for g in groups if g in RELATIONS and has_task(g)]
        ignored = [g for g in groups if g not in relations]
        if ignored:
            why = "no relation task" + (" (mc)" if is_multiple_choice(args.metric) else "")
            notes.append(f"neuron-set groups without a {why}, left out: {', '.join(ignored)}")
        missing = [r for r in RELATIONS if r not in groups]
        if missing:
            notes.append(f"relations without neurons in the set: {', '.join(missing)}")
    else:
        relations = _csv(args.relations)
        absent = [r for r in relations if r not in groups]
        if absent:
            raise RelNeuronError(
                f"relation(s) {absent} are not groups of the neuron set",
                path=path,
                hint=f"groups in the set: {', '.join(groups[:40])}",
            )
        no_task = [r for r in relations if not has_task(r)]
        if no_task:
            mc = is_multiple_choice(args.metric)
            hint = "use --metric acc_prefix2" if mc else "check the names"
            raise RelNeuronError(f"no relfacts task for {no_task}", hint=hint)
    if not relations:
        raise RelNeuronError(
            "no relation of the neuron set has a relfacts task",
            path=path,
            hint="groups must be relation names such as company_hq",
        )
    return list(dict.fromkeys(relations)), notes


def _check_model_shape(model: str, neuron_set: Any) -> None:
    """Compare the set's sizes with the model's config (no weights are loaded)."""
    from relneuron_eval.core.neuron_set import ModelShape

    try:
        from transformers import AutoConfig

        from relneuron_eval.core.embedded import resolve_pretrained

        config = AutoConfig.from_pretrained(resolve_pretrained(model))
        shape = ModelShape(
            int(config.num_hidden_layers), int(config.intermediate_size), int(config.hidden_size)
        )
    except RelNeuronError:
        raise
    except (AttributeError, TypeError):
        return  # unusual config names: check_model catches a mismatch at load time
    except (OSError, ValueError) as exc:
        raise RelNeuronError(f"cannot read the config of model {model!r}: {exc}") from None
    neuron_set.check_shape(shape, model_name=model)


def build_setup(args: argparse.Namespace, *, check_model: bool = True) -> tuple[Setup, list[str]]:
    """Validate every argument and file; return the setup and notes for the report."""
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.resources import resolve_shipped

    experiments = EXPERIMENTS if args.experiments.strip() == "all" else _csv(args.experiments)
    unknown = [e for e in experiments if e not in EXPERIMENTS]
    if unknown or not experiments:
        raise RelNeuronError(
            f"unknown experiment(s) {unknown}", hint=f"choose from {', '.join(EXPERIMENTS)}"
        )
    experiments = [e for e in EXPERIMENTS if e in experiments]
    top_ks = parse_top_ks(args.top_k)
    if not 0.0 <= args.min_base < 1.0:
        raise RelNeuronError(f"--min-base must be in [0, 1), got {args.min_base}")
    _check_control_options(args)
    try:
        seeds = [int(s) for s in _csv(args.seeds)]
    except ValueError:
        raise RelNeuronError(f"--seeds: integers separated by commas, got {args.seeds!r}") from None
    if not seeds or len(set(seeds)) != len(seeds):
        raise RelNeuronError("--seeds must list at least one seed, each once")
    ks = parse_ks(args.ks)
    limit = _limit(args.limit, "--limit")
    reasoning_limit = _limit(args.reasoning_limit, "--reasoning-limit")
    limit_own = _limit(args.limit_own, "--limit-own")
    langs_wanted = _csv(args.langs)
    bad = [lang for lang in langs_wanted if lang not in LANGS]
    if bad:
        raise RelNeuronError(f"--langs: unknown {bad}", hint=f"choose from {', '.join(LANGS)}")

    set_arg = args.neuron_set or shipped_set(args.model, "relation_specific.jsonl.gz")
    set_path = str(resolve_shipped(set_arg))
    neuron_set = load(set_path)
    tasks = _available_tasks()
    relations, notes = _relations(args, neuron_set.groups(), tasks, set_path)

    setup = Setup(
        model=args.model,
        model_key={"model": args.model, "dtype": args.dtype},
        out=Path(args.out),
        neuron_set_path=set_path,
        neuron_set=neuron_set,
        set_hash=neuron_set.content_hash(),
        relations=relations,
        experiments=list(experiments),
        ks=ks,
        top_k=top_ks[0],
        top_ks=top_ks,
        seeds=seeds,
        limit=limit,
        reasoning_limit=reasoning_limit,
        limit_own=limit_own,
        reasoning_chains=args.reasoning_chains,
        metric=args.metric,
        min_base=args.min_base,
        min_margin=args.min_margin,
        other_controls=args.other_controls,
        matrix=_subset(args.matrix_relations, relations, "--matrix-relations"),
        cumulativity=_subset(args.cumulativity_relations, relations, "--cumulativity-relations"),
    )
    notes += setup.size_notes()
    _setup_control_sets(setup, args.control_set)
    if "versatility" in experiments:
        for r in relations:
            langs = [lang for lang in langs_wanted if lang_task(lang, r) in tasks]
            if langs and f"relfacts_{r}" in tasks:
                setup.langs[r] = langs
    if "reasoning" in experiments:
        _setup_reasoning(setup, args, set_path)
    _check_controls(setup)
    missing = [t for t in base_tasks(setup) if t not in tasks]
    if missing:
        raise RelNeuronError(f"task(s) not found: {missing}", hint="run `relneuron taskgen`")
    if check_model:
        _check_model_shape(args.model, neuron_set)
        if setup.kn_set is not None:
            _check_model_shape(args.model, setup.kn_set)
    return setup, notes


def _setup_reasoning(setup: Setup, args: argparse.Namespace, set_path: str) -> None:
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.resources import resolve_shipped

    if args.kn_set:
        kn_path = str(resolve_shipped(args.kn_set))
    else:
        sibling = Path(set_path).with_name("knowledge_neurons.jsonl.gz")
        if not sibling.is_file():
            raise RelNeuronError(
                "the reasoning experiment needs a knowledge-neuron set",
                hint=f"pass --kn-set, or leave reasoning out of --experiments (looked for {sibling})",
            )
        kn_path = str(sibling)
    setup.kn_set_path = kn_path
    setup.kn_set = load(kn_path)
    setup.kn_hash = setup.kn_set.content_hash()
    coverage = kn_coverage(setup)
    if coverage["n_with_neurons"] == 0:
        raise RelNeuronError(
            "no evaluated two-hop chain has knowledge neurons for its bridge fact",
            path=kn_path,
            hint="groups must be bridge fact ids such as landmark_in_country/5 "
            "(relneuron find knowledge-neurons --twohop-bridges)",
        )
    folder = setup.out / "control_sets"
    for seed in setup.seeds:
        control = setup.kn_set.random_control(seed)
        path = folder / f"knowledge_neurons_random_s{seed}.jsonl.gz"
        setup.kn_controls[seed] = (str(path), control.content_hash())
        setup.kn_control_sets[seed] = control


def _check_control_options(args: argparse.Namespace) -> None:
    if not 0.0 <= args.min_margin < 1.0:
        raise RelNeuronError(f"--min-margin must be in [0, 1), got {args.min_margin}")
    if args.other_controls < 0:
        raise RelNeuronError(f"--other-controls must be >= 0, got {args.other_controls}")


def _setup_control_sets(setup: Setup, specs: list[str]) -> None:
    """``NAME=PATH`` neuron sets with a group for every report relation."""
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.resources import resolve_shipped

    for spec in specs:
        name, path = parse_named(spec, "--control-set")
        if name in setup.control_sets or name in ("base", "deact", "control"):
            raise RelNeuronError(f"--control-set: the name {name!r} is used twice or reserved")
        resolved = str(resolve_shipped(path))
        neuron_set = load(resolved)
        missing = [r for r in setup.relations if r not in neuron_set.groups()]
        if missing:
            raise RelNeuronError(
                f"control set {name!r} has no group for {missing}",
                path=resolved,
                hint="its groups must be the report's relations",
            )
        setup.control_sets[name] = (resolved, neuron_set.content_hash(), neuron_set)


def _check_controls(setup: Setup) -> None:
    """Every selection and random control the report will use can be drawn."""
    ks: list[Any] = setup.all_top_ks()
    if "cumulativity" in setup.experiments:
        ks += setup.ks
    for r in setup.relations:
        for k in ks:
            top_k = canonical_top_k(k, setup.group_size(r))
            selection = setup.neuron_set.select([r], top_k=top_k)
            for seed in setup.seeds:
                try:
                    selection.random_control(seed)
                except RelNeuronError as exc:
                    raise RelNeuronError(
                        f"{r}, top_k={top_k or 'all'}: {exc.message}", hint=exc.hint
                    ) from None
        if "cumulativity" in setup.experiments:
            cumulativity_points(setup, r)


# ================================================================ the report
def run_report(
    setup: Setup,
    evaluate: Evaluate,
    *,
    notes: list[str] | None = None,
    progress: bool = True,
    settings: dict[str, Any] | None = None,
    command: str | None = None,
    fingerprint: Any = task_fingerprint,
) -> tuple[dict[str, Any], Runner]:
    """Plan, evaluate (what is not cached), analyse and write the report files."""
    started = time.perf_counter()
    notes = list(notes or [])
    setup.save_controls()
    runner = Runner(
        setup.out / "runs", setup.model_key, evaluate, progress=progress, fingerprint=fingerprint
    )
    plan_base(setup, runner)
    runner.run()  # with another process on the same --out: waits for its base results
    base = base_accuracy(setup, runner)
    matrix, cumul = plan_experiments(setup, runner, base)
    runner.run()

    results: dict[str, Any] = {"base": base}
    results["prefix2_check"] = prefix2_record(setup.model, setup.relations)
    if "interference" in setup.experiments:
        results["interference"] = analyze_interference(setup, runner, matrix)
        more = setup.all_top_ks()[1:]
        if more:
            results["interference_more_k"] = [
                analyze_interference(setup, runner, matrix, k) for k in more
            ]
        for inter in [results["interference"], *results.get("interference_more_k", [])]:
            attach_others(setup, runner, inter)
            attach_control_sets(setup, runner, inter)
            attach_matrix(setup, inter, ALPHA)
            inter["eligibility"] = eligibility_record(setup, inter)
    if "cumulativity" in setup.experiments:
        if cumul:
            results["cumulativity"] = analyze_cumulativity(setup, runner, cumul)
        else:
            notes.append(f"cumulativity: no relation has base accuracy >= {setup.min_base}")
    if "versatility" in setup.experiments:
        results["versatility"] = {"overlap": analyze_overlap(setup)}
        if setup.langs:
            results["versatility"]["crosslingual"] = analyze_crosslingual(setup, runner)
    if "reasoning" in setup.experiments:
        results["reasoning"] = analyze_reasoning(setup, runner)
    results["meta"] = _meta(setup, runner, notes, settings or {}, started)
    results["meta"]["command"] = command
    write_outputs(setup.out, results)
    return results, runner


def _meta(
    setup: Setup, runner: Runner, notes: list[str], settings: dict[str, Any], started: float
) -> dict[str, Any]:
    from relneuron_eval import __version__

    compute = sum(run.seconds or 0.0 for run in runner.all_runs())
    return {
        "model": setup.model,
        "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "package_version": __version__,
        "neuron_set": {
            "path": setup.neuron_set_path,
            "sha256": setup.set_hash,
            "method": setup.neuron_set.method,
            "sizes": {r: setup.group_size(r) for r in setup.relations},
        },
        "kn_set": None
        if setup.kn_set is None
        else {
            "path": setup.kn_set_path,
            "sha256": setup.kn_hash,
            "method": setup.kn_set.method,
            "groups": len(setup.kn_set.groups()),
            "neurons": len(setup.kn_set),
            "controls": {str(s): p for s, (p, _) in setup.kn_controls.items()},
        },
        "relations": setup.relations,
        "experiments": setup.experiments,
        "metric": setup.metric,
        "limit": setup.limit,
        "limit_own": setup.limit_own,
        "reasoning_limit": setup.reasoning_limit,
        "reasoning_chains": setup.reasoning_chains,
        "top_k": setup.top_k,
        "top_ks": setup.all_top_ks(),
        "ks": [str(k) for k in setup.ks],
        "seeds": setup.seeds,
        "min_base": setup.min_base,
        "min_margin": setup.min_margin,
        "other_controls": setup.other_controls,
        "settings": settings,
        "notes": notes,
        "evaluations": {
            "lm_eval_calls": runner.calls,
            "task_results_computed": runner.evaluated,
            "task_results_reused": runner.reused,
        },
        "wall_seconds": round(time.perf_counter() - started, 1),
        "compute_seconds": round(compute, 1),
    }


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """Figures first, then results.json and report.md (each written atomically)."""
    from relneuron_eval.atomic import atomic_write
    from relneuron_eval.report.markdown import headline, render
    from relneuron_eval.report.markdown_interference import headline_for
    from relneuron_eval.report.plots import make_figures

    results["headline"] = headline(results)
    for inter in results.get("interference_more_k") or []:
        inter["headline"] = headline_for(inter, results.get("meta", {}))
    results["figures"] = make_figures(results, out)
    with atomic_write(out / "results.json") as handle:
        json.dump(results, handle, indent=1, ensure_ascii=False, default=str)
        handle.write("\n")
    with atomic_write(out / "report.md") as handle:
        handle.write(render(results))


def default_device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def run(args: argparse.Namespace) -> int:
    from relneuron_eval.evaluation.runner import LMEvaluator

    started = time.perf_counter()
    setup, notes = build_setup(args)
    if args.plan_only:
        from relneuron_eval.report.planning import plan_report, render_plan

        print(render_plan(setup, plan_report(setup)))
        return 0
    batch_size: int | str = args.batch_size
    if str(batch_size).isdigit():
        batch_size = int(batch_size)
    elif batch_size != "auto":
        raise RelNeuronError(f"--batch-size: an integer or auto, got {batch_size!r}")
    device = args.device or default_device()
    if args.threads is not None:
        if args.threads < 1:
            raise RelNeuronError(f"--threads must be positive, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    evaluator = LMEvaluator(
        args.model,
        task_manager=task_manager(),
        device=device,
        dtype=args.dtype,
        batch_size=batch_size,
    )
    settings = {
        "device": device,
        "dtype": args.dtype,
        "batch_size": batch_size,
        "threads": args.threads or "default",
    }
    results, runner = run_report(
        setup,
        evaluator,
        notes=notes,
        progress=not args.no_progress,
        settings=settings,
        command=shlex.join(["relneuron", *sys.argv[1:]]),
    )
    seconds = time.perf_counter() - started
    print(
        f"report written to {setup.out / 'report.md'} ({runner.calls} lm-eval calls, "
        f"{runner.evaluated} task results computed, {runner.reused} reused, {seconds:.0f} s)",
        file=sys.stderr,
    )
    if results.get("headline"):
        print(results["headline"])
    return 0
