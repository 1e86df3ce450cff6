"""``relneuron find relation-specific|knowledge-neurons``: find neurons, save a neuron set.

Both methods validate every argument before the model is loaded, refuse to overwrite
an existing output without ``--force``, write the output atomically, keep a resumable
work folder next to it while they run (run the same command again to resume after an
interruption; damaged pieces are found and computed again), and shard their prompts
over the processes of ``accelerate launch`` (the result is identical to a
single-process run). Prompts default to the tasks' prompting: each relation's
``num_fewshot`` demos from the ``fewshot`` split, the same for every prompt of it.
"""

from __future__ import annotations

import argparse
import os
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from relneuron_eval.core.arglists import parse_layers
from relneuron_eval.errors import RelNeuronError

# The default refinement of knowledge-neuron discovery, chosen by the rule that
# docs/report-kn-v2/settings.yaml fixed before any result: of the refinements measured
# there, dropping units held by facts of >= 3 different objects gave the most negative
# own - swapped on the direct two-hop answer (-14.7 pp [-21.3, -8.9] vs -9.5 unrefined).
KN_DROP_OBJECTS_DEFAULT = 3

if TYPE_CHECKING:
    from relneuron_eval.core.neuron_set import NeuronSet
    from relneuron_eval.data.facts import Relation
    from relneuron_eval.discovery.relation_specific import RelationSpecificConfig, RelationSummary

HELP = (
    "find relation-specific neurons (Liu et al. 2025) or knowledge neurons (Dai et al. 2022) "
    "and save them as a neuron set"
)


# ------------------------------------------------------------------- arguments
def _fewshot(text: str) -> int | None:
    """``--fewshot``: a number of demos, or ``task`` (None): each relation's task setting."""
    if text.strip().lower() in ("task", "tasks"):
        return None
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected a number >= 0 or 'task', got {text!r}"
        ) from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected a number >= 0 or 'task', got {text!r}")
    return value


def _common(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="pretrained path/id, or an embedded model (smollm2-135m, gemma3-270m)",
    )
    parser.add_argument(
        "--relations",
        default="all",
        help="shipped relation names (comma-separated, or all), or a spec YAML of your own",
    )
    parser.add_argument("--out", required=True, help="neuron-set file to write (.jsonl[.gz])")
    parser.add_argument("--force", action="store_true", help="overwrite an existing --out")
    parser.add_argument(
        "--workdir", default=None, help="checkpoint folder (default: next to --out)"
    )
    parser.add_argument(
        "--fewshot",
        type=_fewshot,
        default="task",
        help="few-shot demos per prompt, from the fewshot split with the prompt's template; "
        "'task': as many as the relation's lm-eval task shows (num_fewshot, 3 unless the "
        "spec says otherwise); 0: zero-shot, as in earlier versions",
    )
    parser.add_argument(
        "--demos",
        default="per-relation",
        choices=["per-relation", "per-prompt"],
        help="per-relation: every prompt of a relation shows the same demos (a seeded "
        "choice per relation, like the tasks); per-prompt: each prompt draws its own (how "
        "the shipped neuron sets were made)",
    )
    parser.add_argument(
        "--facts",
        default="all",
        choices=["all", "base"],
        help="base: leave out facts of `added_facts:` files (the GeoNames-grown ones), to "
        "reproduce neuron sets found before they were added",
    )
    parser.add_argument(
        "--seed", type=int, default=0, help="seed of the demos, negatives and fact samples"
    )
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--dtype", default="float32", help="float32, bfloat16, float16")
    parser.add_argument("--no-progress", action="store_true", help="no progress bars")
    parser.add_argument("--stop-after", type=int, default=None, help=argparse.SUPPRESS)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    sub = parser.add_subparsers(dest="method", metavar="METHOD", required=True)
    rs = sub.add_parser(
        "relation-specific",
        help="rank every unit by average precision for each relation (Liu et al. 2025)",
        description="Relation-specific neurons: positives are the discovery prompts of a "
        "relation the model answers correctly, negatives 4x as many prompts of the other "
        "relations; each unit's score is the AP of its token-mean output.",
    )
    _common(rs)
    _relation_specific_arguments(rs)
    kn = sub.add_parser(
        "knowledge-neurons",
        help="integrated gradients over mlp.act units, refined across paraphrases (Dai et al.)",
        description="Knowledge neurons per fact (groups = fact ids). By default the facts "
        "of --split of --relations; --twohop-bridges takes the first-hop facts of the "
        "two-hop tasks instead (with their discovery templates).",
    )
    _common(kn)
    _knowledge_neuron_arguments(kn)
    from relneuron_eval.discovery.methods_cli import add_parsers

    add_parsers(sub, _common)  # the leaderboard's methods


def _relation_specific_arguments(rs: argparse.ArgumentParser) -> None:
    rs.add_argument("--top-k", type=int, default=3000, help="neurons kept per relation")
    rs.add_argument(
        "--sites",
        default="mlp.gate_proj,mlp.up_proj,mlp.down_proj",
        help="comma-separated sites (the paper's: gate_proj, up_proj, down_proj outputs)",
    )
    rs.add_argument("--negatives-ratio", type=int, default=4, help="negatives per positive prompt")
    rs.add_argument(
        "--average-over",
        default="query",
        choices=["query", "prompt"],
        help="token-mean over the query line only, or the whole few-shot prompt",
    )
    rs.add_argument(
        "--min-positives",
        type=int,
        default=10,
        help="correctly answered prompts a relation needs (checked before the activation pass)",
    )
    rs.add_argument(
        "--correct",
        default="match",
        choices=["match", "prefix2"],
        help="when a prompt counts as correctly answered (a positive): match = the greedy "
        "answer up to the newline matches an accepted answer, as acc_match scores it; "
        "prefix2 = its first 2 tokens are a prefix of one (the paper's; years and other "
        "objects sharing their first tokens pass when wrong)",
    )
    rs.add_argument(
        "--skip-unscorable",
        action="store_true",
        help="leave out relations with too few correct answers instead of failing",
    )
    rs.add_argument(
        "--max-facts",
        type=int,
        default=None,
        help="seeded sample of at most N facts per relation (default: every fact)",
    )
    rs.add_argument(
        "--batch-size",
        type=int,
        default=16,
        help="prompts per forward pass; changes only the last float bits (padding), so a "
        "resume may use another (the header lists the sizes used)",
    )
    rs.add_argument(
        "--store-dtype",
        default="float32",
        choices=["float32", "float16"],
        help="dtype of the activation checkpoint on disk",
    )


def _knowledge_neuron_arguments(kn: argparse.ArgumentParser) -> None:
    kn.add_argument(
        "--split",
        default="discovery",
        choices=["discovery", "fewshot", "test"],
        help="facts of this split of --relations",
    )
    kn.add_argument(
        "--twohop-bridges",
        action="store_true",
        help="the bridge (first-hop) facts of the relfacts_2hop tasks",
    )
    kn.add_argument(
        "--max-facts",
        type=int,
        default=None,
        help="at most this many facts (per relation; with --twohop-bridges: in all, "
        "taken round-robin over the chains' relation pairs; default: every fact)",
    )
    kn.add_argument(
        "--correct",
        default="match",
        choices=["match", "prefix2", "off"],
        help="attribute only facts the model answers correctly under every prompt (a "
        "greedy-answers pass before integrated gradients): match = the answer up to the "
        "newline matches an accepted answer, as acc_match scores it; prefix2 = its first 2 "
        "tokens are a prefix of one (years and other objects sharing their first tokens "
        "pass when wrong); off = attribute every fact (Dai et al.; the shipped set)",
    )
    kn.add_argument("--steps", type=int, default=20, help="integration steps")
    kn.add_argument("--layers", default=None, help="only these layers, e.g. '20-29' (default: all)")
    kn.add_argument("--threshold", type=float, default=0.2, help="coarse: >= t * max attribution")
    kn.add_argument("--p", default="auto", help="refined: share of paraphrases, or auto")
    kn.add_argument(
        "--relation-level",
        type=float,
        default=0.1,
        help="also relation-level neurons shared by this share of a relation's facts (0: off)",
    )
    kn.add_argument(
        "--top-k",
        type=int,
        default=None,
        help="at most this many neurons per fact (default: no limit)",
    )
    _knowledge_neuron_refinements(kn)
    kn.add_argument(
        "--method",
        dest="ig_method",
        default="auto",
        choices=["auto", "suffix", "cached", "batched", "plain"],
        help="how the integration steps are computed (all give the same attributions)",
    )


def discovery_drop_objects(value: int | None) -> int | None:
    """``--drop-objects`` at discovery: unset means the measured default, 0 means none."""
    if value is None:
        return KN_DROP_OBJECTS_DEFAULT
    return None if value == 0 else value


def _knowledge_neuron_refinements(kn: argparse.ArgumentParser) -> None:
    """Refinements against units shared across facts, and the fact-specificity controls."""
    kn.add_argument(
        "--drop-shared",
        type=int,
        default=None,
        metavar="N",
        help="refinement: drop units that N or more facts' refined neurons share",
    )
    kn.add_argument(
        "--drop-objects",
        type=int,
        default=None,
        metavar="N",
        help="refinement: drop units held by facts of N or more different answers (objects); "
        f"discovery's default is {KN_DROP_OBJECTS_DEFAULT} (the most fact-specific refinement "
        "measured in docs/report-kn-v2), 0 keeps every unit; with --from-set, none unless given",
    )
    kn.add_argument(
        "--from-set",
        default=None,
        metavar="SET",
        help="no attribution: transform this knowledge-neuron set (--drop-shared, "
        "--drop-objects, --control) and write it to --out",
    )
    kn.add_argument(
        "--control",
        default=None,
        choices=["swapped", "shared-pool"],
        help="with --from-set: swapped = each fact gets another fact's neurons (same relation, "
        "other object; --seed); shared-pool = each fact keeps only units >= --shared-at facts share",
    )
    kn.add_argument(
        "--shared-at", type=int, default=10, help="facts a unit is in to count as shared"
    )


# ------------------------------------------------------------------- runtime
def _distributed(cpu: bool) -> tuple[int, int, Callable[[], None], Any]:
    """(rank, world size, barrier, device) under ``accelerate launch``; (0, 1, noop, None)."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return 0, 1, lambda: None, None
    from accelerate import PartialState

    state = PartialState(cpu=cpu)
    return state.process_index, state.num_processes, state.wait_for_everyone, state.device


def load_model(name: str, device: Any, dtype: str) -> tuple[Any, Any, str]:
    """Model (eval mode, on ``device``), tokenizer and the id recorded in the set's header."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from relneuron_eval.core.embedded import resolve_pretrained
    from relneuron_eval.core.models import canonical

    torch_dtype = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if dtype not in torch_dtype:
        raise RelNeuronError(f"unknown --dtype {dtype!r}", hint=f"use one of {list(torch_dtype)}")
    path = str(resolve_pretrained(name))
    tokenizer = AutoTokenizer.from_pretrained(path)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch_dtype[dtype])
    model.to(device).eval()
    return model, tokenizer, canonical(name) or name


def _check_output(args: argparse.Namespace) -> tuple[Path, Path]:
    out = Path(args.out)
    if not out.name.endswith((".jsonl", ".jsonl.gz")):
        raise RelNeuronError("--out must end in .jsonl or .jsonl.gz", path=out)
    if out.is_dir():
        raise RelNeuronError("--out is a folder", path=out)
    if out.exists() and not args.force:
        raise RelNeuronError(
            "output exists; nothing was changed", path=out, hint="pass --force to replace it"
        )
    workdir = Path(args.workdir) if args.workdir else out.with_name(f".{out.name}.work")
    return out, workdir


def run(args: argparse.Namespace) -> int:
    out, workdir = _check_output(args)
    from relneuron_eval.discovery import methods_cli

    if args.method in methods_cli.METHODS:
        return methods_cli.run(args, out, workdir)
    if args.method == "relation-specific":
        return _relation_specific(args, out, workdir)
    if args.from_set is not None or args.control is not None:
        from relneuron_eval.discovery.kn_transform import transform

        return transform(args, out)
    return _knowledge_neurons(args, out, workdir)


def _relation_specific(args: argparse.Namespace, out: Path, workdir: Path) -> int:
    from relneuron_eval.discovery.data import (
        base_facts_only,
        discovery_prompts,
        resolve_relations,
        spec_record,
    )
    from relneuron_eval.discovery.relation_specific import find_relation_specific

    relations = resolve_relations(args.relations)
    if args.facts == "base":
        relations = base_facts_only(relations)
    config = _relation_specific_config(args, relations)
    if len(relations) < 2:
        raise RelNeuronError(
            "relation-specific neurons need at least 2 relations (negatives come from the others)"
        )
    if args.max_facts is not None and args.max_facts < 1:
        raise RelNeuronError(f"--max-facts must be positive, got {args.max_facts}")
    prompts = discovery_prompts(
        relations,
        fewshot=args.fewshot,
        seed=args.seed,
        max_facts=args.max_facts,
        demos=args.demos,
    )
    rank, world, barrier, device = _distributed(cpu=(args.device or "").startswith("cpu"))
    model, tokenizer, model_id = load_model(
        args.model, args.device or device or _auto(), args.dtype
    )
    result = find_relation_specific(
        model,
        tokenizer,
        prompts,
        workdir,
        out,
        config,
        rank=rank,
        world_size=world,
        barrier=barrier,
        model_id=model_id,
        data={
            "relations": list(relations),
            "source": "relneuron_eval.data.facts",
            "max_facts_per_relation": args.max_facts,
            "facts": args.facts,
            **spec_record(args.relations),
        },
        progress=not args.no_progress,
        stop_after=args.stop_after,
    )
    if result is None:
        return 0
    neuron_set, summaries = result
    _print_relation_specific(out, neuron_set, summaries, config.min_positives)
    return 0


def _relation_specific_config(
    args: argparse.Namespace, relations: dict[str, Relation]
) -> RelationSpecificConfig:
    """The validated ``RelationSpecificConfig`` of the command line."""
    from relneuron_eval.discovery.data import fewshot_record
    from relneuron_eval.discovery.relation_specific import RelationSpecificConfig, validate_config

    config = RelationSpecificConfig(
        top_k=args.top_k,
        sites=tuple(s.strip() for s in args.sites.split(",") if s.strip()),
        ratio=args.negatives_ratio,
        seed=args.seed,
        fewshot=fewshot_record(relations, args.fewshot),
        demos=args.demos,
        average_over=args.average_over,
        min_positives=args.min_positives,
        skip_unscorable=args.skip_unscorable,
        batch_size=args.batch_size,
        store_dtype=args.store_dtype,
        correct=args.correct,
    )
    validate_config(config)
    return config


def _print_relation_specific(
    out: Path, neuron_set: NeuronSet, summaries: list[RelationSummary], min_positives: int
) -> None:
    """What was written, one line per relation (prompts, positives, AP), and what was skipped."""
    print(f"wrote {out} ({len(neuron_set)} neurons, {len(neuron_set.groups())} relations)")
    print(
        f"{'relation':32} {'prompts':>7} {'correct':>7} {'pos':>5} {'neg':>5} {'best AP':>8} {'k-th AP':>8}"
    )
    for s in summaries:
        print(
            f"{s.relation:32} {s.prompts:7d} {s.correct:7d} {s.positives:5d} {s.negatives:5d} "
            f"{s.best_ap:8.4f} {s.kth_ap:8.4f}"
        )
    skipped = neuron_set.method.get("data", {}).get("relations_skipped") or []
    if skipped:
        print(f"skipped (fewer than {min_positives} correct answers): {', '.join(skipped)}")


def _auto() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def _knowledge_neurons(args: argparse.Namespace, out: Path, workdir: Path) -> int:
    from relneuron_eval.core.architectures import model_shape
    from relneuron_eval.discovery import knowledge_neurons as kn

    p: float | str = args.p
    if p != "auto":
        try:
            p = float(p)
        except ValueError:
            raise RelNeuronError(
                f"--p must be a number in (0, 1] or auto, got {args.p!r}"
            ) from None
    layers = parse_layers(args.layers, "--layers")
    ig = kn.IGConfig(
        steps=args.steps, method=args.ig_method, layers=None if layers is None else tuple(layers)
    )
    select = kn.SelectConfig(
        threshold=args.threshold,
        p=p,
        relation_fraction=args.relation_level or None,
        top_k=args.top_k,
        drop_shared=args.drop_shared,
        drop_objects=discovery_drop_objects(args.drop_objects),
    )
    kn.validate_ig(ig)
    kn.validate_select(select)
    if args.max_facts is not None and args.max_facts < 1:
        raise RelNeuronError(f"--max-facts must be positive, got {args.max_facts}")
    facts, data = _knowledge_facts(args)
    rank, world, barrier, device = _distributed(cpu=(args.device or "").startswith("cpu"))
    model, tokenizer, model_id = load_model(
        args.model, args.device or device or _auto(), args.dtype
    )
    # the model's bound, named as typed ("--layers=20-40 is outside this model's layers 0-29")
    parse_layers(args.layers, "--layers", model_shape(model).num_layers)
    result = kn.find_knowledge_neurons(
        model,
        tokenizer,
        facts,
        workdir,
        out,
        ig,
        select,
        correct=None if args.correct == "off" else args.correct,
        rank=rank,
        world_size=world,
        barrier=barrier,
        model_id=model_id,
        data=data,
        progress=not args.no_progress,
        stop_after=args.stop_after,
    )
    if result is None:
        return 0
    neuron_set, summary = result
    import shutil

    shutil.rmtree(workdir, ignore_errors=True)
    print(f"wrote {out} ({len(neuron_set)} neurons, {len(neuron_set.groups())} groups)")
    print(summary.text())
    return 0


def _knowledge_facts(args: argparse.Namespace) -> tuple[list, dict]:
    """The facts to attribute (with their prompts) and the header's ``data`` record."""
    from relneuron_eval.discovery import knowledge_neurons as kn
    from relneuron_eval.discovery.data import (
        base_facts_only,
        bridge_facts,
        fewshot_record,
        relation_prompts,
        resolve_relations,
        spec_record,
    )

    if args.twohop_bridges:
        pairs = bridge_facts(
            fewshot=args.fewshot, seed=args.seed, max_facts=args.max_facts, demos=args.demos
        )
        data = {"facts": "first-hop (bridge) facts of the relfacts_2hop chains", "split": "test"}
        names = list(dict.fromkeys(prompts[0].relation for _, prompts in pairs))
        relations = resolve_relations(names) if names else {}
    else:
        relations = resolve_relations(args.relations)
        if args.facts == "base":
            relations = base_facts_only(relations)
        pairs = []
        for relation in relations.values():
            prompts = relation_prompts(
                relation, args.split, fewshot=args.fewshot, seed=args.seed, demos=args.demos
            )
            by_fact: dict[str, list] = {}
            for prompt in prompts:
                by_fact.setdefault(prompt.fact_id, []).append(prompt)
            pairs.extend(list(by_fact.items())[: args.max_facts])
        data = {"relations": list(relations), "split": args.split, **spec_record(args.relations)}
    if not pairs:
        raise RelNeuronError("no facts to attribute", hint="check --relations and --split")
    facts = [
        kn.KnowledgeFact(
            fact_id,
            tuple(p.text for p in prompts),
            prompts[0].object,
            answers=tuple(prompts[0].answers),
        )
        for fact_id, prompts in pairs
    ]
    data.update(
        templates="discovery",
        fewshot=fewshot_record(relations, args.fewshot),
        demos=args.demos,
        facts_count=len(facts),
        max_facts=args.max_facts,
    )
    return facts, data
