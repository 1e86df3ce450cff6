#!/usr/bin/env bash
# docs/report-kn-gemma/settings.yaml's order, its commands read from the file (steps 1 and 3
# verbatim; step 2 is step 1 with the refinement the file names). Resumable: re-run this
# script (finished evaluations are read from runs/); a second copy started beside it shares
# the work (the runner claims each evaluation). Commits runs/ and specificity/ after each
# step and every 5 minutes while one runs; ends with report-check.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=docs/report-kn-gemma
order() { .venv/bin/python -c "import yaml, sys; print(yaml.safe_load(open('$OUT/settings.yaml'))['order'][$1])"; }

RUN_PREFIX=$OUT
RUN_PATHS=("$OUT/runs" "$OUT/specificity" "$OUT/report.md" "$OUT/results.json" "$OUT/reasoning.png")
source scripts/long_run.sh

step() {  # name, command line (one string, as settings.yaml writes it)
    local name=$1 argv
    read -r -a argv <<< "$2"
    [ "${argv[0]}" = python ] && argv[0]=.venv/bin/python
    [ "${argv[0]}" = relneuron ] && argv[0]=.venv/bin/relneuron
    run_step "$name" "${argv[@]}" || exit 1
}

first=$(order 1)
step "1: own and swapped, suppressed (the shipped set)" "$first"
refined=${first/--out $OUT\/specificity\/none/--refine drop-objects=3 --out $OUT/specificity/drop-objects3}
step "2: refinement drop-objects=3" \
    "$refined --tasks relfacts_2hop,relfacts_2hop_hop1_heldout,relfacts_2hop_hop1"
step "3: the report (enhancement, shared pool, random controls)" "$(order 3)"
# every number re-derived from runs/, whose checksums it writes (runs/SHA256SUMS)
.venv/bin/relneuron report-check "$OUT" --update-manifest && commit_partial "report-check"
