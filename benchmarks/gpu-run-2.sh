#!/usr/bin/env bash
# Second GPU call: the generation benchmark after the cache-length buckets; a profile of the 7B step;
# the Mistral shape. Same set-up as gpu-run.sh.
set -u -o pipefail
OUT=${OUT:-gpu-out}; mkdir -p "$OUT"
if [ -d .whl ]; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 1
  export PYTHONPATH=/tmp/site:$PWD
fi
export PYTHONUNBUFFERED=1 BIPO_LENS_CACHE=/tmp/bipo-cache TOKENIZERS_PARALLELISM=false
step() { local limit=$1 name=$2; shift 2; echo "=== $name: $*"; local t0=$(date +%s)
  timeout "$limit" "$@" 2>&1 | grep -v -e "Warning" -e "warnings.warn" | tee "$OUT/$name.txt"; echo "=== $name: exit ${PIPESTATUS[0]} in $(( $(date +%s) - t0 )) s"; }
step 200 generate-135m-b python3 -m bipo_lens.cli bench generate --model random:smollm2-135m --device cuda \
  --dtype bfloat16 --compile --repeats 3
step 90 profile-7b python3 -m bipo_lens.cli bench train --model random:llama-2-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8 --profile
step 60 train-mistral-7b python3 -m bipo_lens.cli bench train --model random:mistral-7b --device cuda --dtype bfloat16 \
  --layer 15 --response-tokens 64 --steps 8
