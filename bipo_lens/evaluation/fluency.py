"""Which method steers more for the same damage: behaviour against fluency.

Any vector moves the behaviour further if it is scaled up, until the answers stop being language. So
"BiPO beats CAA" means something only at equal damage. From one evaluation (every vector at every
multiplier, with the perplexity of its greedy answers under the unsteered model):

- ``collapse_multiplier``: per vector and direction, the smallest |multiplier| at which the steered
  answers stop being language: their mean perplexity exceeds ``collapse_factor`` times the unsteered
  answers', or their mean distinct-2 falls under ``collapse_distinct2`` (repetition loops), or no
  answer is left at all. None where no multiplier evaluated breaks them.
- ``shift_at_budget``: per vector and direction, the largest move of the behaviour metric away from
  its unsteered value (signed: towards the behaviour for +, away for -) among the multipliers whose
  answers stay within ``budget_factor`` times the unsteered perplexity: the equal-fluency comparison.
- ``front``: the points (perplexity, metric) per vector, the data of the Pareto plot.

Where the budget binds is itself measured on a few dozen answers (24 in the figures), whose perplexity is noisy (not even
monotone in the multiplier near the budget). ``budget_resampled_difference_ci`` puts that noise into
an equal-fluency comparison's interval: each resample also draws which questions were answered, and
each vector is read where the budget binds on those.
"""

from __future__ import annotations

import math
from collections import Counter
from statistics import fmean
from typing import Callable

import torch

from bipo_lens.evaluation.intervals import RESAMPLES, _crossed_resamples, _percentiles

COLLAPSE_FACTOR = 3.0
COLLAPSE_DISTINCT2 = 0.5
BUDGET_FACTOR = 1.5


def fluency_summary(results: list[dict], metric: str = "logprob_margin", collapse_factor: float = COLLAPSE_FACTOR,
                    collapse_distinct2: float = COLLAPSE_DISTINCT2, budget_factor: float = BUDGET_FACTOR) -> dict:
    """Per vector: collapse multipliers, the metric's shift within the perplexity budget, and the
    front's points. Needs the unsteered row (multiplier 0) with answers; {} without it."""
    unsteered = [r for r in results if r["multiplier"] == 0 and r["perplexity"] is not None]
    if not unsteered:
        return {}
    reference_ppl = unsteered[0]["perplexity"]
    summary: dict[str, dict] = {"_settings": {
        "metric": metric, "unsteered_perplexity": reference_ppl, "collapse_factor": collapse_factor,
        "collapse_distinct2": collapse_distinct2, "budget_factor": budget_factor,
        "budget_perplexity": budget_factor * reference_ppl}}
    for name in dict.fromkeys(r["vector"] for r in results):
        rows = {r["multiplier"]: r for r in results if r["vector"] == name}
        base = rows.get(0)
        if base is None or base[metric] is None:
            continue
        entry = {"collapse_multiplier": {}, "shift_at_budget": {}, "multiplier_at_budget": {}, "bracket_at_budget": {},
                 "front": [{"multiplier": m, "perplexity": r["perplexity"], "distinct2": r["distinct2"], metric: r[metric],
                            "collapsed": _collapsed(r, reference_ppl, collapse_factor, collapse_distinct2)}
                           for m, r in sorted(rows.items())]}
        for sign, direction in ((1, "+"), (-1, "-")):
            side = sorted((m for m in rows if m * sign > 0), key=abs)
            broken = [m for m in side if _collapsed(rows[m], reference_ppl, collapse_factor, collapse_distinct2)]
            entry["collapse_multiplier"][direction] = broken[0] if broken else None
            fluent = [m for m in side if rows[m]["perplexity"] is not None and rows[m][metric] is not None
                      and rows[m]["perplexity"] <= budget_factor * reference_ppl]
            shifts = {m: sign * (rows[m][metric] - base[metric]) for m in fluent}
            best = max(shifts, key=shifts.get) if shifts else None
            entry["shift_at_budget"][direction] = shifts[best] if best is not None else None
            entry["multiplier_at_budget"][direction] = best
            beyond = [m for m in side if abs(m) > abs(best or 0.0) and m not in fluent]
            hi = beyond[0] if beyond else None
            lo = max((m for m in fluent if hi is None or abs(m) < abs(hi)), key=abs, default=0.0)
            entry["bracket_at_budget"][direction] = [lo, hi]
        summary[name] = entry
    return summary


def multiplier_at_budget(summary: dict, name: str, direction: str = "+") -> float | None:
    """The largest multiplier of ``name`` in ``direction`` whose answers stay within the budget, from
    :func:`fluency_summary`'s result; None where none does or ``name`` was not evaluated."""
    return (summary.get(name) or {}).get("multiplier_at_budget", {}).get(direction)


def budget_bracket(summary: dict, name: str, direction: str = "+") -> tuple[float, float | None] | None:
    """(lo, hi): ``hi`` the nearest multiplier evaluated beyond the one ``name`` is read at whose
    answers exceed the budget (None where none does), ``lo`` the largest within it below ``hi`` (or 0):
    where the budget binds lies between."""
    found = (summary.get(name) or {}).get("bracket_at_budget", {}).get(direction)
    return (float(found[0]), None if found[1] is None else float(found[1])) if found else None


def bisect_budget(results: list[dict], evaluate_at: Callable[[str, float], list[dict]], names: list[str],
                  steps: int, direction: str = "+", ceiling: float | None = None) -> list[dict]:
    """``results`` plus the rows of ``steps`` halvings of each named vector's :func:`budget_bracket`:
    ``evaluate_at(name, multiplier)`` answers at the bracket's midpoint, which becomes its new lower or
    upper end. A coarse ladder reads a vector up to a whole rung below where the budget binds (CAA at
    +2 where +3 might pass); three halvings leave an eighth of the rung.

    With a ``ceiling``, a vector still within the budget at the top of the ladder first climbs it,
    doubling the multiplier up to the ceiling, until its answers leave the budget: without that its
    reading is only a lower bound (a vector of a small norm read at +16 when it stays fluent to +64)."""
    rows = list(results)
    for name in names if ceiling else []:
        while (bracket := budget_bracket(fluency_summary(rows), name, direction)) is not None \
                and bracket[1] is None and bracket[0] != 0 and abs(2 * bracket[0]) <= ceiling:
            climbed = evaluate_at(name, 2 * bracket[0])
            if not climbed:
                break
            rows += climbed
    for _ in range(steps):
        summary = fluency_summary(rows)
        for name in names:
            bracket = budget_bracket(summary, name, direction)
            if bracket is not None and bracket[1] is not None:
                rows += evaluate_at(name, (bracket[0] + bracket[1]) / 2)
    return rows


def _collapsed(row: dict, reference_ppl: float, factor: float, min_distinct2: float) -> bool:
    if row["perplexity"] is None:  # every answer empty: nothing left that is language
        return True
    return row["perplexity"] > factor * reference_ppl or (row["distinct2"] is not None and row["distinct2"] < min_distinct2)


def mean_of_usable(values) -> float | None:
    """The mean of the values an answer gave (None or NaN: an empty answer has no perplexity, say);
    None where none did."""
    usable = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return fmean(usable) if usable else None


def on_questions(results: list[dict], drawn: list[int]) -> list[dict]:
    """``results`` with each row's perplexity the mean over the ``drawn`` questions (indices, drawn
    with replacement) of its ``perplexity_per_question``; None where no drawn answer has one."""
    return [{**row, "perplexity": mean_of_usable(row["perplexity_per_question"][q] for q in drawn)} for row in results]


def budget_resampled_difference_ci(evaluated: list[dict], shifts: Callable[[int, float], list[float]], ours: list[str],
                                   theirs: str, level: float = 0.95, resamples: int = RESAMPLES,
                                   seed: int = 0) -> dict | None:
    """Interval for ours minus theirs at equal fluency, resampling where the budget binds as well as
    the pairs and seeds: each resample draws the answered questions (with replacement), reads every
    vector at its largest multiplier within the budget on those questions (:func:`fluency_summary` of
    :func:`on_questions`; 0, unsteered, where none is), and draws the held-out pairs and the seeds as
    :func:`~bipo_lens.evaluation.intervals.crossed_difference_ci` does, with the same draws for the
    same seed: where every resample reads the same multipliers, the two intervals are equal.
    ``shifts(k, multiplier)`` is the per-pair margin shift from unsteered of vector ``k`` of ``[*ours,
    theirs]`` (the same pairs for every vector; called once per multiplier it is read at). ``ours``:
    the name in ``evaluated`` of each training seed's vector.
    Needs every row's ``perplexity_per_question`` (None without it). Returns the interval and how
    often each vector (in the order of ``[*ours, theirs]``) was read at each multiplier."""
    if not evaluated or any("perplexity_per_question" not in r for r in evaluated):
        return None
    n_questions = len(evaluated[0]["perplexity_per_question"])
    if n_questions < 2:
        return None
    cache: dict[tuple[int, float], torch.Tensor | None] = {}

    def shift(k: int, multiplier: float) -> torch.Tensor | None:
        """None at 0: unsteered, exactly no shift (the scorer at 0 differs from unsteered by rounding,
        which would tie a vector read at 0 against its rival to a few 1e-7, not to 0)."""
        if (k, multiplier) not in cache:
            cache[k, multiplier] = torch.tensor(shifts(k, multiplier), dtype=torch.float64) if multiplier else None
        return cache[k, multiplier]

    questions = torch.randint(n_questions, (resamples, n_questions), generator=torch.Generator().manual_seed(seed + 1))
    names = [*ours, theirs]
    read: list[tuple[float, ...]] = []
    for drawn in questions.tolist():
        summary = fluency_summary(on_questions(evaluated, drawn))
        read.append(tuple(float(multiplier_at_budget(summary, name) or 0.0) for name in names))
    read_shifts = {chosen: [shift(k, m) for k, m in enumerate(chosen)] for chosen in dict.fromkeys(read)}
    n_pairs = next((len(t) for ts in read_shifts.values() for t in ts if t is not None), 0)  # 0: all read unsteered
    if n_pairs < 2:
        return None
    zero = torch.zeros(n_pairs, dtype=torch.float64)
    grids = {chosen: torch.stack([(t if t is not None else zero) - (ts[-1] if ts[-1] is not None else zero)
                                  for t in ts[:-1]])
             for chosen, ts in read_shifts.items()}
    n_seeds = len(ours)
    cells = torch.arange(n_seeds * n_pairs, dtype=torch.float64).reshape(n_seeds, n_pairs)
    positions = _crossed_resamples(cells, resamples, seed).long()  # resample x seed x pair, as the crossed draw
    means = torch.stack([grids[chosen].flatten()[positions[r]].nanmean() for r, chosen in enumerate(read)])
    counts = [{f"{m:g}": n for m, n in sorted(Counter(c[k] for c in read).items())} for k in range(len(names))]
    return {"ci": list(_percentiles(means[~means.isnan()], level)), "questions": n_questions, "resamples": resamples,
            "read_at": counts}
