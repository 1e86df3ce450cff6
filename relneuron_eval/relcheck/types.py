"""What a parsed check file is: the interventions, expectations and settings it declares.

Kept apart from ``relcheck`` (which reads and validates the file) because the runner
and the judge only need these types, never the YAML. Pure Python.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from relneuron_eval.core.spec import InterventionSpec
from relneuron_eval.errors import RelNeuronError

OTHERS = "others"  # expectation tasks: every task of the check not named elsewhere
BASE = "base"  # compare ... than: the unmodified model


@dataclass
class NamedIntervention:
    """One named intervention of a check file: its settings on top of the base model."""

    name: str
    spec: InterventionSpec  # neuron_set: the intervention's own set; None = the check's
    line: int

    @property
    def neuron_set(self) -> str | None:
        """Its own set (absolute path or shipped name); None: the check's top-level set."""
        return self.spec.neuron_set

    @property
    def args(self) -> dict[str, Any]:
        """relneuron-hf model args besides neuron_set (only the settings that differ from
        their defaults: groups/layers/sites as "a|b", "0|1")."""
        return {k: v for k, v in self.spec.to_model_args().items() if k != "neuron_set"}

    @property
    def is_random_control(self) -> bool:
        return self.spec.control == "random"

    def with_set(self, neuron_set: str | None) -> InterventionSpec:
        """The full spec, with the check's ``neuron_set`` unless it has its own."""
        return replace(self.spec, neuron_set=self.spec.neuron_set or neuron_set)

    def describe(self) -> str:
        parts = [f"{k}={v}" for k, v in self.args.items()]
        return " ".join(parts) or "(all groups, deactivate)"


@dataclass
class Expectation:
    """One expectation = one pytest item."""

    kind: str
    intervention: str
    tasks: list[str] | None  # patterns; None = the check's tasks; ["others"] = the rest
    excludes: list[str]
    metric: str | None
    over: str  # "each" or "mean"
    relative: bool
    threshold: float
    than: str | None = None  # compare: the reference intervention or "base"
    direction: str | None = None  # compare: "worse" or "better"
    alpha: float | None = None
    id: str = ""
    line: int = 0

    @property
    def uses_others(self) -> bool:
        return self.tasks == [OTHERS]

    def interventions(self) -> list[str]:
        """Every intervention whose scores this expectation reads (besides the base)."""
        names = [self.intervention]
        if self.than and self.than != BASE:
            names.append(self.than)
        return names

    def describe(self) -> str:
        """One sentence, as in the failure message."""
        what = f"{self.metric or 'acc'}"
        where = (
            "the other tasks"
            if self.uses_others
            else ("the check's tasks" if self.tasks is None else ", ".join(self.tasks))
        )
        if self.excludes:
            where += f" except {', '.join(self.excludes)}"
        scale = "relative to the base" if self.relative else "absolute"
        agg = "on the mean over" if self.over == "mean" else "on each of"
        t = f"{self.threshold:g}"
        if self.kind == "drop":
            body = f"{self.intervention} lowers {what} by at least {t} ({scale})"
        elif self.kind == "within":
            body = f"{self.intervention} changes {what} by at most ±{t} ({scale})"
        elif self.kind in ("drop_below", "control_drop_below"):
            body = f"{self.intervention} lowers {what} by less than {t} ({scale})"
        elif self.kind == "raises":
            body = f"{self.intervention} raises {what}" + (
                f" by at least {t} ({scale})" if self.threshold > 0 else ""
            )
        else:
            word = "lower" if self.direction == "worse" else "higher"
            body = f"{self.intervention} scores {word} on {what} than {self.than}" + (
                f" by at least {t} ({scale})" if self.threshold > 0 else ""
            )
        if self.alpha is not None:
            body += f", with paired p < {self.alpha:g}"
        return f"{body}, {agg} {where}"


@dataclass
class CheckSpec:
    """A parsed and validated check file (before command-line overrides)."""

    path: Path
    model: str
    model_args: dict[str, Any]
    neuron_set: str | dict[str, str] | None
    neuron_set_line: int | None
    include_path: list[Path]
    defaults: dict[str, Any]
    tasks: list[str]
    tasks_line: int
    interventions: dict[str, NamedIntervention]
    expectations: list[Expectation]
    description: str = ""
    lines: dict[str, int] = field(default_factory=dict)

    def error(
        self, message: str, line: int | None = None, hint: str | None = None
    ) -> RelNeuronError:
        return RelNeuronError(message, path=self.path, line=line, hint=hint)

    def neuron_set_for(self, model: str) -> str | None:
        """The top-level neuron set to use with ``model`` (None if the mapping lacks it)."""
        if isinstance(self.neuron_set, dict):
            return self.neuron_set.get(model)
        return self.neuron_set
