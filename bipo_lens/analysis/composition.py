"""Several vectors at once: does each behaviour survive the others' company?

For vectors ``a`` and ``b`` (same or different layers) and a grid of weights, every behaviour's mean
held-out margin is measured under ``w_a a + w_b b``. Per behaviour:

- ``range_alone``: its margin range (at ``+m`` minus at ``-m``) with the others off;
- ``range_with_others``: the same with every other vector at ``+m``;
- ``retained``: their ratio (1: no interference; below 1: the others blunt it), with
  ``retained_ci``, its 95% interval over the held-out pairs (and training seeds, where given);
- ``crosstalk``: how far the others alone (at ``+m`` against ``-m``) move its margin, relative to
  its own range; 0 when the vectors are independent.
"""

from __future__ import annotations

import itertools
from statistics import fmean
from typing import Sequence

from bipo_lens.analysis.similarity import cosine
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation.evaluate import MarginScorer
from bipo_lens.evaluation.intervals import crossed_ratio_ci
from bipo_lens.pairs import PreferencePair
from bipo_lens.vectors import SteeringVector


def compose(
    model,
    vectors: dict[str, SteeringVector],
    test_pairs: dict[str, list[PreferencePair]],
    weights: Sequence[float] = (-2.0, -1.0, 0.0, 1.0, 2.0),
    multiplier: float = 1.0,
    seeds: dict[str, list[SteeringVector]] | None = None,
) -> dict:
    """``{"grid": [{"weights": {name: w}, "margins": {name: mean margin}}], "behaviours": {name: {...}},
    "cosines": {"a|b": cos}, "multiplier": m, "layers": {name: layer}, "pairs": {name: held-out pairs}}``;
    the grid covers every combination of ``weights`` over the vectors.

    ``seeds``: each behaviour's vectors from further training seeds (the same number for every
    behaviour). Seed k of every behaviour is composed with seed k of the others (``vectors`` is seed
    0); each behaviour's ranges, ``retained`` and ``crosstalk`` are then means over the seeds and
    ``retained_ci`` resamples pairs and seeds. The grid and the cosines are seed 0's."""
    if len(vectors) < 2:
        raise BipoLensError("composition needs at least two vectors")
    if vectors.keys() != test_pairs.keys():
        raise BipoLensError("give held-out pairs for every vector, under the same names")
    if seeds is not None and (seeds.keys() != vectors.keys() or len({len(v) for v in seeds.values()}) != 1):
        raise BipoLensError("give every behaviour the same number of further seeds")
    names, weights, multiplier = list(vectors), [float(w) for w in weights], float(multiplier)
    sets = [vectors] + [{n: seeds[n][k] for n in names} for k in range(len(next(iter(seeds.values()))))] if seeds \
        else [vectors]
    scorers = {name: MarginScorer(model, pairs) for name, pairs in test_pairs.items()}

    measured: dict[tuple, list[float]] = {}  # per pair; the summary below revisits grid points: score each once

    def per_pair(name: str, assignment: dict[str, float], seed: int = 0) -> list[float]:
        key = (seed, name, *sorted((n, w) for n, w in assignment.items() if w != 0))
        if key not in measured:
            measured[key] = scorers[name].margins([(sets[seed][n], w) for n, w in assignment.items()]).tolist()
        return measured[key]

    def margin(name: str, assignment: dict[str, float]) -> float:
        """Seed 0's mean margin (the grid)."""
        return fmean(per_pair(name, assignment))

    def seeded(name: str, up: dict[str, float], down: dict[str, float]) -> list[list[float]]:
        """Per seed and pair: margin under ``up`` minus under ``down``."""
        return [[a - b for a, b in zip(per_pair(name, up, k), per_pair(name, down, k))] for k in range(len(sets))]

    def mean(grid: list[list[float]]) -> float:
        return fmean(x for row in grid for x in row)

    grid = []
    for combination in itertools.product(weights, repeat=len(names)):
        assignment = dict(zip(names, combination))
        grid.append({"weights": assignment, "margins": {name: margin(name, assignment) for name in names}})
    behaviours = {}
    for name in names:
        others = [n for n in names if n != name]
        with_up = {n: multiplier for n in others}
        ranges = {label: seeded(name, {name: multiplier, **fixed}, {name: -multiplier, **fixed})
                  for label, fixed in (("alone", {}), ("together", with_up))}
        alone, together = mean(ranges["alone"]), mean(ranges["together"])
        shift = mean(seeded(name, with_up, {n: -multiplier for n in others}))
        ci = crossed_ratio_ci(ranges["together"], ranges["alone"])  # over held-out pairs (and seeds)
        behaviours[name] = {"range_alone": alone, "range_with_others": together,
                            "retained": together / alone if alone else float("nan"),
                            "retained_ci": list(ci) if ci else None,
                            "crosstalk": shift / alone if alone else float("nan"), "seeds": len(sets)}
    cosines = {f"{a}|{b}": cosine(vectors[a], vectors[b]) for a, b in itertools.combinations(names, 2)}
    return {"grid": grid, "behaviours": behaviours, "cosines": cosines, "multiplier": multiplier,
            "layers": {n: v.layer for n, v in vectors.items()}, "pairs": {n: len(p) for n, p in test_pairs.items()}}
