"""relneuron-eval: neuron interventions as ordinary lm-evaluation-harness runs.

This module is imported at interpreter start-up by ``relneuron_eval.pth`` (through
``_hook``), so it must stay tiny: no torch, transformers or lm_eval imports here.
Being imported that early, pytest cannot rewrite its asserts when it loads our pytest11
plugin; PYTEST_DONT_REWRITE tells it not to try (and not to warn in every test run).
"""

__version__ = "0.1.0"
