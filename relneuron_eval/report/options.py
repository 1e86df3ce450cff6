"""The options of ``relneuron report`` (what to evaluate, and how the evaluations run)."""

from __future__ import annotations

import argparse

from relneuron_eval.report.setup import EXPERIMENTS, LANGS, METRICS

HELP = (
    "run the papers' experiments (cumulativity, versatility, interference, reasoning recall) "
    "with random controls; write report.md, PNG figures and results.json"
)
DEFAULT_KS = "10,100,1000,3000,all"


METRIC_HELP = (
    "acc_prefix2 (the paper's), acc_match, mc (the gold object scores highest among the "
    "relation's objects) or mc_calibrated (the same after each object's mean score over the "
    "documents is removed: a switched default answer cancels)"
)


# ================================================================= arguments
def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model",
        default="smollm2-135m",
        help="pretrained path/id, or an embedded model (smollm2-135m, gemma3-270m)",
    )
    parser.add_argument(
        "--neuron-set",
        default=None,
        help="relation-specific neuron set (groups = relation names); default for an "
        "embedded model: its shipped neuron_sets/<model>/relation_specific.jsonl.gz",
    )
    parser.add_argument(
        "--kn-set",
        default=None,
        help="knowledge-neuron set (groups = fact ids) for the reasoning experiment; "
        "default: knowledge_neurons.jsonl.gz next to --neuron-set",
    )
    parser.add_argument("--out", required=True, help="output folder (report.md, *.png, runs/)")
    parser.add_argument(
        "--relations", default="all", help="comma-separated relations, or all (= every group)"
    )
    parser.add_argument(
        "--experiments", default="all", help=f"comma-separated: {', '.join(EXPERIMENTS)}, or all"
    )
    parser.add_argument(
        "--ks", default=DEFAULT_KS, help="cumulativity grid of top-k sizes ('all' = whole group)"
    )
    parser.add_argument(
        "--top-k",
        default="3000",
        help="neurons per relation for interference/versatility; a comma list (e.g. "
        "3000,400) gives one interference section per k (the first is the headline's and "
        "versatility's)",
    )
    parser.add_argument("--seeds", default="0", help="random-control seeds, comma-separated")
    parser.add_argument(
        "--limit", default="20", help="documents per relation task (first N; 'none' = all)"
    )
    parser.add_argument(
        "--limit-own",
        default="50",
        help="documents of a relation's own task in the specificity test (the headline)",
    )
    parser.add_argument(
        "--reasoning-limit",
        default="40",
        help="two-hop chains (evenly spread over all chains; 'none' = all)",
    )
    parser.add_argument(
        "--reasoning-chains",
        default="with-neurons",
        choices=["with-neurons", "all"],
        help="spread the two-hop sample over the chains whose bridge fact has knowledge "
        "neurons (default), or over all chains",
    )
    parser.add_argument("--metric", default="acc_prefix2", choices=METRICS, help=METRIC_HELP)
    parser.add_argument(
        "--min-base",
        type=float,
        default=0.2,
        help="relations with a lower base accuracy are reported but left out of drop claims",
    )
    parser.add_argument(
        "--matrix-relations",
        default="auto:8",
        help="relations of the r x r' interference matrix: names, all, or auto:N (the N "
        "with the highest base accuracy)",
    )
    parser.add_argument(
        "--cumulativity-relations",
        default="auto:3",
        help="relations of the cumulativity curves: names, all, or auto:N",
    )
    parser.add_argument("--langs", default=",".join(LANGS), help="languages for cross-lingual")
    _add_control_arguments(parser)
    _add_compute_arguments(parser)


def _add_control_arguments(parser: argparse.ArgumentParser) -> None:
    """Issue 19's controls: eligibility against the majority class, further controls."""
    parser.add_argument(
        "--min-margin",
        type=float,
        default=0.10,
        help="eligible for drop claims only when base accuracy beats always answering the "
        "most frequent object by this much, on the documents the claim uses (issue 19)",
    )
    parser.add_argument(
        "--other-controls",
        type=int,
        default=0,
        help="per relation, the same number of top neurons of N other relations as a "
        "second control on its own task (own - others); 0: none",
    )
    parser.add_argument(
        "--control-set",
        action="append",
        default=[],
        metavar="NAME=PATH",
        help="a further control: a neuron set with one group per relation (e.g. "
        "activation-matched units from `relneuron find random-matched`), its top-k "
        "deactivated on each relation's own task next to the relation's own neurons; "
        "repeatable",
    )


def _add_compute_arguments(parser: argparse.ArgumentParser) -> None:
    """How the evaluations run (not part of any cache key)."""
    parser.add_argument("--batch-size", default="32", help="batch size (an integer or auto)")
    parser.add_argument("--device", default=None, help="cpu, cuda, cuda:1 ... (default: auto)")
    parser.add_argument("--dtype", default="float32", choices=["float32", "bfloat16", "float16"])
    parser.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch CPU threads (default: torch's choice; on a busy shared CPU 1 can be "
        "several times faster)",
    )
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument(
        "--plan-only",
        action="store_true",
        help="print what the report would evaluate (lm-eval calls, task results, documents, "
        "how many are cached) and exit without loading the model",
    )
