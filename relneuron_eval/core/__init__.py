"""What an intervention is: the architecture table, neuron sets, the fold-or-hook edits and their names.

Torch and transformers only; nothing here imports lm-eval, so every layer above can use it."""
