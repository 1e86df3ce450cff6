"""The ``relneuron`` command: one entry point, one module per subcommand.

Subcommand modules are imported only when used, so ``relneuron --help`` is fast. Each
module defines ``HELP``, ``add_arguments(parser)`` and ``run(args) -> int``. A
``RelNeuronError`` becomes one ``error:`` line on stderr and exit code 2.
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

SUBCOMMANDS: dict[str, tuple[str, str]] = {
    # name: (module, one-line help shown without importing the module)
    "find": (
        "relneuron_eval.discovery.cli",
        "find neurons (relation-specific or knowledge neurons)",
    ),
    "report": (
        "relneuron_eval.report.command",
        "run the papers' experiments and write markdown + PNGs",
    ),
    "report-check": (
        "relneuron_eval.report.replay",
        "check that a shipped report's numbers follow from its shipped runs",
    ),
    "compare": (
        "relneuron_eval.compare.command",
        "compare lm-eval results of a base model and variants",
    ),
    "leaderboard": (
        "relneuron_eval.leaderboard.command",
        "score neuron-finding methods per relation and budget (Cause, Isolate, Disentangle)",
    ),
    "export": (
        "relneuron_eval.export.command",
        "export a variant as a PEFT IA3 adapter or a checkpoint",
    ),
    "bench": (
        "relneuron_eval.benchmarks",
        "benchmarks: overhead, per-doc, prefix, load, startup, discovery, ap-scale, ig, dp, peers",
    ),
    "taskgen": ("relneuron_eval.data.taskgen", "generate lm-eval task YAMLs from relation data"),
    "datagen": ("relneuron_eval.data.datagen", "regenerate the GeoNames/CLDR facts (dev extra)"),
    "gap": (
        "relneuron_eval.data.twohop",
        "compositionality gap of two-hop runs from logged samples",
    ),
    "model-path": ("relneuron_eval.cli", "print the local checkpoint of an embedded model"),
}

# --------------------------------------------------------------- model-path
HELP = (
    "print the local checkpoint folder of an embedded model: smollm2-135m (default) or "
    "gemma3-270m (builds the cache once)"
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "model", nargs="?", default="smollm2-135m", help="embedded model name (core/models.py)"
    )


def run(args: argparse.Namespace) -> int:
    from relneuron_eval.core.embedded import ensure_local

    print(ensure_local(args.model))  # an unknown name: an error that lists the embedded models
    return 0


# --------------------------------------------------------------------- main
def _says_default(action: argparse.Action) -> bool:
    """Whether an option's default is worth showing: not for flags, required options,
    positionals, or a None default (the help says what happens without the option)."""
    default = action.default
    return not (
        default is None
        or default is False
        or default is argparse.SUPPRESS
        or action.required
        or not action.option_strings
        or action.nargs == 0
    )


class DefaultsFormatter(argparse.HelpFormatter):
    """``argparse.ArgumentDefaultsHelpFormatter`` without the noise: no "(default: None)"
    or "(default: False)", nothing added where the help already names its default."""

    def _get_help_string(self, action: argparse.Action) -> str | None:
        text = action.help or ""
        if "default" in text.lower() or not _says_default(action):
            return action.help  # the help already says it (or there is nothing to say)
        return f"{text} (default: %(default)s)"


def _show_defaults(parser: argparse.ArgumentParser) -> None:
    """Use ``DefaultsFormatter`` in this parser and every subcommand below it."""
    parser.formatter_class = DefaultsFormatter
    for action in parser._actions:
        if action.help is None and _says_default(action):
            action.help = "default: %(default)s"  # argparse shows nothing for help-less options
        if isinstance(action, argparse._SubParsersAction):
            for child in action.choices.values():
                _show_defaults(child)


def build_parser(load: Sequence[str] | None = None) -> argparse.ArgumentParser:
    from relneuron_eval import __version__

    parser = argparse.ArgumentParser(
        prog="relneuron",
        description="Neuron interventions as ordinary lm-evaluation-harness runs.",
    )
    parser.add_argument("--version", action="version", version=f"relneuron-eval {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (module_name, short_help) in SUBCOMMANDS.items():
        if load is not None and name not in load:
            sub.add_parser(name, help=short_help, add_help=False)
            continue
        module = importlib.import_module(module_name)
        child = sub.add_parser(name, help=short_help, description=getattr(module, "HELP", None))
        module.add_arguments(child)
        child.set_defaults(_module=module)
    _show_defaults(parser)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    from relneuron_eval.errors import RelNeuronError

    argv = list(sys.argv[1:] if argv is None else argv)
    wanted = [argv[0]] if argv and argv[0] in SUBCOMMANDS else []
    try:
        parser = build_parser(load=wanted)
        args = parser.parse_args(argv)
        if getattr(args, "_module", None) is None:
            parser.print_help()
            return 0 if not argv else 2
        return int(args._module.run(args) or 0)
    except RelNeuronError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
