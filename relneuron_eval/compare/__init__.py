"""``relneuron compare``: a base model and its variants side by side, from lm-eval's output files."""
