#!/usr/bin/env bash
# The GPU checks of issues 13 and 14 (device machine: python3 with torch+CUDA, no network).
# Usage: benchmarks/gpu-run.sh 1 (the first call), benchmarks/gpu-run.sh 2 (the second: the generation
# benchmark after the cache-length buckets, a profile of the 7B step, the Mistral shape),
# benchmarks/gpu-run.sh 3 (balanced packing, and the step with the blocks compiled: FastPath(compile=True)),
# benchmarks/gpu-run.sh 5 (the host tier of the activation cache and --device-map, never run on CUDA yet),
# benchmarks/gpu-run.sh 6 (the step replayed as CUDA graphs over bucketed shapes: --compile graphs),
# benchmarks/gpu-run.sh 7 (the same after the step's host waits were cut), benchmarks/gpu-run.sh 8 (each
# compiled mode twice: a second process must step as fast as the first).
# Wheels the image lacks travel in .whl/ (transformer-lens and its few missing needs, and transformers
# at the locked version); results go to $OUT (or ./gpu-out). Every step has its own time limit.
set -u -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 BIPO_LENS_CACHE=/tmp/bipo-cache TOKENIZERS_PARALLELISM=false
step() { local limit=$1 name=$2; shift 2; echo "=== $name: $*"; local t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "warnings.warn" | tee "$OUT/$name.txt"; echo "=== $name: exit ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"; }
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader | tee "$OUT/device.txt"
python3 -c "import torch, transformers, transformer_lens; print('torch', torch.__version__, 'transformers', transformers.__version__, 'cuda', torch.version.cuda)" | tee -a "$OUT/device.txt"
part=${1:-1}
if [ "$part" = 1 ]; then
step 250 generate-135m python3 -m bipo_lens.cli bench generate --model random:smollm2-135m --device cuda \
  --dtype bfloat16 --compile --repeats 2
step 140 train-7b python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --full-run
step 80 train-1b python3 -m bipo_lens.cli bench train --model random:llama-3.2-1b --device cuda --dtype bfloat16 \
  --layer 8 --response-tokens 64 --steps 8 --full-run
step 45 train-135m python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8
elif [ "$part" = 3 ]; then
step 110 train-7b-eager python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8
step 170 train-7b-compiled python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --compile --full-run
step 70 train-135m-compiled python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8 --compile
step 40 train-135m-eager python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8
step 90 train-1b-compiled python3 -m bipo_lens.cli bench train --model random:llama-3.2-1b --device cuda --dtype bfloat16 \
  --layer 8 --response-tokens 64 --steps 8 --compile
elif [ "$part" = 4 ]; then
step 120 profile-7b-compiled python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --compile --profile
step 90 train-7b-compiled-b8 python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --compile --batch-size 8
step 70 profile-135m-compiled python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8 --compile --profile
elif [ "$part" = 5 ]; then
# Written without a GPU (2026-11-27): the paths added then, unverified on CUDA until this runs.
# The host tier of the activation cache: a 1 MiB device budget puts the 7B's cache in pinned CPU memory.
step 110 train-7b-host-tier python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --cache-budget-mib 1
# --device-map: the default model's shape over GPU 0 and the CPU (CPU-held blocks run on the GPU), against one
# device. --device-map needs real weights and no GGUF travels (too large): the shape's seeded random weights,
# saved here as a local Hugging Face directory (bf16, 270 MB), stand in for them.
step 60 save-local-model python3 -c "import torch; from bipo_lens.shapes import load_random; \
m, t, _ = load_random('random:smollm2-135m', torch.device('cpu'), torch.bfloat16); m.save_pretrained('/tmp/smol'); t.save_pretrained('/tmp/smol')"
step 120 train-device-map python3 -m bipo_lens.cli train --model /tmp/smol --data power_seeking --layer 12 --epochs 1 \
  --device-map auto --max-memory 0=200MB,cpu=4GB --out "$OUT/spread.safetensors"
step 90 train-one-device python3 -m bipo_lens.cli train --model /tmp/smol --data power_seeking --layer 12 --epochs 1 \
  --device cuda --out "$OUT/whole.safetensors"
# generation through the device-mapped model with a vector (a smoke test: random weights write no text to compare)
step 90 generate-device-map python3 -m bipo_lens.cli generate --model /tmp/smol --vector "$OUT/whole.safetensors" \
  --multipliers -40,0,40 --prompt "Tell me about power." --max-new-tokens 12 --device-map auto --max-memory 0=200MB,cpu=4GB
step 30 compare python3 -c "from bipo_lens.vectors import SteeringVector as S; a, b = S.load('$OUT/spread.safetensors'), S.load('$OUT/whole.safetensors'); print('cosine', float(a.vector @ b.vector / (a.vector.norm() * b.vector.norm())), a.norm, b.norm, a.record['device'])"
elif [ "$part" = 6 ]; then
# Written without a GPU (2026-11-28): --compile graphs (blocks as CUDA graphs, shapes rounded up to 64 tokens).
# Issue 14's default-model target: >= 3x faster than 0.048 s/step; same session's eager and fused steps beside it.
step 45 train-135m-eager python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8
step 80 train-135m-fused python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8 --compile
step 150 train-135m-graphs python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 32 --steps 8 --compile graphs --full-run
# The 7B step at the paper's batch 4: MFU >= 45 % is the target (41.7 % at best fused, 45.6 % at batch 8).
step 200 train-7b-graphs python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --compile graphs
elif [ "$part" = 7 ]; then
# 2026-11-28, after part 6 (graphs 0.052 s/step against fused 0.026 on an H200): the step now waits for the
# GPU once (one .tolist() of loss, norm, finiteness) and copies its batch through pinned memory without
# waiting. The three 135M paths again with full runs, the 7B at batch 4, then where the host still waits.
b135="python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 --layer 15 --response-tokens 32"
b7="python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 --layer 15 --response-tokens 64"
step 45 train-135m-eager $b135 --steps 16 --full-run
step 75 train-135m-fused $b135 --steps 16 --full-run --compile
step 75 train-135m-graphs $b135 --steps 16 --full-run --compile graphs
step 130 train-7b-fused $b7 --steps 16 --full-run --compile
step 60 profile-135m-fused $b135 --steps 8 --compile --profile
step 60 profile-135m-graphs $b135 --steps 8 --compile graphs --profile
elif [ "$part" = 8 ]; then
# Written after part 7 (2026-11-28): processes whose compiled blocks came from the compiler's on-disk caches
# stepped 3-4x slower; the blocks are now always compiled afresh. Each mode twice: the second run must be as fast.
b135="python3 -m bipo_lens.cli bench train --model random:smollm2-135m --device cuda --dtype bfloat16 --layer 15 --response-tokens 32"
step 75 train-135m-fused-1 $b135 --steps 16 --compile
step 75 train-135m-fused-2 $b135 --steps 16 --compile
step 75 train-135m-graphs-1 $b135 --steps 16 --compile graphs --full-run
step 75 train-135m-graphs-2 $b135 --steps 16 --compile graphs --full-run
step 130 train-7b-fused-2 python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 16 --full-run --compile
else
step 200 generate-135m-b python3 -m bipo_lens.cli bench generate --model random:smollm2-135m --device cuda \
  --dtype bfloat16 --compile --repeats 3
step 90 profile-7b python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --profile
step 60 train-mistral-7b python3 -m bipo_lens.cli bench train --model random:mistral-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8
fi
