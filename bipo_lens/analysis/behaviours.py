"""Does BiPO steer every behaviour, and further than CAA? One behaviour at a time, on one budget.

For a behaviour's pairs, BiPO is trained with several seeds and CAA once, at one layer, on the same
training pairs; on its held-out pairs each gets the claims' tests (:mod:`bipo_lens.analysis.claims`):
steers both ways, and beats CAA at CAA's own scale and at equal norm, each with a 95% interval over
held-out pairs and seeds. The paper shows one behaviour at a time; asking the same questions of
every set at once is what tells a property of the method from a property of one data set.

Like the layer sweep, a study writes its result (and its vectors) into its directory when it
finishes and reads it back when asked again with the same settings and data, so a long run over
many behaviours resumes where it stopped.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from bipo_lens.analysis import claims
from bipo_lens.analysis.similarity import cosine
from bipo_lens.atomic import atomic_write, read_finished
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation.evaluate import MarginScorer
from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.training import train_bipo, train_caa


@dataclass(frozen=True)
class BehaviourConfig:
    """The budget every behaviour gets (the figures use stage 1's). Efficacy at ``+/-multiplier``."""

    layer: int = 15
    epochs: int = 8
    lr: float = 5e-3
    max_train_pairs: int = 64
    max_test_pairs: int = 48
    multiplier: float = 1.0
    seeds: int = 3  # BiPO trainings, seeds 0 .. seeds - 1


def study_behaviour(model, name: str, train_pairs: list[PreferencePair], test_pairs: list[PreferencePair],
                    out_dir: str | Path, config: BehaviourConfig = BehaviourConfig()) -> dict:
    """The claims' tests on one behaviour: ``both_ways``, ``beats_caa_own_scale`` and
    ``beats_caa_equal_norm`` (each a claim with value, interval and verdict), the BiPO-CAA cosine,
    the norms and the training losses. Written to ``out_dir/<name>.json``, vectors beside it."""
    check_layer(model, config.layer)
    train, test = train_pairs[: config.max_train_pairs], test_pairs[: config.max_test_pairs]
    if not train or not test:
        raise BipoLensError(f"{name}: a behaviour study needs training and held-out pairs")
    out = Path(out_dir)
    path = out / f"{name}.json"
    key = {"model": info(model).model_id, "config": asdict(config), "train": fingerprint(train), "test": fingerprint(test)}
    done = read_finished(path)
    if done is not None and done.get("key") == key:
        return done
    started = time.time()
    seeds = [train_bipo(model, train, config.layer, epochs=config.epochs, lr=config.lr, seed=seed, progress=False)
             for seed in range(config.seeds)]
    bipo_seconds = (time.time() - started) / len(seeds)
    caa = train_caa(model, train, config.layer)
    for seed, vector in enumerate(seeds):
        vector.save(out / f"{name}_bipo_seed{seed}.safetensors", overwrite=True)
    caa.save(out / f"{name}_caa.safetensors", overwrite=True)
    scorer, m = MarginScorer(model, test), config.multiplier
    result = {
        "behaviour": name, "key": key, "layer": config.layer, "train_pairs": len(train), "test_pairs": len(test),
        "both_ways": claims.steers_both_ways(scorer, seeds, m),
        "beats_caa_own_scale": claims.beats(scorer, seeds, [caa] * len(seeds), m),
        "beats_caa_equal_norm": claims.beats(scorer, seeds, [claims.scaled(caa, v.norm) for v in seeds], m),
        "cosine": cosine(seeds[0], caa),
        "norms": {"bipo": [v.norm for v in seeds], "caa": caa.norm},
        "loss": [[v.history[0]["loss"], v.history[-1]["loss"]] for v in seeds],  # per seed: first and last epoch
        "bipo_seconds": round(bipo_seconds, 1),
    }
    atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(result, indent=2)))
    return result
