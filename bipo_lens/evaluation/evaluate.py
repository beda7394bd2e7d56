"""One honest set of numbers per vector and multiplier: how far the behaviour moved, what it cost.

For every vector and multiplier (all on held-out pairs):
- ``logprob_margin``: mean of log p(matching | q) - log p(not_matching | q), summed over response
  tokens (``logprob_margin_per_token``: each side divided by its length), and
  ``preference_accuracy``: the fraction of pairs where the margin is positive;
- ``mc1_accuracy``: where questions have several pairs (TruthfulQA: the best answer against each
  incorrect one), the fraction of questions whose best answer beats every incorrect one (MC1);
- ``ab_probability``: where the data has a multiple-choice form, p(matching letter) normalised
  over the two letters;
- ``judge_score``: the mean judge score of greedy answers to the first questions (see judge.py);
- ``perplexity`` of those answers under the unsteered model and their ``distinct2`` ratio.
Unsteered baselines (multiplier 0) are computed once and shared by every vector. The summary gives
each metric's change over the multipliers with a 95% bootstrap interval over questions; ``fluency``
(see fluency.py) compares the vectors at equal damage: where each one's answers collapse, and how far
each moves the margin while its answers stay near the unsteered perplexity.
"""

from __future__ import annotations

import math
import statistics

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bipo_lens.evaluation.coherence import distinct2, perplexities
from bipo_lens.evaluation.fluency import fluency_summary
from bipo_lens.evaluation.intervals import paired_difference_ci
from bipo_lens.models import info
from bipo_lens.pairs import PreferencePair
from bipo_lens.generation import generate_grid
from bipo_lens.steering import steer_raw_layers
from bipo_lens.activations import device_of
from bipo_lens.tokens import encode_pairs
from bipo_lens.scoring import FastPath, PairScorer
from bipo_lens.vectors import SteeringVector

METRICS = ("logprob_margin", "preference_accuracy", "mc1_accuracy", "ab_probability", "judge_score", "perplexity",
           "distinct2")


Term = tuple[SteeringVector, float]


class MarginScorer:
    """Summed response log-probs of a fixed set of held-out pairs under any steering.

    Vectors at the first (lowest) steered layer are summed and added to cached activations there;
    vectors at later layers are added as the remaining blocks run. The unsteered log-probs are
    computed once.
    """

    def __init__(self, model, pairs: list[PreferencePair], max_response_tokens: int | None = 64,
                 response_format: str = "eot"):
        self.model = model
        self.encoded = encode_pairs(model, pairs, max_response_tokens, response_format=response_format)
        self.lengths = torch.tensor([[m.response_len, n.response_len] for m, n in self.encoded], dtype=torch.float32)
        self.by_layer: dict[int, PairScorer] = {}
        self.unsteered: torch.Tensor | None = None
        self.ranges: dict[tuple, tuple[SteeringVector, float]] = {}  # margin_range of a vector alone

    def _scorer(self, layer: int) -> PairScorer:
        if layer not in self.by_layer:
            self.by_layer[layer] = PairScorer(self.model, self.encoded, layer, FastPath(reference_once=False), 2 << 30)
        return self.by_layer[layer]

    @torch.no_grad()
    def logps(self, terms: list[Term]) -> Float[Tensor, "pairs 2"]:
        """Per pair: (log p(matching), log p(not_matching)) with every ``multiplier * vector`` added."""
        terms = [(v, float(m)) for v, m in terms if m != 0]
        indices = range(len(self.encoded))
        if not terms:
            if self.unsteered is None:
                layer = next(iter(self.by_layer), info(self.model).n_layers // 2)
                self.unsteered = self._scorer(layer).logps(indices, None, 0.0).cpu()
            return self.unsteered
        for vector, _ in terms:
            vector.check_compatible(self.model)
        first = min(v.layer for v, _ in terms)
        combined = sum(m * v.vector.to(device_of(self.model)) for v, m in terms if v.layer == first)
        later = [(v.layer, v.vector, m) for v, m in terms if v.layer != first]
        with steer_raw_layers(self.model, later):  # vectors past the first layer join as the rest runs
            return self._scorer(first).logps(indices, combined, 1.0).cpu()

    def margins(self, terms: list[Term]) -> Float[Tensor, " pairs"]:
        """log p(matching) - log p(not_matching) per pair."""
        lp = self.logps(terms)
        return lp[:, 0] - lp[:, 1]

    def margin_range(self, vector: SteeringVector, multiplier: float = 1.0, others: list[Term] = ()) -> float:
        """Steering efficacy in one number: mean margin at ``+multiplier`` minus at ``-multiplier``
        (with ``others`` held fixed), in nats. The analyses compare vectors by it.

        A vector alone is scored once per multiplier: transfer compares every mapped vector with the
        same native one, whose range would otherwise be recomputed for each map."""
        key = (id(vector), vector.vector._version, float(multiplier))
        if not others and key in self.ranges and self.ranges[key][0] is vector:
            return self.ranges[key][1]
        up = self.margins([(vector, multiplier), *others]).mean()
        down = self.margins([(vector, -multiplier), *others]).mean()
        found = float(up - down)
        if not others:
            self.ranges[key] = (vector, found)  # the vector is kept: its id cannot be reused meanwhile
        return found


def evaluate(
    model,
    vectors: dict[str, SteeringVector],
    pairs: list[PreferencePair],
    multipliers: list[float],
    ab_pairs: list[PreferencePair] | None = None,
    judge=None,
    max_questions: int = 100,
    max_generations: int = 20,
    max_new_tokens: int = 48,
    max_response_tokens: int | None = 64,
    progress: bool = True,
    response_format: str = "eot",
) -> dict:
    """Results as data: ``{"results": [...], "summary": {...}, "fluency": {...}, "generations": [...]}``."""
    for vector in vectors.values():
        vector.check_compatible(model)
    margin_pairs = pairs[:max_questions]
    if judge is not None:
        judge.fit(margin_pairs)
    scorers = MarginScorer(model, margin_pairs, max_response_tokens, response_format)
    # A/B questions compare the answer letters alone: nothing follows them to score.
    ab_scorers = MarginScorer(model, ab_pairs[:max_questions], None, "text") if ab_pairs else None
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(margin_pairs):
        groups.setdefault(pair.question, []).append(index)
    multiple_choice = any(len(g) > 1 for g in groups.values())
    questions = list(dict.fromkeys(p.question for p in pairs))[:max_generations]
    reference = {p.question: p for p in pairs}
    unsteered = [row[0] for row in generate_grid(model, questions, [], [0.0], max_new_tokens=max_new_tokens)] \
        if 0 in multipliers and questions else None
    results, generations = [], []
    items: dict[tuple[str, float], dict[str, list]] = {}  # per question or pair: what the intervals resample
    bar = tqdm(total=len(vectors) * (len(multipliers) + 1), desc="evaluating", disable=not progress, leave=False)
    for name, vector in vectors.items():
        steered = [m for m in multipliers if m != 0]
        # Every question under every multiplier: one batched workload for the engine.
        grid = generate_grid(model, questions, [vector], steered, max_new_tokens=max_new_tokens) \
            if steered and questions else [[] for _ in questions]
        answers = {m: [row[k] for row in grid] for k, m in enumerate(steered)}
        if unsteered is not None:
            answers[0] = unsteered
        answers = {m: answers.get(m, []) for m in multipliers}
        bar.update(1)
        for m in multipliers:
            lp = scorers.logps([(vector, m)])
            margin = lp[:, 0] - lp[:, 1]
            per_token = lp[:, 0] / scorers.lengths[:, 0] - lp[:, 1] / scorers.lengths[:, 1]
            ab, ab_items = None, []
            if ab_scorers is not None:
                ab_lp = ab_scorers.logps([(vector, m)])
                ab_items = torch.sigmoid(ab_lp[:, 0] - ab_lp[:, 1]).tolist()
                ab = statistics.fmean(ab_items)
            texts = answers[m]
            judge_scores = judge.scores(texts, [reference[q] for q in questions]) if judge and texts else [None] * len(texts)
            ppl = perplexities(model, questions, texts)
            d2 = [distinct2(t) for t in texts]
            mc1 = [float(bool((margin[g] > 0).all())) for g in groups.values()]
            items[(name, m)] = {
                "logprob_margin": margin.tolist(), "preference_accuracy": (margin > 0).float().tolist(),
                "mc1_accuracy": mc1 if multiple_choice else [], "ab_probability": ab_items, "judge_score": list(judge_scores), "perplexity": list(ppl), "distinct2": d2,
            }
            results.append({
                "vector": name, "multiplier": m,
                "logprob_margin": float(margin.mean()), "logprob_margin_per_token": float(per_token.mean()),
                "preference_accuracy": float((margin > 0).float().mean()),
                "mc1_accuracy": statistics.fmean(mc1) if multiple_choice else None,
                "ab_probability": ab, "judge_score": _mean(judge_scores), "perplexity": _mean(ppl),
                "distinct2": _mean(d2),
            })
            generations += [{"vector": name, "multiplier": m, "question": q, "answer": t, "judge_score": s,
                             "perplexity": p, "distinct2": d}
                            for q, t, s, p, d in zip(questions, texts, judge_scores, ppl, d2)]
            bar.update(1)
    bar.close()
    return {"results": results, "summary": summarise(results, items), "fluency": fluency_summary(results) if questions else {},
            "generations": generations,
            "n_margin_pairs": len(margin_pairs), "n_ab_pairs": len(ab_pairs[:max_questions]) if ab_pairs else 0,
            "n_generation_questions": len(questions)}


def _mean(values) -> float | None:
    usable = [v for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    return statistics.fmean(usable) if usable else None


def summarise(results: list[dict], items: dict[tuple[str, float], dict[str, list]] | None = None) -> dict:
    """Per vector and metric: least-squares slope against the multiplier, the value at the largest
    multiplier minus the value at the smallest (``range``), and Spearman's rank correlation
    (monotonicity). With ``items`` (per question or pair values at each ``(vector, multiplier)``),
    ``range_ci_low`` / ``range_ci_high``: the 95% bootstrap interval of ``range``, paired by question."""
    summary: dict[str, dict] = {}
    for name in dict.fromkeys(r["vector"] for r in results):
        rows = sorted((r for r in results if r["vector"] == name), key=lambda r: r["multiplier"])
        summary[name] = {}
        for metric in METRICS:
            points = [(r["multiplier"], r[metric]) for r in rows if r[metric] is not None]
            if len(points) < 2:
                continue
            xs, ys = zip(*points)
            summary[name][metric] = {"slope": _slope(xs, ys), "range": ys[-1] - ys[0], "spearman": spearman(xs, ys)}
            low, high = ((items or {}).get((name, x), {}).get(metric) for x in (xs[0], xs[-1]))
            interval = paired_difference_ci(low, high) if low and high and len(low) == len(high) else None
            if interval is not None:
                summary[name][metric]["range_ci_low"], summary[name][metric]["range_ci_high"] = interval
    return summary


def _slope(xs, ys) -> float:
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / var if var else float("nan")


def _ranks(values) -> list[float]:
    order = sorted(range(len(values)), key=lambda i: values[i])
    ranks = [0.0] * len(values)
    i = 0
    while i < len(order):
        j = i
        while j + 1 < len(order) and values[order[j + 1]] == values[order[i]]:
            j += 1
        for k in range(i, j + 1):
            ranks[order[k]] = (i + j) / 2
        i = j + 1
    return ranks


def spearman(xs, ys) -> float:
    """Pearson correlation of the ranks (ties get their average rank)."""
    rx, ry = _ranks(list(xs)), _ranks(list(ys))
    mx, my = statistics.fmean(rx), statistics.fmean(ry)
    sx = math.sqrt(sum((x - mx) ** 2 for x in rx))
    sy = math.sqrt(sum((y - my) ** 2 for y in ry))
    return sum((x - mx) * (y - my) for x, y in zip(rx, ry)) / (sx * sy) if sx and sy else float("nan")
