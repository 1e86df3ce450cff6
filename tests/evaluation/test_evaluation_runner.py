"""``evaluation.runner``: variant identity (the report's cache keys) and the restore check."""

from __future__ import annotations

import pytest

from relneuron_eval.errors import RelNeuronError
from relneuron_eval.evaluation.runner import LoadedModel, Variant, cache_key

# The variants a report makes (report/setup.py): deactivations, their random controls,
# knowledge neurons per document.
REPORT_VARIANTS = [
    {"groups": "company_hq", "mode": "deactivate", "top_k": 10},
    {"groups": "company_hq", "mode": "deactivate"},
    {"groups": "company_hq", "mode": "deactivate", "top_k": 10, "control": "random", "seed": 0},
    {"groups": "company_hq", "mode": "deactivate", "control": "random", "seed": 3},
    {"groups": "*", "per_doc": "hop1_fact", "mode": "deactivate"},
    {"groups": "*", "per_doc": "hop1_fact", "mode": "enhance", "factor": 2.0},
]


@pytest.mark.parametrize("args", REPORT_VARIANTS)
def test_report_caches_written_before_intervention_specs_stay_valid(args):
    """Before ``InterventionSpec``, a variant's key was its given args (no neuron_set)
    plus the set's hash; a report's ``runs/`` written then must be found again."""
    variant = Variant.make("label", "/some/set.jsonl", "abc123", **args)
    assert variant.key() == {**args, "neuron_set_sha256": "abc123"}
    model = {"model": "m"}
    same = Variant.make("other label", "/copy/set.jsonl", "abc123", **args)
    assert cache_key(model, variant, "t") == cache_key(model, same, "t")
    assert variant.to_model_args()["neuron_set"] == "/some/set.jsonl"
    assert Variant.base().key() == {} and Variant.base().to_model_args() == {}


def test_a_changed_weight_is_caught(llama):
    import torch

    model = llama
    loaded = LoadedModel(lambda: (model, None), batch_size=1)
    loaded._load()
    loaded.check_restored("nothing")
    with torch.no_grad():
        next(model.parameters())[0, 0] += 1e-3
    with pytest.raises(RelNeuronError, match="weights changed during ablate"):
        loaded.check_restored("ablate")
