#!/usr/bin/env bash
# Gemma 3 270M relation-specific discovery as settings.yaml fixes it; resumable (run again).
set -eu
cd "$(dirname "$0")/../.."
mkdir -p neuron_sets/gemma3-270m
export HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 OMP_NUM_THREADS=1 MKL_NUM_THREADS=1
cmd=$(.venv/bin/python -c "import yaml; print(yaml.safe_load(open('docs/gemma-discovery/settings.yaml'))['relation_specific']['command'])")
nice -n 10 .venv/bin/$cmd
git add neuron_sets/gemma3-270m/relation_specific.jsonl.gz
git commit -q -m "neuron_sets/gemma3-270m: relation-specific set (settings.yaml's command)" \
    -- neuron_sets/gemma3-270m/relation_specific.jsonl.gz
