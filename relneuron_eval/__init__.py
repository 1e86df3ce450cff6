"""relneuron-eval: neuron interventions as ordinary lm-evaluation-harness runs.

This module is imported at interpreter start-up by ``relneuron_eval.pth`` (through
``_hook``), so it must stay tiny: no torch, transformers or lm_eval imports here.
"""

__version__ = "0.1.0"
