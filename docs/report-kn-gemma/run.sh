#!/usr/bin/env bash
# docs/report-kn-gemma/settings.yaml's order, its commands read from the file (steps 1 and 3
# verbatim; step 2 is step 1 with the refinement the file names). Resumable: re-run this
# script (finished evaluations are read from runs/); a second copy started beside it shares
# the work (the runner claims each evaluation). Commits runs/ and specificity/ after each
# step and every 5 minutes while one runs.
set -u
cd "$(dirname "$0")/../.."
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
OUT=docs/report-kn-gemma
order() { .venv/bin/python -c "import yaml, sys; print(yaml.safe_load(open('$OUT/settings.yaml'))['order'][$1])"; }

commit() {
    local paths=()
    for p in "$OUT/runs" "$OUT/specificity"; do [ -e "$p" ] && paths+=("$p"); done
    [ ${#paths[@]} -eq 0 ] && return
    for _ in 1 2 3 4 5; do
        git add "${paths[@]}" 2>/dev/null
        git diff --cached --quiet -- "${paths[@]}" && return  # nothing new
        git commit -q -m "$OUT: $1" -- "${paths[@]}" >/dev/null 2>&1 && return
        sleep 7
    done
}

step() {  # name, command line (one string, as settings.yaml writes it)
    local name=$1 line=$2
    echo "== $(date +%T) $name: $line" >&2
    read -r -a argv <<< "$line"
    [ "${argv[0]}" = python ] && argv[0]=.venv/bin/python
    [ "${argv[0]}" = relneuron ] && argv[0]=.venv/bin/relneuron
    nice -n 10 "${argv[@]}" &
    local pid=$! polls=0
    while kill -0 "$pid" 2>/dev/null; do
        sleep 10
        polls=$((polls + 1))
        [ $((polls % 30)) -eq 0 ] && kill -0 "$pid" 2>/dev/null && commit "partial runs ($name)"
    done
    wait "$pid" || { echo "== $name failed" >&2; exit 1; }
    commit "$name"
}

first=$(order 1)
step "1: own and swapped, suppressed (the shipped set)" "$first"
refined=${first/--out $OUT\/specificity\/none/--refine drop-objects=3 --out $OUT/specificity/drop-objects3}
step "2: refinement drop-objects=3" \
    "$refined --tasks relfacts_2hop,relfacts_2hop_hop1_heldout,relfacts_2hop_hop1"
step "3: the report (enhancement, shared pool, random controls)" "$(order 3)"
git add $OUT/report.md $OUT/results.json $OUT/reasoning.png 2>/dev/null &&
    git commit -q -m "$OUT: report" -- $OUT/report.md $OUT/results.json $OUT/reasoning.png
