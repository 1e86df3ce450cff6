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
STOP_AT=${STOP_AT:-}   # e.g. 14:03: no commit after this time (HH:MM, today)

commit() {
    if [ -n "$STOP_AT" ] && [[ "$(date +%H:%M)" > "$STOP_AT" ]]; then return; fi
    local paths=()
    for p in "$OUT/runs" "$OUT/specificity"; do [ -e "$p" ] && paths+=("$p"); done
    [ ${#paths[@]} -eq 0 ] && return
    for _ in 1 2 3 4 5; do
        git add "${paths[@]}" 2>/dev/null
        git diff --cached --quiet -- "${paths[@]}" && return  # nothing new
        git commit -q -m "docs/report-kn-v2: $1" -- "${paths[@]}" >/dev/null 2>&1 && return
        sleep 7
    done
}

step() {  # name, command...
    local name=$1; shift
    echo "== $(date +%T) $name" >&2
    nice -n 10 "$@" &
    local pid=$!
    local polls=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 10
        polls=$((polls + 1))
        if [ $((polls % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null; then
            commit "partial runs ($name)"
        fi
    done
    wait "$pid"
    echo "== $(date +%T) $name exited $?" >&2
    commit "$name"
}

NOCOT=relfacts_2hop,relfacts_2hop_hop1_heldout,relfacts_2hop_hop1
step "own and swapped, suppressed (the shipped set), without CoT" \
    $PY scripts/kn_specificity.py --kn-set $KN --out $OUT/specificity/none \
    --runs $OUT/runs --modes deactivate --tasks $NOCOT
step "own and swapped, suppressed (the shipped set), CoT" \
    $PY scripts/kn_specificity.py --kn-set $KN --out $OUT/specificity/none \
    --runs $OUT/runs --modes deactivate
for refine in drop-shared=10 drop-objects=3; do
    step "refinement $refine: own and swapped, suppressed" \
        $PY scripts/kn_specificity.py --kn-set $KN --refine $refine \
        --out $OUT/specificity/${refine/=/} --runs $OUT/runs --modes deactivate \
        --tasks $NOCOT
done
step "the report (enhancement, shared pool, random controls)" \
    .venv/bin/relneuron report --model smollm2-135m \
    --neuron-set neuron_sets/smollm2-135m/relation_specific.jsonl.gz \
    --kn-set $KN --out $OUT --threads 1 --seeds 0,1,2 --metric acc_match \
    --experiments reasoning --reasoning-limit none --no-progress
git add $OUT/report.md $OUT/results.json $OUT/reasoning.png 2>/dev/null && \
    git commit -q -m "docs/report-kn-v2: report" -- $OUT/report.md $OUT/results.json $OUT/reasoning.png
