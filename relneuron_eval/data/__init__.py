"""Facts and tasks as data: relations, splits, two-hop chains, the multilingual probes,
and the generators of the shipped task YAMLs and GeoNames/CLDR facts (no torch, no lm-eval)."""
