"""Evaluation results and the statistics every command uses (one paired-test rule)."""
