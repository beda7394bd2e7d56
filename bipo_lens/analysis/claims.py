"""The paper's claims, each as one measured number with a 95% interval and a verdict.

A claim here is a quantity with a side: "BiPO beats CAA" is the margin range of BiPO minus that of
CAA, on the same held-out pairs, and the paper's side is above 0. The interval is a crossed
bootstrap over held-out pairs and training seeds (:mod:`bipo_lens.evaluation.intervals`), so both
which pairs were asked and which seed trained the vector widen it. The verdict reads the interval
against the claim's threshold: wholly on the paper's side, *reproduced*; wholly on the other side,
*not reproduced*; across it, *inconclusive*. One seed or no interval is never more than
inconclusive.

Every function takes vectors that are already trained and a :class:`MarginScorer` over the
held-out pairs; it trains nothing (the figures' claims stage does) and returns plain data.
"""

from __future__ import annotations

from collections.abc import Sequence
from statistics import fmean

from bipo_lens.evaluation import MarginScorer
from bipo_lens.evaluation.fluency import (budget_bracket, budget_resampled_difference_ci, fluency_summary,
                                          multiplier_at_budget)
from bipo_lens.evaluation.intervals import crossed_difference_ci, crossed_ratio_ci
from bipo_lens.vectors import SteeringVector

REPRODUCED, NOT_REPRODUCED, INCONCLUSIVE = "reproduced", "not reproduced", "inconclusive"
TRANSFER_KEEPS = 0.5  # a vector "transfers" if it keeps more than half its native efficacy on the target
COMPOSITION_KEEPS = 0.8  # "composes" if each behaviour keeps more than 80% of its range beside the other


def pair_shifts(scorer: MarginScorer, vector: SteeringVector, multiplier: float) -> list[float]:
    """Per held-out pair: margin at ``multiplier`` minus the unsteered margin."""
    return (scorer.margins([(vector, multiplier)]) - scorer.margins([])).tolist()


def scaled(vector: SteeringVector, norm: float) -> SteeringVector:
    """The same direction at another norm (for comparisons at equal norm)."""
    return SteeringVector(vector=vector.vector * (norm / vector.norm), layer=vector.layer, model_id=vector.model_id,
                          method=vector.method, hyperparameters={**vector.hyperparameters, "rescaled_to": norm},
                          data_fingerprint=vector.data_fingerprint)


def verdict(interval: tuple[float, float] | None, threshold: float, seeds: int) -> tuple[str, str]:
    """(verdict, why) for a claim whose paper side is above ``threshold``."""
    if interval is None:
        return INCONCLUSIVE, "no interval"
    lo, hi = interval
    if lo > threshold:
        found, why = REPRODUCED, f"interval above {threshold:g}"
    elif hi < threshold:
        found, why = NOT_REPRODUCED, f"interval below {threshold:g}"
    else:
        return INCONCLUSIVE, f"interval contains {threshold:g}"
    if seeds < 2:
        return INCONCLUSIVE, f"{why}, but one training seed"
    return found, why


def _claim(value: float, interval, threshold: float, seeds: int, pairs: int, **extra) -> dict:
    found, why = verdict(interval, threshold, seeds)
    return {"value": value, "ci": list(interval) if interval else None, "threshold": threshold, "seeds": seeds,
            "pairs": pairs, "verdict": found, "why": why, **extra}


def steers_both_ways(scorer: MarginScorer, seeds: list[SteeringVector], multiplier: float = 1.0) -> dict:
    """``up`` (margin at +m minus unsteered) and ``down`` (unsteered minus margin at -m), each with an
    interval over pairs and seeds; the claim holds if both lie above 0, so its value and interval are
    the weaker direction's (the one whose interval reaches lower)."""
    base = scorer.margins([]).tolist()
    ups = [scorer.margins([(v, multiplier)]).tolist() for v in seeds]
    downs = [scorer.margins([(v, -multiplier)]).tolist() for v in seeds]
    up_ci = crossed_difference_ci([base] * len(seeds), ups)
    down_ci = crossed_difference_ci(downs, [base] * len(seeds))
    up = fmean(fmean(r) for r in ups) - fmean(base)
    down = fmean(base) - fmean(fmean(r) for r in downs)
    weaker, weaker_ci = (up, up_ci) if (up_ci or (up,))[0] <= (down_ci or (down,))[0] else (down, down_ci)
    return _claim(weaker, weaker_ci, 0.0, len(seeds), len(base), multiplier=multiplier,
                  up=up, up_ci=list(up_ci) if up_ci else None, down=down, down_ci=list(down_ci) if down_ci else None)


def beats(scorer: MarginScorer, seeds: list[SteeringVector], rivals: list[SteeringVector],
          multiplier: float = 1.0) -> dict:
    """Margin range of each seed's vector minus that of its rival (``rivals[i]`` for ``seeds[i]``),
    paired by held-out pair; above 0 means the first steers more."""
    ours = [scorer.pair_ranges(v, multiplier).tolist() for v in seeds]
    theirs = [scorer.pair_ranges(v, multiplier).tolist() for v in rivals]
    interval = crossed_difference_ci(theirs, ours)
    return _claim(fmean(fmean(r) for r in ours) - fmean(fmean(r) for r in theirs), interval, 0.0, len(seeds),
                  len(ours[0]), multiplier=multiplier, ours=fmean(fmean(r) for r in ours),
                  theirs=fmean(fmean(r) for r in theirs), norms=[v.norm for v in seeds],
                  rival_norms=[v.norm for v in rivals])


def beats_at_equal_fluency(scorer: MarginScorer, evaluated: list[dict], ours: list[tuple[str, SteeringVector]],
                           theirs: tuple[str, SteeringVector]) -> dict:
    """Towards the behaviour, at equal damage: each vector at the largest multiplier whose greedy
    answers stay within the perplexity budget (``evaluation.fluency``, from ``evaluated``, the rows of
    evaluations with multiplier 0 in which every vector is named as here), its per-pair margin shift
    from unsteered; ours (one ``(name, vector)`` per training seed) minus theirs, with an interval
    over pairs and seeds. Each seed's multiplier is chosen on its own answers: a seed whose answers
    break earlier is read at a smaller multiplier.

    Where the budget binds is known only to a bracket (:func:`budget_bracket`: the last multiplier
    evaluated within it, the first beyond; narrow it with :func:`bisect_budget`), so a verdict must
    hold at the bracket's far edge too: ours winning must survive theirs read at its first multiplier
    beyond the budget, ours losing must survive ours read at theirs (``at_bracket_edge``); else it is
    inconclusive. A vector within the budget at the largest multiplier evaluated has no far edge: its
    shift is a lower bound, and a verdict it could overturn (ours losing while unbounded, or winning
    against an unbounded rival) is inconclusive.

    The interval resamples where the budget binds too, where the rows carry per-question perplexities
    (:func:`budget_resampled_difference_ci`: which of the questions were answered is drawn with
    the pairs and seeds, and each vector is read where the budget binds on the drawn answers); the
    interval with every vector held at its chosen multiplier is kept as ``ci_at_fixed_budget``. Rows
    from before per-question perplexities were kept give only the latter."""
    front = fluency_summary(evaluated)
    at = lambda name: multiplier_at_budget(front, name)  # noqa: E731
    largest = lambda name: max(r["multiplier"] for r in evaluated if r["vector"] == name)  # noqa: E731
    chosen = {"ours": [at(name) for name, _ in ours], "theirs": at(theirs[0])}
    if chosen["theirs"] is None or None in chosen["ours"]:
        return {**_claim(float("nan"), None, 0.0, len(ours), 0), "multipliers": chosen,
                "why": "a vector has no multiplier within the perplexity budget"}
    unbounded = {"ours": [m == largest(name) for (name, _), m in zip(ours, chosen["ours"])],
                 "theirs": chosen["theirs"] == largest(theirs[0])}
    brackets = {"ours": [budget_bracket(front, name) for name, _ in ours], "theirs": budget_bracket(front, theirs[0])}
    mine = [pair_shifts(scorer, vector, m) for (_, vector), m in zip(ours, chosen["ours"])]
    rival = pair_shifts(scorer, theirs[1], chosen["theirs"])
    fixed = crossed_difference_ci([rival] * len(mine), mine)
    vectors = [vector for _, vector in ours] + [theirs[1]]
    resampled = budget_resampled_difference_ci(evaluated, lambda k, m: pair_shifts(scorer, vectors[k], m),
                                               [name for name, _ in ours], theirs[0])
    interval = tuple(resampled.pop("ci")) if resampled else fixed
    found = _claim(fmean(fmean(r) for r in mine) - fmean(rival), interval, 0.0, len(mine), len(rival),
                   multipliers=chosen, unbounded=unbounded, brackets=brackets, ours=fmean(fmean(r) for r in mine),
                   theirs=fmean(rival), budget_perplexity=front["_settings"]["budget_perplexity"],
                   ci_at_fixed_budget=list(fixed) if fixed else None, budget_resampled=resampled)
    if found["verdict"] == NOT_REPRODUCED and any(unbounded["ours"]):
        found.update(verdict=INCONCLUSIVE, why=f"{found['why']}, but ours stays within the budget at the largest "
                                               "multiplier evaluated (its shift is a lower bound)")
    elif found["verdict"] == REPRODUCED and unbounded["theirs"]:
        found.update(verdict=INCONCLUSIVE, why=f"{found['why']}, but theirs stays within the budget at the largest "
                                               "multiplier evaluated (its shift is a lower bound)")
    elif found["verdict"] == REPRODUCED:  # theirs at its first multiplier beyond the budget
        far = pair_shifts(scorer, theirs[1], brackets["theirs"][1])
        edge = crossed_difference_ci([far] * len(mine), mine)
        found["at_bracket_edge"] = {"theirs": brackets["theirs"][1], "value": fmean(fmean(r) for r in mine) - fmean(far),
                                    "ci": list(edge) if edge else None}
        if edge is None or edge[0] <= 0:
            found.update(verdict=INCONCLUSIVE, why=f"{found['why']}, but not against theirs at its first multiplier "
                                                   "beyond the budget (where the budget binds is not known closely enough)")
    elif found["verdict"] == NOT_REPRODUCED:  # each seed of ours at its first multiplier beyond the budget
        far_mine = [pair_shifts(scorer, vector, b[1]) for (_, vector), b in zip(ours, brackets["ours"])]
        edge = crossed_difference_ci([rival] * len(far_mine), far_mine)
        found["at_bracket_edge"] = {"ours": [b[1] for b in brackets["ours"]],
                                    "value": fmean(fmean(r) for r in far_mine) - fmean(rival), "ci": list(edge) if edge else None}
        if edge is None or edge[1] >= 0:
            found.update(verdict=INCONCLUSIVE, why=f"{found['why']}, but not with ours at its first multiplier "
                                                   "beyond the budget (where the budget binds is not known closely enough)")
    return found


def best_layer(ranges: dict[int, list[list[float]]], n_layers: int) -> dict:
    """From per-pair margin ranges at each layer (one method, a ``[seed][pair]`` grid per layer, the
    same pairs and number of seeds everywhere): the best layer by mean, and the layers whose
    difference from it has an interval reaching 0 (not told apart). The paper's claim is that a
    middle layer steers (it uses 15 of Llama-2-7B's 32): reproduced if every layer not told apart
    from the best lies in the middle half of the depth, not reproduced if none does."""
    means = {layer: fmean(x for row in grid for x in row) for layer, grid in ranges.items()}
    best = max(means, key=means.get)
    gaps = {layer: crossed_difference_ci(grid, ranges[best]) for layer, grid in ranges.items() if layer != best}
    tied = sorted([best, *(layer for layer, ci in gaps.items() if ci is None or ci[0] <= 0)])
    middle = [layer for layer in tied if 0.25 <= layer / (n_layers - 1) <= 0.75]
    if len(middle) == len(tied):
        found, why = REPRODUCED, "every layer not told apart from the best is in the middle half"
    elif not middle:
        found, why = NOT_REPRODUCED, "no layer in the middle half is as good as the best"
    else:
        found, why = INCONCLUSIVE, "layers outside the middle half are not told apart from the best"
    seeds = len(ranges[best])
    if found != INCONCLUSIVE and seeds < 2:
        found, why = INCONCLUSIVE, f"{why}, but one training seed"
    return {"value": best, "tied": tied, "means": means, "gaps": {k: list(v) if v else None for k, v in gaps.items()},
            "pairs": len(ranges[best][0]), "seeds": seeds, "verdict": found, "why": why}


def retained(scorer: MarginScorer, moved: list[SteeringVector], native: list[SteeringVector],
             threshold: float = TRANSFER_KEEPS, multiplier: float = 1.0, others: Sequence[tuple] = ()) -> dict:
    """Retained efficacy with an interval: mean per-pair range of the moved vectors (one per seed)
    over that of the native ones (``native[i]`` beside ``moved[i]``; repeat one native vector to pair
    it with every seed), resampling pairs and seeds together."""
    above = [scorer.pair_ranges(v, multiplier, others).tolist() for v in moved]
    below = [scorer.pair_ranges(v, multiplier).tolist() for v in native]
    mean_below = fmean(fmean(r) for r in below)
    value = fmean(fmean(r) for r in above) / mean_below if mean_below else float("nan")
    return _claim(value, crossed_ratio_ci(above, below), threshold, len(moved), len(above[0]),
                  moved_range=fmean(fmean(r) for r in above), native_range=mean_below)


def retained_direction(scorer: MarginScorer, moved: list[SteeringVector], native: list[SteeringVector],
                       threshold: float = TRANSFER_KEEPS, multiplier: float = 1.0) -> dict:
    """:func:`retained` with each moved vector rescaled to its native vector's norm: whether the
    direction carried over. A BiPO vector's length is set by its training budget, a mapped vector's
    by the two models' activation scales, so across models the plain ratio mostly measures length."""
    return retained(scorer, [scaled(v, n.norm) for v, n in zip(moved, native)], native, threshold, multiplier)


def transfers_both_ways(by_map: dict[str, tuple[dict, dict]]) -> tuple[str, str]:
    """(verdict, why) for "a vector transfers across families": ``by_map`` holds, per kind of map,
    the claims there and back (from :func:`retained_direction`). Reproduced where some map carries
    the vector both ways; not reproduced where every map fails one way; else inconclusive."""
    if not by_map:
        return INCONCLUSIVE, "no map measured"
    both = [name for name, ways in by_map.items() if all(w["verdict"] == REPRODUCED for w in ways)]
    if both:
        return REPRODUCED, f"{' and '.join(both)}: both ways above {TRANSFER_KEEPS:g}"
    found = NOT_REPRODUCED if all(any(w["verdict"] == NOT_REPRODUCED for w in ways) for ways in by_map.values()) \
        else INCONCLUSIVE
    return found, "; ".join(f"{name}: there {there['why']}, back {back['why']}"
                            for name, (there, back) in by_map.items())
