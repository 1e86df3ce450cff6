"""Relation checks: expectations about a neuron set in YAML, judged by lm-eval runs (pytest plugin)."""
