"""Measure the judges before trusting them, on every behaviour set there is.

    python benchmarks/judge_check.py [--out F.json] [--behaviours a,b] [--questions 24]

Per behaviour:
1. accuracy on labelled answers: the fraction of reference pairs whose matching response the judge
   scores above the not-matching one (embedding centroids: leave-one-out; probe: 5-fold), on the
   training pairs, the judge's own fitting data;
2. a known effect: CAA trained on up to 64 training pairs at layer 15 of the default model, the
   same vector at +2 and at -2 on held-out questions (greedy, 40 new tokens); each judge (fitted
   on up to 100 held-out pairs, as ``eval`` fits it) scores both answers, and the effect is the mean
   difference with its 95% paired bootstrap interval over questions; ``spread`` is the standard
   deviation of the scores at one multiplier (how noisy one answer's score is).
A judge can see the effect where the interval excludes zero. One process, prints a table.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bipo_lens import load_model  # noqa: E402
from bipo_lens.evaluation import EmbeddingJudge, ProbeJudge, evaluate  # noqa: E402
from bipo_lens.evaluation.intervals import paired_difference_ci  # noqa: E402
from bipo_lens.pairs import load_pairs, shared_data_dir, split_pairs  # noqa: E402
from bipo_lens.records import finish_record, start_record  # noqa: E402
from bipo_lens.training import train_caa  # noqa: E402


def behaviour_sets() -> dict[str, tuple[list, list, list[str]]]:
    """name -> (train pairs, held-out pairs, files read)."""
    found = {}
    shared = shared_data_dir()
    if shared.is_dir():
        ps = shared / "bipo" / "power-seeking"
        found["power-seeking (BiPO)"] = (load_pairs(ps / "train.csv"), load_pairs(ps / "test.csv"),
                                         [str(ps / "train.csv"), str(ps / "test.csv")])
        files = {"truthfulqa": shared / "truthfulqa" / "TruthfulQA.csv",
                 **{f.stem: f for f in sorted((shared / "anthropic-evals").rglob("*.jsonl"))}}
        for name, path in files.items():
            train, test = split_pairs(load_pairs(path), 0.25, seed=0)
            found[name] = (train, test, [str(path)])
    for name in ("optimism", "formality"):
        train, test = split_pairs(load_pairs(name), 0.25, seed=0)
        found[f"{name} (built-in)"] = (train, test, [])
    return found


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=None)
    parser.add_argument("--behaviours", default=None, help="comma-separated names (default: all)")
    parser.add_argument("--questions", type=int, default=24)
    parser.add_argument("--layer", type=int, default=15)
    parser.add_argument("--multiplier", type=float, default=2.0)
    args = parser.parse_args()

    sets = behaviour_sets()
    if args.behaviours:
        sets = {k: v for k, v in sets.items() if k in args.behaviours.split(",")}
    model = load_model(device="cpu")
    record = start_record(command="python benchmarks/judge_check.py " + " ".join(sys.argv[1:]), model=model,
                          data=[f for *_, files in sets.values() for f in files], seeds={"split": 0})
    judges = {"embedding": EmbeddingJudge(), "probe": ProbeJudge()}
    rows = []
    for name, (train, test, _) in sets.items():
        started = time.time()
        train = train[:256]
        accuracy = {k: j.validation_accuracy(train) for k, j in judges.items()}
        vector = train_caa(model, train[:64], args.layer)
        m = args.multiplier
        report = evaluate(model, {"CAA": vector}, test, [-m, m], judge=judges["embedding"], max_questions=100,
                          max_generations=args.questions, max_new_tokens=40, progress=False)
        answers = {g["multiplier"]: [] for g in report["generations"]}
        for g in report["generations"]:
            answers[g["multiplier"]].append(g["answer"])
        questions = list(dict.fromkeys(p.question for p in test))[: args.questions]
        reference = {p.question: p for p in test}
        row = {"behaviour": name, "train_pairs": len(train), "questions": len(questions),
               "margin_range": report["summary"]["CAA"]["logprob_margin"]["range"]}
        for key, judge in judges.items():
            judge.fit(test[:100])  # as eval fits it: on its (up to 100) held-out reference pairs
            low, high = (judge.scores(answers[x], [reference[q] for q in questions]) for x in (-m, m))
            interval = paired_difference_ci(low, high)
            row[key] = {"accuracy": accuracy[key], "effect": statistics.fmean(high) - statistics.fmean(low),
                        "ci": interval, "spread": statistics.pstdev(low + high),
                        "detected": bool(interval and (interval[0] > 0 or interval[1] < 0))}
        row["seconds"] = round(time.time() - started, 1)
        rows.append(row)
        print(f"{name:34s} " + "  ".join(
            f"{k}: acc {r['accuracy']:.3f} effect {r['effect']:+.3f} [{r['ci'][0]:+.3f}, {r['ci'][1]:+.3f}] "
            f"sd {r['spread']:.3f}{' *' if r['detected'] else ''}" for k in judges for r in [row[k]]) +
              f"  margin range {row['margin_range']:+.2f}  ({row['seconds']:.0f} s)", flush=True)
    for key in judges:
        accs = [r[key]["accuracy"] for r in rows]
        print(f"{key}: mean accuracy {statistics.fmean(accs):.3f}; effect detected (interval excludes 0) on "
              f"{sum(r[key]['detected'] for r in rows)}/{len(rows)} behaviours")
    if args.out:
        Path(args.out).write_text(json.dumps({"rows": rows, "record": finish_record(record)}, indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
