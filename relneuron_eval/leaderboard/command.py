"""``relneuron leaderboard``: which neuron-finding method finds the units of a relation?

Runs every method of a committed settings file (discovery split only), then for each
method and budget two lm-eval passes over every relation's test documents (Cause with
``per_doc=relation``, Isolate with a deranged set), and writes ``leaderboard.md``,
``leaderboard.json``, ``leaderboard.png`` and a self-contained ``leaderboard.html``.
Resumable: run the same command again after an interruption; two processes with the
same ``--out`` share the work (discovery steps and evaluations are claimed).
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

from relneuron_eval.errors import RelNeuronError

HELP = "score neuron-finding methods per relation and budget (Cause, Isolate, Disentangle)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--settings",
        default="docs/leaderboard/settings.yaml",
        help="settings YAML (methods, budgets, relations, metric), committed before the run",
    )
    parser.add_argument("--out", required=True, help="output folder (also the cache)")
    parser.add_argument(
        "--add",
        action="append",
        default=[],
        metavar="[NAME=]SET",
        help="score a neuron set of your own like the built-in methods (repeatable)",
    )
    parser.add_argument(
        "--limit", type=int, default=None, help="first N test documents per relation (default: all)"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, ... (default: auto)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    parser.add_argument("--batch-size", default="32", help="lm-eval batch size (or auto)")
    parser.add_argument(
        "--threads", type=int, default=None, help="torch threads (default: torch's)"
    )
    parser.add_argument(
        "--discover-only", action="store_true", help="find the methods' sets, evaluate nothing"
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")


def _added(settings: Any, items: list[str]) -> None:
    """Append ``--add`` sets as methods (checked: readable, a new name)."""
    from relneuron_eval.core.neuron_set import load
    from relneuron_eval.leaderboard.settings import MethodSpec

    for item in items:
        name, sep, path = item.partition("=")
        if not sep:
            path, name = item, Path(item).name.split(".")[0]
        if any(m.name == name for m in settings.methods):
            raise RelNeuronError(
                f"--add {item}: a method named {name!r} is already on the board",
                hint="name it: --add NAME=FILE",
            )
        load(path)  # a bad file fails now, with its line
        settings.methods.append(MethodSpec(name=name, set=path))


def run(args: argparse.Namespace) -> int:
    from relneuron_eval.leaderboard.discover import Context, run_discovery
    from relneuron_eval.leaderboard.settings import load_settings

    started = time.perf_counter()
    settings = load_settings(args.settings)
    _added(settings, args.add)
    if args.limit is not None and args.limit < 1:
        raise RelNeuronError(f"--limit must be positive, got {args.limit}")
    batch_size: int | str = (
        int(args.batch_size) if str(args.batch_size).isdigit() else args.batch_size
    )
    if batch_size != "auto" and not isinstance(batch_size, int):
        raise RelNeuronError(f"--batch-size: an integer or auto, got {args.batch_size!r}")
    if args.threads is not None:
        if args.threads < 1:
            raise RelNeuronError(f"--threads must be positive, got {args.threads}")
        import torch

        torch.set_num_threads(args.threads)
    device = args.device or _auto()
    out = Path(args.out)
    ctx = Context(settings, out, device, args.dtype, not args.no_progress, sys.stderr)
    found = run_discovery(ctx)
    if args.discover_only:
        print(f"discovery done: {', '.join(found)} in {out / 'sets'}")
        return 0
    results = evaluate(settings, found, args, out, device, batch_size)
    results["meta"]["wall_seconds"] = round(time.perf_counter() - started, 1)
    write_outputs(out, results)
    print(f"wrote {out / 'leaderboard.md'}, .json, .png, .html")
    return 0


def evaluate(
    settings: Any, found: dict, args: argparse.Namespace, out: Path, device: str, batch_size: Any
) -> dict[str, Any]:
    """The grid through the project's runner, then the scores."""
    from relneuron_eval.evaluation.runner import LMEvaluator, Runner
    from relneuron_eval.harness.task_data import task_fingerprint
    from relneuron_eval.harness.task_index import manager
    from relneuron_eval.leaderboard import grid
    from relneuron_eval.leaderboard.scores import summarize

    sets = grid.full_sets(found)
    relations, notes = grid.common_relations(settings, sets)
    cells = grid.build_cells(settings, found, sets, relations, out)
    docs = grid.task_docs(settings, relations, args.limit)
    evaluator = LMEvaluator(
        settings.model,
        task_manager=manager(),
        device=device,
        dtype=args.dtype,
        batch_size=batch_size,
    )
    runner = Runner(
        out / "runs",
        {"model": settings.model, "dtype": args.dtype},
        evaluator,
        progress=not args.no_progress,
        fingerprint=task_fingerprint,
    )
    grid.run_grid(runner, cells, docs)
    outcome = grid.outcomes(runner, settings, cells, docs, relations)
    methods = [m.name for m in settings.methods]
    scores = summarize(outcome, methods, settings.budgets, settings.isolate_shifts, relations)
    return {
        "scores": scores,
        "costs": {m: found[m].cost for m in methods},
        "methods": {m: _method_record(found[m]) for m in methods},
        "meta": {
            "model": settings.model,
            "metric": settings.metric,
            "limit": args.limit,
            "settings": settings.record(),
            "command": command_line(args),
            "created": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
            "device": device,
            "dtype": args.dtype,
            "batch_size": batch_size,
            "threads": args.threads or "default",
            "notes": notes,
            "evaluations": {
                "lm_eval_calls": runner.calls,
                "task_results_computed": runner.evaluated,
                "task_results_reused": runner.reused,
                "compute_seconds": round(sum(r.seconds or 0.0 for r in runner.all_runs()), 1),
            },
        },
    }


def _method_record(found: Any) -> dict[str, Any]:
    spec = found.spec
    return {
        "kind": spec.kind,
        "set": str(found.path) if spec.name != "random" else None,
        "of": spec.of,
        "seed": spec.seed,
    }


def command_line(args: argparse.Namespace) -> str:
    """The command that reproduces this leaderboard (built from the parsed options)."""
    parts = ["relneuron", "leaderboard", "--settings", args.settings, "--out", args.out]
    for item in args.add:
        parts += ["--add", item]
    for flag, value in (
        ("--limit", args.limit),
        ("--device", args.device),
        ("--dtype", args.dtype if args.dtype != "float32" else None),
        ("--batch-size", args.batch_size),
        ("--threads", args.threads),
    ):
        if value is not None:
            parts += [flag, str(value)]
    return " ".join(shlex.quote(str(p)) for p in parts)


def _auto() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def write_outputs(out: Path, results: dict[str, Any]) -> None:
    """Figure, then JSON, markdown and HTML (each written atomically)."""
    from relneuron_eval.atomic import atomic_write
    from relneuron_eval.leaderboard.html import render_html
    from relneuron_eval.leaderboard.plots import make_figure
    from relneuron_eval.leaderboard.render import render

    figure = make_figure(results, out / "leaderboard.png")
    with atomic_write(out / "leaderboard.json") as handle:
        json.dump(results, handle, indent=1, ensure_ascii=False, default=str)
        handle.write("\n")
    with atomic_write(out / "leaderboard.md") as handle:
        handle.write(render(results))
    with atomic_write(out / "leaderboard.html") as handle:
        handle.write(render_html(results, figure))
