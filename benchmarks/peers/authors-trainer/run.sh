#!/usr/bin/env bash
# Full BiPO (authors' trainer) run on SmolLM2-135M-Instruct, CPU, fp32:
# 64 rows of data/hallucination/train.csv, batch 4, 5 epochs -> 80 optimizer steps.
# Extra arguments are passed through to train.py (e.g. --max_steps 2 --vec_out ... for a smoke test).
# Thread count is taken from the environment (OMP_NUM_THREADS / torch default); it is printed below.
set -euo pipefail
cd /tmp/authors-run/BiPO
export HF_HOME=/tmp/authors-run/hf_home HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false WANDB_DISABLED=true
echo "cpus_online=$(getconf _NPROCESSORS_ONLN) OMP_NUM_THREADS=${OMP_NUM_THREADS:-unset}"
date
/tmp/authors-run/venv/bin/python train.py \
  --model_name_or_path /tmp/authors-run/model \
  --behavior hallucination \
  --layer 15 \
  --per_device_train_batch_size 4 \
  --num_train_epochs 5 \
  --learning_rate 5e-3 \
  --warmup_steps 8 \
  "$@"
date
