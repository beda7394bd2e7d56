"""Which layer to steer at: BiPO and CAA trained at each layer on one budget, scored the same way.

A sweep writes one JSON result per layer (and both vectors) into its directory as it goes; run it
again with the same settings and data, and finished layers are read back instead of recomputed,
so an interrupted sweep resumes where it stopped.

With ``seeds`` > 1, BiPO is trained once per seed at each layer (CAA has no randomness) and each
method's margin range gets a 95% interval over held-out pairs and seeds (a crossed bootstrap), so
"layer 12 beats layer 18" can be told from seed and question noise.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from tqdm.auto import tqdm

from bipo_lens.analysis.similarity import cosine
from bipo_lens.atomic import atomic_write, read_finished
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation.evaluate import MarginScorer, evaluate
from bipo_lens.evaluation.intervals import crossed_difference_ci
from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.training import train_bipo, train_caa
from bipo_lens.vectors import SteeringVector

METHODS = ("bipo", "caa")


@dataclass(frozen=True)
class SweepConfig:
    """The fixed budget every layer gets. Efficacy is measured at ``-multiplier, 0, +multiplier``."""

    epochs: int = 4
    lr: float = 5e-3
    max_train_pairs: int = 32
    max_test_pairs: int = 32
    multiplier: float = 1.0
    generations: int = 0  # questions answered and judged per layer and method (0: margins only)
    max_new_tokens: int = 32
    seed: int = 0
    seeds: int = 1  # BiPO trainings per layer, seeds seed .. seed + seeds - 1

    def key(self) -> dict:
        """What a finished layer must match to be reused (one seed keeps the keys of older sweeps)."""
        return {k: v for k, v in asdict(self).items() if not (k == "seeds" and v == 1)}


def sweep_layers(
    model,
    train_pairs: list[PreferencePair],
    test_pairs: list[PreferencePair],
    layers: list[int],
    out_dir: str | Path,
    config: SweepConfig = SweepConfig(),
    judge=None,
    progress: bool = True,
) -> list[dict]:
    """One result per layer, in ``layers`` order: for each method its margin range (mean held-out
    margin at ``+m`` minus at ``-m``), judge range where ``config.generations`` > 0, norm and training
    time; and the BiPO-CAA cosine."""
    for layer in layers:
        check_layer(model, layer)
    if not train_pairs or not test_pairs:
        raise BipoLensError("a layer sweep needs training and held-out pairs")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    train, test = train_pairs[: config.max_train_pairs], test_pairs[: config.max_test_pairs]
    key = {"model": info(model).model_id, "config": config.key(), "train": fingerprint(train),
           "test": fingerprint(test)}
    results = []
    for layer in tqdm(layers, desc="layer sweep", disable=not progress):
        path = out / f"layer_{layer:02d}.json"
        done = read_finished(path)
        if done is not None and done.get("key") == key:
            results.append(done)
            continue
        results.append(_sweep_one(model, train, test, layer, config, judge, key, out))
        atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(results[-1], indent=2)))
    return results


def _sweep_one(model, train, test, layer: int, config: SweepConfig, judge, key: dict, out: Path) -> dict:
    vectors, seconds = {}, {}
    started = time.time()
    seeds = [train_bipo(model, train, layer, epochs=config.epochs, lr=config.lr, seed=config.seed + k, progress=False)
             for k in range(config.seeds)]
    vectors["bipo"] = seeds[0]
    seconds["bipo"] = (time.time() - started) / len(seeds)
    for k, vector in enumerate(seeds[1:], start=1):
        vector.save(out / f"bipo_layer_{layer:02d}_seed{config.seed + k}.safetensors", overwrite=True)
    started = time.time()
    vectors["caa"] = train_caa(model, train, layer)
    seconds["caa"] = time.time() - started
    for method, vector in vectors.items():
        vector.save(out / f"{method}_layer_{layer:02d}.safetensors", overwrite=True)
    m = config.multiplier
    scorer = MarginScorer(model, test)  # shared with the evaluation: the intervals reuse its margins
    report = evaluate(model, vectors, test, [-m, 0.0, m], judge=judge if config.generations else None,
                      max_questions=len(test), max_generations=config.generations,
                      max_new_tokens=config.max_new_tokens, progress=False, scorer=scorer)
    result = {"layer": layer, "key": key, "cosine": cosine(vectors["bipo"], vectors["caa"])}
    grids = {"bipo": [scorer.pair_ranges(v, m).tolist() for v in seeds], "caa": [scorer.pair_ranges(vectors["caa"], m).tolist()]}
    for method in METHODS:
        rows = {r["multiplier"]: r for r in report["results"] if r["vector"] == method}
        judge_range = (rows[m]["judge_score"] - rows[-m]["judge_score"]
                       if rows[m]["judge_score"] is not None and rows[-m]["judge_score"] is not None else None)
        result[method] = {
            "margin_range": rows[m]["logprob_margin"] - rows[-m]["logprob_margin"],
            "range_per_norm": (rows[m]["logprob_margin"] - rows[-m]["logprob_margin"]) / max(vectors[method].norm, 1e-12),
            "judge_range": judge_range,
            "accuracy_at_plus": rows[m]["preference_accuracy"],
            "norm": vectors[method].norm,
            "train_seconds": round(seconds[method], 2),
            "results": list(rows.values()),
            **_range_interval(grids[method]),
        }
        if method == "bipo" and len(seeds) > 1:  # the mean over seeds, as the interval is
            result[method]["margin_range"] = sum(map(sum, grids[method])) / sum(map(len, grids[method]))
            result[method]["range_per_norm"] = result[method]["margin_range"] / max(
                sum(v.norm for v in seeds) / len(seeds), 1e-12)
            result[method]["seed_norms"] = [v.norm for v in seeds]
    result["generations"] = report["generations"]
    return result


def _range_interval(grid: list[list[float]]) -> dict:
    """The 95% crossed interval of the mean margin range over a ``[seed][pair]`` grid, and the grid."""
    ci = crossed_difference_ci([[0.0] * len(row) for row in grid], grid)
    return {"margin_range_ci": list(ci) if ci else None, "seeds": len(grid), "pair_ranges": grid}


def recommend_layer(results: list[dict], method: str = "bipo", metric: str = "margin_range") -> int:
    """The layer where ``method`` moves ``metric`` most (ties: the earlier layer)."""
    scored = [(r[method][metric], -r["layer"]) for r in results if r[method].get(metric) is not None]
    if not scored:
        raise BipoLensError(f"no {metric} recorded for {method}")
    return -max(scored)[1]


def load_sweep_vectors(out_dir: str | Path, layers: list[int]) -> dict[int, dict[str, SteeringVector]]:
    """The vectors a sweep saved, by layer and method."""
    out = Path(out_dir)
    return {layer: {method: SteeringVector.load(out / f"{method}_layer_{layer:02d}.safetensors") for method in METHODS}
            for layer in layers}
