"""BiPO beside its baselines, on the same held-out pairs and by the same metric.

Methods trained on the same pairs at the same layer (CAA over the response or at the answer token,
repeng's PCA, the activation-margin BiPO variant, RePS) come out at very different norms, so each
is read twice: its margin range at its own scale (what a user gets at multiplier 1), and at the
reference vector's norm (the direction's quality; what "beats" means without a scale advantage).
Intervals are over held-out pairs (one training seed each: a difference whose interval excludes 0
is a measured difference between these vectors, not yet between the methods).

Equal norm is not what a user holds fixed, though: each method is used at the largest multiplier
its answers survive. So each is also read at equal fluency: at its largest multiplier whose greedy
answers stay within the perplexity budget (:mod:`bipo_lens.evaluation.fluency`), with the
multiplier where its answers stop being language. Where the budget binds is measured on a few dozen
answers, so that comparison's interval draws which of them were answered, too.
"""

from __future__ import annotations

from statistics import fmean

from bipo_lens.analysis.claims import pair_shifts, scaled
from bipo_lens.analysis.similarity import cosine
from bipo_lens.evaluation import MarginScorer
from bipo_lens.evaluation.fluency import budget_resampled_difference_ci, fluency_summary, multiplier_at_budget
from bipo_lens.evaluation.intervals import paired_difference_ci
from bipo_lens.vectors import SteeringVector


def compare_methods(scorer: MarginScorer, vectors: dict[str, SteeringVector], reference: str,
                    multiplier: float = 1.0) -> list[dict]:
    """One row per method: norm, cosine to ``vectors[reference]``, margin range (``+m`` minus ``-m``)
    at its own norm and at the reference's, each with a 95% interval over the scorer's pairs, and
    the reference's range minus this method's at equal norm (interval paired by pair)."""
    ref = vectors[reference]
    ref_ranges = scorer.pair_ranges(ref, multiplier).tolist()
    rows = []
    for name, vector in vectors.items():
        own = scorer.pair_ranges(vector, multiplier).tolist()
        equal = own if name == reference else scorer.pair_ranges(scaled(vector, ref.norm), multiplier).tolist()
        zeros = [0.0] * len(own)
        ci = lambda values: list(paired_difference_ci(zeros, values) or ()) or None  # noqa: E731
        gap = paired_difference_ci(equal, ref_ranges)
        rows.append({"method": name, "reference": reference, "norm": vector.norm, "cosine_to_reference": cosine(vector, ref),
                     "range": fmean(own), "range_ci": ci(own),
                     "range_at_reference_norm": fmean(equal), "range_at_reference_norm_ci": ci(equal),
                     "reference_minus_this_at_equal_norm": fmean(ref_ranges) - fmean(equal),
                     "reference_minus_this_ci": list(gap) if gap and name != reference else None,
                     "pairs": len(own)})
    return rows


def compare_at_equal_fluency(scorer: MarginScorer, evaluated: list[dict], vectors: dict[str, SteeringVector],
                             reference: str) -> list[dict]:
    """One row per method of ``vectors`` (named as in ``evaluated``, the rows of evaluations of every
    method at every multiplier, 0 included, with answers): the largest + multiplier whose answers stay
    within the perplexity budget, the held-out margin's shift from unsteered there (per pair, with a
    95% interval), the reference's shift minus this one, and the multipliers where each direction's
    answers collapse.

    The multipliers are chosen on a few dozen answers, so where the budget binds is itself noisy: where
    the rows carry per-question perplexities, the reference-minus-this interval also draws which
    questions were answered and reads both vectors where the budget binds on those
    (:func:`~bipo_lens.evaluation.fluency.budget_resampled_difference_ci`, as the claims' equal-fluency
    row does), with how often each was read at each multiplier (``budget_resampled``); the interval
    with both held at their chosen multipliers (paired by pair) is kept as
    ``reference_minus_this_ci_at_fixed_budget``."""
    front = fluency_summary(evaluated)
    if not front:
        return []
    chosen = {name: multiplier_at_budget(front, name) for name in vectors}
    memo: dict[tuple[str, float], list[float]] = {}

    def shifts(name: str, multiplier: float) -> list[float]:
        if (name, multiplier) not in memo:
            memo[name, multiplier] = pair_shifts(scorer, vectors[name], multiplier)
        return memo[name, multiplier]

    rows = []
    for name in vectors:
        own = shifts(name, chosen[name]) if chosen[name] is not None else None
        ref = shifts(reference, chosen[reference]) if chosen[reference] is not None else None
        zeros = [0.0] * len(own) if own else []
        ci = paired_difference_ci(zeros, own) if own else None
        compared = bool(own and ref) and name != reference
        fixed = paired_difference_ci(own, ref) if compared else None
        resampled = budget_resampled_difference_ci(
            evaluated, lambda k, m, pair=(reference, name): shifts(pair[k], m), [reference], name) if compared else None
        gap = resampled.pop("ci") if resampled else (list(fixed) if fixed else None)
        rows.append({"method": name, "reference": reference, "multiplier_at_budget": chosen[name],
                     "collapse_multiplier": (front.get(name) or {}).get("collapse_multiplier"),
                     "shift": fmean(own) if own else None, "shift_ci": list(ci) if ci else None,
                     "reference_minus_this": fmean(ref) - fmean(own) if own and ref else None,
                     "reference_minus_this_ci": gap,
                     "reference_minus_this_ci_at_fixed_budget": list(fixed) if fixed else None,
                     "budget_resampled": resampled,
                     "budget_perplexity": front["_settings"]["budget_perplexity"], "pairs": len(own or [])})
    return rows
