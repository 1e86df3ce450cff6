"""The shell commands of README.md and docs/*.md run as written, so the docs cannot drift.

Commands are parsed from the ```bash code blocks (``\\`` continuations joined, comments
and ``$ `` prompts dropped, ``a|b`` in a subcommand position expanded to both), never
listed here. Each runs from the repository root with only these changes:

- size options (``SIZES``): ``--limit 1`` (and ``--batch_size 16`` unless given) for
  lm-eval, few relations/facts/steps for
  ``relneuron find``/``report``/``bench``;
- outputs go to a temporary folder: the values of ``OUTPUT_OPTIONS`` and any later path
  under one of them (``out/...``, ``rs.jsonl.gz``, ``my_tasks/``) are rewritten;
- example inputs a reader brings (``EXAMPLE_INPUTS``: a spec, a neuron set) are made.

Commands that cannot run here are in ``CANNOT_RUN`` with the reason, matched by a
stable substring; a new command that neither runs nor is listed fails the test.
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from conftest import REPO

pytestmark = pytest.mark.spread  # independent chains of commands, one test each

# substring of the command -> why it cannot run on the test machine (no GPU, no network)
CANNOT_RUN = {
    "pip install": "installs packages: `make install` has done it (tests/test_makefile.py)",
    "python -m venv": "creates the virtual environment `make install` made",
    "make install": "installs packages into .venv (it has run; tests/test_makefile.py checks its "
    "recipe against the README's)",
    "make demo": "runs once in tests/test_demo.py, which checks the effect it prints (sign and "
    "paired significance) against the report's",
    "make test": "the test suite itself, of which this test is part",
    "--tasks 'relfacts_*'": "a full run of all 91 tasks (hours on a CPU; 7 min 45 s even at "
    "--limit 2); the same command shape runs every task on a tiny model in "
    "tests/harness/test_lm_eval_cli.py::test_relfacts_glob_runs_every_task_exactly_once",
    "--model vllm": "vLLM is a GPU serving engine, not installed here",
    "llama.cpp/": "llama.cpp is not part of this project",
    "--relcheck-device cuda": "needs a GPU and Llama-2-7B from the hub",
    "--tasks ...": "a placeholder for the reader's tasks, not a runnable command",
    "pytest neuron_sets/": "runs verbatim in `make test` (pyproject's testpaths include "
    "neuron_sets/); at a smaller --relcheck-limit its thresholds, set for 50 facts, are noise",
}
OUTPUT_OPTIONS = ("--output_path", "--out", "--heatmap", "--json", "--relcheck-json", "--workdir")
PROGRAMS = ("lm_eval", "lm-eval", "relneuron", "pytest", "accelerate", "python")
DEFAULT_RELATIONS = ("company_hq", "country_capital_city")  # small, both found by the model
TIMEOUT_S = 1200  # the 'relfacts_*' glob took over 600 s at load average 10-14


@dataclass
class Command:
    """One command of a document: where it is, its text, and the exports before it."""

    where: str
    text: str
    env: dict[str, str] = field(default_factory=dict)
    assign: str | None = None  # ``NAME=$(text)``: the output becomes ``$NAME``

    def skip_reason(self) -> str | None:
        return next((why for key, why in CANNOT_RUN.items() if key in self.text), None)


# ------------------------------------------------------------------------- parsing
_FENCE = re.compile(r"^```(\w*)\s*$")
_ALTERNATIVES = re.compile(r"(?<=\s)([a-z][\w-]*(?:\|[a-z][\w-]*)+)(?=\s|$)")
_ASSIGNMENT = re.compile(r"^(\w+)=\$\((.+?)\)\s*(#.*)?$")
_VARIABLE = re.compile(r"\$\{?(\w+)\}?")


def _bash_blocks(text: str) -> list[tuple[int, list[str]]]:
    """(first line number, lines) of every ```bash / ```sh / ```shell block."""
    blocks, current, start = [], None, 0
    for number, line in enumerate(text.splitlines(), 1):
        fence = _FENCE.match(line.strip())
        if fence and current is None:
            if fence.group(1) in ("bash", "sh", "shell", "console"):
                current, start = [], number + 1
            else:
                current, start = False, 0  # another language: skip to its end
        elif line.strip() == "```" and current is not None:
            if current:
                blocks.append((start, current))
            current = None
        elif current not in (None, False):
            current.append(line)
    return blocks


def _logical_lines(start: int, lines: list[str]) -> list[tuple[int, str]]:
    """Join ``\\`` continuations, drop ``$ `` prompts, blank lines and comment lines."""
    out: list[tuple[int, str]] = []
    pending, first = "", start
    for offset, raw in enumerate(lines):
        line = raw.strip()
        if not pending:
            first = start + offset
            line = line[2:] if line.startswith("$ ") else line
            if not line or line.startswith("#"):
                continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        out.append((first, pending + line))
        pending = ""
    return out


def _strip_comment(line: str) -> str:
    """The command without a trailing ``# comment`` (outside quotes)."""
    lexer = shlex.shlex(line, posix=True, punctuation_chars=False)
    lexer.whitespace_split, lexer.commenters = True, "#"
    kept = list(lexer)
    return shlex.join(kept) if kept else ""


def document_commands(path: Path) -> list[Command]:
    """Every command of a document's bash blocks, with the ``export``s before it applied."""
    label = path.relative_to(REPO) if path.is_relative_to(REPO) else path.name
    commands: list[Command] = []
    for start, lines in _bash_blocks(path.read_text()):
        env: dict[str, str] = {}
        for number, line in _logical_lines(start, lines):
            where = f"{label}:{number}"
            alternatives = _ALTERNATIVES.search(" " + line)
            choices = alternatives.group(1).split("|") if alternatives else [None]
            for choice in choices:
                text = line if choice is None else line.replace(alternatives.group(1), choice, 1)
                if text.startswith("export ") and "=" in text:
                    name, _, value = text[len("export ") :].partition("=")
                    env[name.strip()] = shlex.split(value)[0] if value.strip() else ""
                    continue
                assignment = _ASSIGNMENT.match(text)
                if assignment:
                    name, inner = assignment.group(1), assignment.group(2)
                    commands.append(Command(where, inner, dict(env), assign=name))
                    continue
                text = _strip_comment(text) if "#" in text else text
                commands.append(Command(where, text, dict(env)))
    return commands


def readme_commands() -> list[Command]:
    return document_commands(REPO / "README.md")


def docs_files() -> list[Path]:
    return sorted((REPO / "docs").glob("*.md"))


# ------------------------------------------------------------------------- sizes
def _option(args: list[str], name: str) -> str | None:
    for i, arg in enumerate(args):
        if arg == name and i + 1 < len(args):
            return args[i + 1]
        if arg.startswith(name + "="):
            return arg.split("=", 1)[1]
    return None


def _set(args: list[str], name: str, value: str) -> list[str]:
    """``name value`` in ``args``: replaced where present, else appended."""
    out = list(args)
    for i, arg in enumerate(out):
        if arg == name and i + 1 < len(out):
            out[i + 1] = value
            return out
        if arg.startswith(name + "="):
            out[i] = f"{name}={value}"
            return out
    return [*out, name, value]


def _ensure(args: list[str], **options: str) -> list[str]:
    """Add ``--key value`` options the command does not give itself."""
    for key, value in options.items():
        name = "--" + key.replace("_", "-")
        if _option(args, name) is None:
            args = [*args, name, value]
    return args


def _relations(run: Run) -> str:
    return ",".join(sorted(set(DEFAULT_RELATIONS) | run.groups))


BENCH_SIZES: dict[str, dict[str, str]] = {
    "overhead": {"limit": "2", "rounds": "1", "neurons": "100"},
    "discovery": {"prompts": "8,4", "rounds": "1"},
    "ap-scale": {
        "layers": "1",
        "intermediate": "64",
        "hidden": "32",
        "relations": "2",
        "prompts": "40",
        "top-k": "5",
        "threads": "1",
    },
    "ig": {"prompts": "1", "steps": "2", "layers": "29", "threads": "1"},
    "load": {"rounds": "1"},
    "startup": {"rounds": "2"},
    "dp": {"limit": "2", "rounds": "1"},
}


def _size_relneuron(args: list[str], run: Run) -> list[str]:
    sub = args[1:3]
    if sub[:1] == ["find"]:
        if _option(args, "--relations") in ("all", None) and "--twohop-bridges" not in args:
            args = _set(args, "--relations", _relations(run))
        if sub[1:] == ["knowledge-neurons"]:
            return _ensure(_set(args, "--max-facts", "1"), steps="2", layers="28-29")
        return _ensure(_set(args, "--max-facts", "8"), batch_size="8", min_positives="2")
    if sub[:1] == ["report"]:
        args = _set(args, "--relations", _relations(run))
        for name in ("--limit", "--limit-own", "--reasoning-limit"):  # also over `none`
            args = _set(args, name, "1")
        return _ensure(
            args,
            ks="all",
            top_k="20",
            matrix_relations="all",
            cumulativity_relations="all",
            langs="de",
            min_base="0",
            batch_size="8",
        )
    if sub[:1] == ["bench"] and len(sub) > 1:
        return _ensure(args, **{k.replace("-", "_"): v for k, v in BENCH_SIZES[sub[1]].items()})
    return args


LM_EVAL_LIMIT = "1"  # documents per task: every task still builds, prompts, scores


def _size_lm_eval(args: list[str], run: Run) -> list[str]:
    """One document per task; batched (a glob's ~100 tasks are one pool of requests)."""
    args = _set(args, "--limit", LM_EVAL_LIMIT)
    return args if _option(args, "--batch_size") else [*args, "--batch_size", "16"]


SIZES: dict[str, Callable[[list[str], Run], list[str]]] = {
    "relneuron": _size_relneuron,
    "lm_eval": _size_lm_eval,
    "lm-eval": _size_lm_eval,
    "accelerate": _size_lm_eval,
}


# ------------------------------------------------------------------------- running
@dataclass
class Run:
    """Runs a document's commands in order; outputs and example inputs live in ``tmp``."""

    tmp: Path
    groups: set[str] = field(default_factory=set)
    outputs: set[str] = field(default_factory=set)  # relative output paths so far
    variables: dict[str, str] = field(default_factory=dict)  # from ``NAME=$(...)``
    log: list[str] = field(default_factory=list)

    def path(self, value: str) -> str:
        return value if Path(value).is_absolute() else str(self.tmp / value)

    def _is_output(self, value: str) -> bool:
        """An earlier command's output (or below it), or anything under ``out/``."""
        if not value or Path(value).is_absolute():
            return False
        norm = os.path.normpath(value)
        return norm.split(os.sep)[0] == "out" or any(
            norm == o or norm.startswith(o + os.sep) for o in self.outputs
        )

    def _rewrite_value(self, value: str) -> str:
        if self._is_output(value):
            return self.path(value)
        return EXAMPLE_INPUTS[value](self) if value in EXAMPLE_INPUTS else value

    def rewrite(self, args: list[str]) -> list[str]:
        out: list[str] = []
        for i, arg in enumerate(args):
            if i > 0 and args[i - 1] in OUTPUT_OPTIONS and not Path(arg).is_absolute():
                self.outputs.add(os.path.normpath(arg))
                out.append(self.path(arg))
            elif re.fullmatch(r"(\w+=[^,]*,)*\w+=[^,]*", arg):
                pairs = [p.split("=", 1) for p in arg.split(",")]
                out.append(",".join(f"{k}={self._rewrite_value(v)}" for k, v in pairs))
            elif "=" in arg and self._is_output(arg.split("=", 1)[1]):  # a script's NAME=FOLDER
                name, value = arg.split("=", 1)
                out.append(f"{name}={self.path(value)}")
            else:
                out.append(self._rewrite_value(arg))
        return out

    def argv(self, command: Command) -> list[str]:
        expand = lambda m: self.variables.get(m.group(1), m.group(0))  # noqa: E731
        args = [_VARIABLE.sub(expand, arg) for arg in shlex.split(command.text)]
        program = args[0]
        if program not in PROGRAMS:
            raise AssertionError(f"{command.where}: unknown program {program!r}: {command.text}")
        args = SIZES.get(program, lambda same, _: same)(args, self)
        local = Path(sys.executable).with_name(program)
        return [str(local) if local.exists() else program, *self.rewrite(args[1:])]

    def run(self, command: Command) -> str | None:
        """None when the command exited 0, else what went wrong."""
        try:
            argv = self.argv(command)
        except (KeyError, ValueError, AssertionError) as exc:  # a command we cannot size
            return f"{command.where}: cannot run {command.text!r} here: {exc}"
        env = {**os.environ, **BASE_ENV, **command.env}
        start = time.monotonic()
        try:
            proc = subprocess.run(
                argv, cwd=REPO, env=env, capture_output=True, text=True, timeout=TIMEOUT_S
            )
        except subprocess.TimeoutExpired:
            self.log.append(f"{TIMEOUT_S:6.1f} s timed out {command.where}")
            return f"{command.where}: timed out after {TIMEOUT_S} s: {shlex.join(argv)}"
        self.log.append(f"{time.monotonic() - start:6.1f} s rc={proc.returncode} {command.where}")
        if proc.returncode == 0:
            if command.assign:
                self.variables[command.assign] = proc.stdout.strip()
            return None
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-6:])
        return f"{command.where}: exit {proc.returncode}: {shlex.join(argv)}\n{tail}"


BASE_ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TOKENIZERS_PARALLELISM": "false",
    "OMP_NUM_THREADS": "1",
    "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}",
}


def _example_spec(run: Run) -> str:
    """The reader's own relation spec of docs/tasks.md ("Adding your own relation")."""
    folder = run.tmp / "example-spec"
    if not (folder / "spec.yaml").exists():
        folder.mkdir(parents=True, exist_ok=True)
        lines = [
            f'{{"subject": "Gadget {i}", "object": "{("Acme", "Globex", "Initech")[i % 3]}"}}'
            for i in range(60)
        ]
        (folder / "gadgets.jsonl").write_text("\n".join(lines) + "\n")
        (folder / "spec.yaml").write_text(
            "relations:\n"
            "  - name: gadget_maker\n"
            "    facts: gadgets.jsonl\n"
            "    closed_set: true\n"
            "    templates:\n"
            '      discovery: ["{subject} is built by"]\n'
            '      eval: ["{subject} comes from the company", "The maker of {subject} is"]\n'
        )
    return str(folder / "spec.yaml")


def _example_set(run: Run) -> str:
    return str(REPO / "neuron_sets" / "smollm2-135m" / "relation_specific.jsonl.gz")


# names of files the docs assume the reader has -> a real one
EXAMPLE_INPUTS: dict[str, Callable[[Run], str]] = {
    "my.yaml": _example_spec,
    "gadgets.yaml": _example_spec,
    "sets.jsonl.gz": _example_set,
}


def _groups_in(commands: list[Command]) -> set[str]:
    """Relation groups the commands use (``--groups X``, ``groups=X``): discovery finds them."""
    from relneuron_eval.data.facts import load_relations

    shipped = set(load_relations())
    found: set[str] = set()
    for command in commands:
        for match in re.finditer(r"(?:--groups\s+'?|groups=)([\w|]+)", command.text):
            found.update(g for g in match.group(1).split("|") if g in shipped)
    return found


def run_document(
    commands: list[Command], tmp: Path, groups: set[str] | None = None
) -> tuple[list[str], Run]:
    runner = Run(tmp, groups=_groups_in(commands) if groups is None else groups)
    failures = [
        failure
        for command in commands
        if command.skip_reason() is None and (failure := runner.run(command)) is not None
    ]
    return failures, runner


def _reads(value: str, output: str) -> bool:
    norm = os.path.normpath(value)
    return norm == output or norm.startswith(output + os.sep)


def chains(commands: list[Command]) -> list[list[Command]]:
    """The runnable commands in independent chains, each in document order.

    A command joins the chain of every earlier command whose output (a path after an
    ``OUTPUT_OPTIONS`` option, or below it) or ``$NAME`` it reads, or whose output it
    writes into (two processes sharing one ``--out``); chains share nothing,
    so they run as separate tests (in parallel under pytest-xdist) with the same result.
    """
    runnable = [c for c in commands if c.skip_reason() is None]
    parent = list(range(len(runnable)))

    def root(i: int) -> int:
        while parent[i] != i:
            i = parent[i]
        return i

    made: list[tuple[int, str]] = []  # (command index, output path or $NAME)
    for i, command in enumerate(runnable):
        tokens = shlex.split(command.text)
        inputs = [t for k, t in enumerate(tokens) if k == 0 or tokens[k - 1] not in OUTPUT_OPTIONS]
        values = [v for t in inputs for v in [t, *(p.partition("=")[2] for p in t.split(","))]]
        outputs = [
            os.path.normpath(tokens[k + 1])
            for k in range(len(tokens) - 1)
            if tokens[k] in OUTPUT_OPTIONS
        ]
        for j, output in made:
            variable = output.startswith("$") and re.search(rf"\$\{{?{output[1:]}\b", command.text)
            # reading an earlier output, or writing into it (two processes sharing an --out)
            if variable or any(_reads(v, output) for v in values + outputs if v):
                parent[root(i)] = root(j)
        made += [(i, output) for output in outputs]
        if command.assign:
            made.append((i, "$" + command.assign))
    grouped: dict[int, list[Command]] = {}
    for i, command in enumerate(runnable):
        grouped.setdefault(root(i), []).append(command)
    return list(grouped.values())


def _chain_params() -> list:
    """(document, chain) for README.md and every docs/*.md: one test each."""
    params = []
    for path in [REPO / "README.md", *docs_files()]:
        commands = document_commands(path)
        groups = _groups_in(commands)
        for chain in chains(commands):
            params.append(pytest.param(chain, groups, id=chain[0].where))
    return params


# ------------------------------------------------------------------------- tests
def test_commands_are_found_and_every_skip_entry_is_used():
    commands = [c for path in [REPO / "README.md", *docs_files()] for c in document_commands(path)]
    readme = readme_commands()
    assert any(c.text.startswith("lm_eval ") for c in readme), [c.text for c in readme]
    assert all("\\" not in c.text and not c.text.startswith("#") for c in commands)
    for key, why in CANNOT_RUN.items():
        assert any(key in c.text for c in commands), f"stale CANNOT_RUN entry {key!r} ({why})"
    for command in commands:
        if command.skip_reason() is None:
            program = shlex.split(command.text)[0]
            assert program in PROGRAMS, f"{command.where}: {command.text}"


def test_parsing_joins_strips_and_expands(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\n# a comment\nexport OMP_NUM_THREADS=1\n"
        "lm_eval --model hf \\\n  --tasks 'relfacts_*'   # all\n"
        "relneuron bench load|startup\n```\n```python\nprint(1)\n```\n"
        "```console\n$ pytest neuron_sets/\n```\n"
    )
    cmds = document_commands(doc)
    assert [c.text for c in cmds] == [
        "lm_eval --model hf --tasks 'relfacts_*'",
        "relneuron bench load",
        "relneuron bench startup",
        "pytest neuron_sets/",
    ]
    assert cmds[0].env == {"OMP_NUM_THREADS": "1"}
    runner = Run(tmp_path, groups={"company_hq"})
    argv = runner.argv(Command("x", "relneuron compare out/a out/b --heatmap cmp.png"))
    assert argv[2:] == [str(tmp_path / p) for p in ("out/a", "out/b")] + [
        "--heatmap",
        str(tmp_path / "cmp.png"),
    ]
    argv = runner.argv(Command("x", "lm_eval --model_args neuron_set=rs.jsonl.gz --limit 9"))
    assert argv[-4:] == ["--limit", LM_EVAL_LIMIT, "--batch_size", "16"]
    assert str(tmp_path / "rs.jsonl.gz") not in argv[3]  # not an output of this document
    argv = runner.argv(Command("x", 'python s.py --run "Model A=out/a" --run B=rs.jsonl.gz'))
    assert argv[-3:] == [f"Model A={tmp_path / 'out/a'}", "--run", "B=rs.jsonl.gz"]


def test_chains_keep_readers_with_their_writers(tmp_path):
    doc = tmp_path / "x.md"
    doc.write_text(
        "```bash\nlm_eval --model hf --tasks a --output_path out/base\n"
        "relneuron find relation-specific --out rs.jsonl.gz\n"
        "lm_eval --model hf --tasks a --output_path out/b\n"
        "relneuron compare out/base out/b --heatmap cmp.png\n"
        "relneuron export peft --neuron-set rs.jsonl.gz --out variants/x\n"
        "P=$(relneuron model-path)\nlm_eval --model hf --model_args pretrained=$P --tasks a\n"
        "relneuron bench load\npip install x\n"
        "relneuron report --out out/r\nrelneuron report --out out/r\n```\n"
    )
    got = [[c.text.split()[1] for c in chain] for chain in chains(document_commands(doc))]
    assert got == [
        ["--model", "--model", "compare"],
        ["find", "export"],
        ["model-path", "--model"],
        ["bench"],
        ["report", "report"],  # the second process shares the first's --out
    ]


@pytest.mark.slow
@pytest.mark.parametrize(("chain", "groups"), _chain_params())
def test_doc_commands_run_as_written(chain, groups, tmp_path):
    """Every command of README.md and docs/*.md, chain by chain (see ``chains``)."""
    failures, runner = run_document(chain, tmp_path, groups)
    print("\n".join(runner.log))
    assert not failures, "commands that fail:\n\n" + "\n\n".join(failures)
    shutil.rmtree(tmp_path, ignore_errors=True)  # exported checkpoints are large
