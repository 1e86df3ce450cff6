#!/usr/bin/env bash
# The knowledge-neuron re-run of settings.yaml, in its order; resumable (re-run this
# script: finished evaluations are read from runs/). Commits runs/ and specificity/
# after each step and every 5 minutes while a step runs (partial results).
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
PY=.venv/bin/python
OUT=docs/report-kn-v2
KN=neuron_sets/smollm2-135m/knowledge_neurons.jsonl.gz
export STOP_AT=${STOP_AT:-}   # e.g. 14:03: no commit after this time (HH:MM, today)

RUN_PREFIX=$OUT
RUN_PATHS=("$OUT/runs" "$OUT/specificity" "$OUT/report.md" "$OUT/results.json" "$OUT/reasoning.png")
source scripts/long_run.sh

NOCOT=relfacts_2hop,relfacts_2hop_hop1_heldout,relfacts_2hop_hop1
run_step "own and swapped, suppressed (the shipped set), without CoT" \
    $PY scripts/kn_specificity.py --kn-set $KN --out $OUT/specificity/none \
    --runs $OUT/runs --modes deactivate --tasks $NOCOT
run_step "own and swapped, suppressed (the shipped set), CoT" \
    $PY scripts/kn_specificity.py --kn-set $KN --out $OUT/specificity/none \
    --runs $OUT/runs --modes deactivate
for refine in drop-shared=10 drop-objects=3; do
    run_step "refinement $refine: own and swapped, suppressed" \
        $PY scripts/kn_specificity.py --kn-set $KN --refine $refine \
        --out $OUT/specificity/${refine/=/} --runs $OUT/runs --modes deactivate \
        --tasks $NOCOT
done
run_step "the report (enhancement, shared pool, random controls)" \
    .venv/bin/relneuron report --model smollm2-135m \
    --neuron-set neuron_sets/smollm2-135m/relation_specific.jsonl.gz \
    --kn-set $KN --out $OUT --threads 1 --seeds 0,1,2 --metric acc_match \
    --experiments reasoning --reasoning-limit none --no-progress
