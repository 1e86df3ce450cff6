"""lm-eval integration: the ``relneuron-hf`` model, plugin registration, the few-shot
sampler, the tasks' data loaders and metrics, and the shared-prefix KV cache."""
