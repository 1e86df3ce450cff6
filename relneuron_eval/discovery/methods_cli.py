"""``relneuron find diffmean|activation-magnitude|attribution-patching|random-matched``.

The leaderboard's methods as ``find`` subcommands. Each writes a v1 neuron set from the
discovery split only, with the prompting of ``relation-specific`` (the same
``discovery_prompts``), validates its arguments before the model loads, refuses to
overwrite without ``--force``, resumes from its work folder and shards over the
processes of ``accelerate launch``. ``diffmean``, ``activation-magnitude`` and
``random-matched`` read the same token-mean store: give them one ``--workdir`` and
``--keep-workdir`` and the activation pass runs once for all three.
"""

from __future__ import annotations

import argparse
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

from relneuron_eval.errors import RelNeuronError

STORE_METHODS = ("diffmean", "activation-magnitude", "random-matched")
METHODS = (*STORE_METHODS, "attribution-patching")
HELPS = {
    "diffmean": "|mean output on r's prompts - on the others'| per unit (AxBench's DiffMean)",
    "activation-magnitude": "largest mean |output| on r's prompts (is specific more than active?)",
    "attribution-patching": "gradient x activation of the gold answer's log-prob (Kramár et al.)",
    "random-matched": "random units matched per layer and site on activation statistics",
}


def add_parsers(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """Register the four subcommands (``common``: the options every method shares)."""
    for name in METHODS:
        parser = sub.add_parser(name, help=HELPS[name], description=HELPS[name])
        common(parser)
        _pass_arguments(parser, all_by_default=name == "random-matched")
        if name == "random-matched":
            parser.add_argument(
                "--reference",
                required=True,
                help="the neuron set to match (each group's units, in score order)",
            )
            parser.add_argument(
                "--pool", type=int, default=5, help="draw among this many nearest free units"
            )


def _pass_arguments(parser: argparse.ArgumentParser, all_by_default: bool) -> None:
    parser.add_argument(
        "--top-k",
        type=int,
        default=None if all_by_default else 3000,
        help="units kept per relation"
        + (" (default: all of the reference's)" if all_by_default else ""),
    )
    parser.add_argument(
        "--sites",
        default="mlp.gate_proj,mlp.up_proj,mlp.down_proj",
        help="comma-separated sites (relation-specific's default)",
    )
    parser.add_argument(
        "--average-over",
        default="query",
        choices=["query", "prompt"],
        help="token-mean over the query line only, or the whole prompt",
    )
    parser.add_argument(
        "--max-facts",
        type=int,
        default=None,
        help="seeded sample of at most N facts per relation (default: every fact)",
    )
    parser.add_argument("--batch-size", type=int, default=16, help="prompts per forward pass")
    parser.add_argument(
        "--store-dtype", default="float32", choices=["float32", "float16"], help="store dtype"
    )
    parser.add_argument(
        "--keep-workdir",
        action="store_true",
        help="keep the work folder (another method can reuse its activation pass)",
    )


def pass_config(args: argparse.Namespace) -> Any:
    from relneuron_eval.discovery.simple_methods import PassConfig, validate_pass

    config = PassConfig(
        top_k=args.top_k if args.top_k is not None else 1,
        sites=tuple(s.strip() for s in args.sites.split(",") if s.strip()),
        average_over=args.average_over,
        batch_size=args.batch_size,
        store_dtype=args.store_dtype,
    )
    validate_pass(config)
    return config


def run(args: argparse.Namespace, out: Path, workdir: Path) -> int:
    """Validate, load, find, save; print what was written."""
    from relneuron_eval.discovery.cli import _auto, _distributed, load_model
    from relneuron_eval.discovery.data import base_facts_only, discovery_prompts, resolve_relations

    config = pass_config(args)
    if args.max_facts is not None and args.max_facts < 1:
        raise RelNeuronError(f"--max-facts must be positive, got {args.max_facts}")
    if args.method == "random-matched":
        from relneuron_eval.core.neuron_set import load

        load(args.reference)  # a bad reference fails before the model loads
        if args.pool < 1:
            raise RelNeuronError(f"--pool must be >= 1, got {args.pool}")
    relations = resolve_relations(args.relations)
    if args.facts == "base":
        relations = base_facts_only(relations)
    if len(relations) < 2 and args.method == "diffmean":
        raise RelNeuronError("diffmean needs at least 2 relations (it compares with the others)")
    prompts = discovery_prompts(
        relations, fewshot=args.fewshot, seed=args.seed, max_facts=args.max_facts, demos=args.demos
    )
    rank, world, barrier, device = _distributed(cpu=(args.device or "").startswith("cpu"))
    model, tokenizer, model_id = load_model(
        args.model, args.device or device or _auto(), args.dtype
    )
    data = _data_record(args, relations)
    neuron_set = find(
        args.method,
        model,
        tokenizer,
        prompts,
        workdir,
        config,
        model_id=model_id,
        data=data,
        rank=rank,
        world_size=world,
        barrier=barrier,
        progress=not args.no_progress,
        stop_after=args.stop_after,
        reference=getattr(args, "reference", None),
        top_k=args.top_k,
        seed=args.seed,
        pool=getattr(args, "pool", 5),
    )
    if neuron_set is None:
        return 0
    neuron_set.save(out)
    if not args.keep_workdir:
        shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {out} ({len(neuron_set)} neurons, {len(neuron_set.groups())} groups)")
    return 0


def _data_record(args: argparse.Namespace, relations: dict) -> dict[str, Any]:
    from relneuron_eval.discovery.data import fewshot_record, spec_record

    return {
        "relations": list(relations),
        "source": "relneuron_eval.data.facts",
        "max_facts_per_relation": args.max_facts,
        "facts": args.facts,
        "fewshot": fewshot_record(relations, args.fewshot),
        "demos": args.demos,
        "seed": args.seed,
        **spec_record(args.relations),
    }


def find(
    method: str,
    model: Any,
    tokenizer: Any,
    prompts: list,
    workdir: Path,
    config: Any,
    *,
    model_id: str | None,
    data: dict,
    rank: int = 0,
    world_size: int = 1,
    barrier: Callable | None = None,
    progress: bool = True,
    stop_after: int | None = None,
    reference: str | None = None,
    top_k: int | None = None,
    seed: int = 0,
    pool: int = 5,
) -> Any:
    """One method's neuron set (None on ranks other than 0); the leaderboard calls this."""
    from relneuron_eval.discovery import simple_methods as sm

    common = dict(
        rank=rank, world_size=world_size, barrier=barrier, progress=progress, stop_after=stop_after
    )
    if method == "attribution-patching":
        from relneuron_eval.discovery.attribution import find_attribution_patching

        return find_attribution_patching(
            model, tokenizer, prompts, workdir, config, model_id=model_id, data=data, **common
        )
    store, card, _ = sm.token_mean_store(
        model, tokenizer, prompts, workdir, config, model_id=model_id, **common
    )
    if store is None:
        return None
    if method == "random-matched":
        from relneuron_eval.discovery.matched_random import find_matched

        assert reference is not None
        return find_matched(reference, store, prompts, top_k=top_k, seed=seed, pool=pool)
    return sm.find_simple(method, store, prompts, config, card, data)
