"""Where does a vector that is still fluent at the top of the equal-fluency ladder stop being fluent?

The figures' baselines stage reads every method on the ladder 0, +1, ..., +16 (then 3 halvings where
the perplexity budget binds). Activation-margin BiPO was still within the budget at +16, so its
equal-fluency row is a lower bound. This script answers for it (or any method of the stage) further
up, with the stage's own settings (the full budget: 48 held-out pairs, 24 questions, 40 new tokens),
adds those rows to the stage's saved ones, halves the new bracket like the stage, and reads the
equal-fluency table again. One process; prints the rows it adds and the method's new reading.

    python benchmarks/ladder_extension.py [--method bipo_activation_margin] [--rungs 16,24,32,48,64]
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

from bipo_lens import SteeringVector, load_model, load_pairs
from bipo_lens.analysis.baselines import compare_at_equal_fluency
from bipo_lens.evaluation import MarginScorer, evaluate
from bipo_lens.evaluation.fluency import bisect_budget
from bipo_lens.figures import FULL
from bipo_lens.pairs import shared_data_dir

parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
parser.add_argument("--method", default="bipo_activation_margin")
parser.add_argument("--rungs", default="16,24,32,48,64")
parser.add_argument("--work-dir", default="figures/work")
args = parser.parse_args()
started = time.time()
work = Path(args.work_dir)
stage = json.loads((work / "stage_baselines.json").read_text())
names = [r["method"] for r in stage["fluency"]]
vectors = {name: SteeringVector.load(work / f"power_seeking_{name}.safetensors") for name in names}
test = load_pairs(shared_data_dir() / "bipo" / "power-seeking" / "test.csv")[: FULL.test_pairs]
model = load_model()
scorer = MarginScorer(model, test)


def answers(name: str, multipliers: list[float]) -> list[dict]:
    return evaluate(model, {name: vectors[name]}, test, multipliers, max_questions=FULL.test_pairs,
                    max_generations=FULL.fluency_questions, max_new_tokens=FULL.max_new_tokens, progress=False,
                    scorer=scorer)["results"]


rungs = [float(r) for r in args.rungs.split(",")]
saved = {r["multiplier"]: r for r in stage["evaluated"] if r["vector"] == args.method}
fresh = answers(args.method, rungs)
for row in fresh:
    again = saved.get(row["multiplier"])
    check = f"   (saved: {again['perplexity']:.3f}, margin {again['logprob_margin']:+.3f})" if again else ""
    print(f"{args.method} at {row['multiplier']:+g}: perplexity {row['perplexity']:.3f}, distinct-2 "
          f"{row['distinct2']:.3f}, margin {row['logprob_margin']:+.3f}{check}")
rows = stage["evaluated"] + [r for r in fresh if r["multiplier"] not in saved]
rows = bisect_budget(rows, lambda name, mid: answers(name, [mid]), [args.method], FULL.fluency_bisections)
for row in rows[len(stage["evaluated"]) + len([r for r in fresh if r["multiplier"] not in saved]):]:
    print(f"{args.method} at {row['multiplier']:+g} (halving): perplexity {row['perplexity']:.3f}, "
          f"margin {row['logprob_margin']:+.3f}")
table = {r["method"]: r for r in compare_at_equal_fluency(scorer, rows, vectors, "bipo")}
for name in ("bipo", args.method):
    r = table[name]
    print(f"{name}: read at {r['multiplier_at_budget']}, " + ", ".join(
        f"{k} {json.dumps(v)}" for k, v in r.items() if k not in ("method", "multiplier_at_budget", "budget_resampled")))
print(f"wall {time.time() - started:.0f} s")
