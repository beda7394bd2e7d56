"""Where a command's first seconds go: the phases of ``load_model`` in a fresh process, repeated.

Usage: python benchmarks/startup.py [--repeats 3] [--model smollm2-135m-instruct]

Every CLI command that loads a model pays this before its first forward pass, and so does every test
that runs one: the suite's time is largely this times the number of such processes. Each repeat runs
in its own process (imports are the point); the model's cache entry must exist (load it once first).
Phases, in the order ``load_model`` meets them:

- ``torch``: ``import torch``
- ``transformers``: ``transformers.modeling_utils`` and the Auto classes (transformers 5 imports
  ``torch.distributed.tensor`` and ``torch._dynamo`` from here)
- ``transformer_lens``: the rest of ``transformer_lens.model_bridge``
- ``hf load``: tokenizer and weights from the cache entry
- ``raw twin``: :func:`bipo_lens.models._raw_twin`
- ``bridge boot``: ``TransformerBridge.boot_transformers``; ``compat``: ``enable_compatibility_mode``
"""

import argparse
import json
import statistics
import subprocess
import sys

PHASES = """
import json, sys, time
t = [time.perf_counter()]
import torch; t.append(time.perf_counter())
import transformers.modeling_utils; from transformers import AutoModelForCausalLM, AutoTokenizer; t.append(time.perf_counter())
from transformer_lens.model_bridge import TransformerBridge; t.append(time.perf_counter())
from bipo_lens import models
hf, tokenizer, chat = models._load_hf(sys.argv[1]); t.append(time.perf_counter())
raw = models._raw_twin(hf); t.append(time.perf_counter())
bridge = TransformerBridge.boot_transformers(models._bridge_name(sys.argv[1]), hf_model=hf, tokenizer=tokenizer)
t.append(time.perf_counter())
bridge.enable_compatibility_mode(no_processing=True, disable_warnings=True); t.append(time.perf_counter())
print(json.dumps([b - a for a, b in zip(t, t[1:])]))
"""
NAMES = ["torch", "transformers", "transformer_lens", "hf load", "raw twin", "bridge boot", "compat"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--model", default="smollm2-135m-instruct")
    args = parser.parse_args()
    runs = []
    for _ in range(args.repeats):
        done = subprocess.run([sys.executable, "-c", PHASES, args.model], capture_output=True, text=True, check=True)
        runs.append(json.loads(done.stdout.strip().splitlines()[-1]))
    print(f"{args.model}, {args.repeats} fresh processes; seconds per phase (median, min-max):")
    for i, name in enumerate(NAMES):
        values = [run[i] for run in runs]
        print(f"  {name:17s} {statistics.median(values):5.2f}  ({min(values):.2f}-{max(values):.2f})")
    totals = [sum(run) for run in runs]
    print(f"  {'total':17s} {statistics.median(totals):5.2f}  ({min(totals):.2f}-{max(totals):.2f})")


if __name__ == "__main__":
    main()
