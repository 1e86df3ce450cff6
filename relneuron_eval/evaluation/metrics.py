"""What ``--metric`` means in the report and the leaderboard: the task that measures a
relation and the per-document metric read from it (one table, used by both)."""

from __future__ import annotations

# --metric -> (task name pattern, per-document metric)
METRICS: dict[str, tuple[str, str]] = {
    "acc_prefix2": ("relfacts_{r}", "acc_prefix2"),  # the paper's first-two-tokens metric
    "acc_match": ("relfacts_{r}", "acc_match"),  # the greedy answer matches an accepted one
    "mc": ("relfacts_mc_{r}", "acc"),  # the gold object scores highest among the relation's
    "mc_calibrated": ("relfacts_mc_{r}", "acc_calibrated"),  # ... after removing the prior
}


def metric_task(metric: str, relation: str) -> tuple[str, str]:
    """(task, per-document metric) that measures ``relation`` under ``metric``."""
    pattern, key = METRICS[metric]
    return pattern.format(r=relation), key


def is_multiple_choice(metric: str) -> bool:
    return METRICS[metric][0].startswith("relfacts_mc_")
