"""The README's main job: train BiPO and CAA on a built-in pair set and steer held-out questions."""

from __future__ import annotations

import json
import time
from pathlib import Path

from bipo_lens.errors import BipoLensError
from bipo_lens.models import DEFAULT_MODEL, load_model, load_options
from bipo_lens.pairs import load_pairs, split_pairs
from bipo_lens.plots import training_curve
from bipo_lens.generation import generate_grid
from bipo_lens.training import train_bipo, train_caa

MULTIPLIERS = [-2.0, -1.0, 0.0, 1.0, 2.0]


def run_demo(args) -> dict:
    started = time.time()
    out = Path(args.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    model_name = args.model or DEFAULT_MODEL
    if args.max_pairs is not None and args.max_pairs < 1:
        raise BipoLensError("--max-pairs must be at least 1")
    print(f"== loading {model_name}")
    model = load_model(model_name, **load_options(args))
    train_pairs, test_pairs = split_pairs(load_pairs(args.data), test_fraction=0.2, seed=0)
    if args.max_pairs is not None:
        train_pairs = train_pairs[: args.max_pairs]
    print(f"== {args.data}: {len(train_pairs)} training pairs, {len(test_pairs)} held out; layer {args.layer}")

    t = time.time()
    bipo = train_bipo(model, train_pairs, args.layer, test_pairs=test_pairs, epochs=args.epochs, lr=args.lr)
    bipo_s = time.time() - t
    for r in bipo.history:
        print(f"   epoch {r['epoch']:2d}  loss {r['loss']:.4f}  norm {r['norm']:.3f}  held-out reward accuracy {r['reward_accuracy']:.2f}")
    print(f"== BiPO: {bipo_s:.0f} s, norm {bipo.norm:.3f}")
    t = time.time()
    caa = train_caa(model, train_pairs, args.layer)
    print(f"== CAA: {time.time() - t:.1f} s, norm {caa.norm:.3f}; cosine(BiPO, CAA) "
          f"{float(bipo.vector @ caa.vector / (bipo.norm * caa.norm)):.3f}")
    bipo.save(out / "bipo.safetensors", overwrite=True)
    caa.save(out / "caa.safetensors", overwrite=True)
    figure = training_curve({"BiPO": bipo.history}, out / "training_curve.png")

    answers = []
    questions = [pair.question for pair in test_pairs[: args.questions]]
    t = time.time()
    grids = {name: generate_grid(model, questions, [vector], MULTIPLIERS, max_new_tokens=args.max_new_tokens)
             for name, vector in (("BiPO", bipo), ("CAA", caa))}
    generate_s = time.time() - t
    for q, question in enumerate(questions):
        print(f"\n### {question}")
        for name in grids:
            for multiplier, text in zip(MULTIPLIERS, grids[name][q]):
                print(f"  {name:4s} [{multiplier:+.0f}] {text}")
                answers.append({"question": question, "method": name, "multiplier": multiplier, "answer": text})
    summary = {
        "model": model_name, "data": args.data, "layer": args.layer, "epochs": args.epochs, "lr": args.lr,
        "bipo_train_seconds": round(bipo_s, 1),
        "generation_seconds": round(generate_s, 1), "history": bipo.history, "answers": answers,
        "wall_seconds": round(time.time() - started, 1),
    }
    (out / "demo.json").write_text(json.dumps(summary, indent=2))
    print(f"\n== saved {out / 'bipo.safetensors'}, {out / 'caa.safetensors'}, {figure}, {out / 'demo.json'}")
    print(f"== demo wall time {summary['wall_seconds']:.0f} s")
    return summary
