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

from collections.abc import Sequence

import math
import statistics

import torch
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bipo_lens.evaluation.coherence import distinct2, perplexities
from bipo_lens.evaluation.fluency import fluency_summary, mean_of_usable
from bipo_lens.evaluation.intervals import crossed_difference_ci, paired_difference_ci
from bipo_lens.errors import BipoLensError
from bipo_lens.models import info
from bipo_lens.pairs import PreferencePair
from bipo_lens.generation import GREEDY, Sampling, generate_grid, generate_samples
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
    vectors at later layers are added as the remaining blocks run. The unsteered log-probs, and
    those of each vector alone at each multiplier, are computed once: an evaluation, the ranges of a
    sweep and the claims ask for the same ones.
    """

    def __init__(self, model, pairs: list[PreferencePair], max_response_tokens: int | None = 64,
                 response_format: str = "eot"):
        self.model = model
        self.source = (tuple(pairs), max_response_tokens, response_format)  # what it scores (evaluate checks)
        self.encoded = encode_pairs(model, pairs, max_response_tokens, response_format=response_format)
        self.lengths = torch.tensor([[m.response_len, n.response_len] for m, n in self.encoded], dtype=torch.float32)
        self.by_layer: dict[int, PairScorer] = {}
        self.unsteered: torch.Tensor | None = None
        self.alone: dict[tuple, tuple[SteeringVector, Tensor]] = {}  # logps of one vector at one multiplier

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
        key = (id(terms[0][0]), terms[0][0].vector._version, terms[0][1]) if len(terms) == 1 else None
        if key in self.alone and self.alone[key][0] is terms[0][0]:
            return self.alone[key][1]
        for vector, _ in terms:
            vector.check_compatible(self.model)
        first = min(v.layer for v, _ in terms)
        combined = sum(m * v.vector.to(device_of(self.model)) for v, m in terms if v.layer == first)
        later = [(v.layer, v.vector, m) for v, m in terms if v.layer != first]
        with steer_raw_layers(self.model, later):  # vectors past the first layer join as the rest runs
            found = self._scorer(first).logps(indices, combined, 1.0).cpu()
        if key is not None:
            self.alone[key] = (terms[0][0], found)  # the vector is kept: its id cannot be reused meanwhile
        return found

    def margins(self, terms: list[Term]) -> Float[Tensor, " pairs"]:
        """log p(matching) - log p(not_matching) per pair."""
        lp = self.logps(terms)
        return lp[:, 0] - lp[:, 1]

    def margin_range(self, vector: SteeringVector, multiplier: float = 1.0, others: Sequence[Term] = ()) -> float:
        """Steering efficacy in one number: mean margin at ``+multiplier`` minus at ``-multiplier``
        (with ``others`` held fixed), in nats. The analyses compare vectors by it."""
        return float(self.pair_ranges(vector, multiplier, others).mean())

    def pair_ranges(self, vector: SteeringVector, multiplier: float = 1.0,
                    others: Sequence[Term] = ()) -> Float[Tensor, " pairs"]:
        """Per pair: margin at ``+multiplier`` minus at ``-multiplier`` (``others`` held fixed)."""
        return self.margins([(vector, multiplier), *others]) - self.margins([(vector, -multiplier), *others])


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
    samples: int = 1,
    sampling: Sampling = GREEDY,
    scorer: MarginScorer | None = None,
) -> dict:
    """Results as data: ``{"results": [...], "summary": {...}, "fluency": {...}, "generations": [...]}``.

    ``samples`` > 1 (with a ``sampling`` temperature): that many sampled answers per question and
    multiplier (seeds ``sampling.seed`` onwards); answer metrics are means over questions and samples,
    and their intervals resample both (see ``crossed_difference_ci``). Greedy: one answer each.
    ``scorer``: a :class:`MarginScorer` over the same pairs to reuse (and fill) instead of a new one."""
    if samples > 1 and sampling.temperature <= 0:
        raise BipoLensError(f"{samples} samples per question need a temperature > 0 (greedy answers are all the same)")
    for vector in vectors.values():
        vector.check_compatible(model)
    margin_pairs = pairs[:max_questions]
    if judge is not None:
        judge.fit(margin_pairs)
    if scorer is not None and scorer.source != (tuple(margin_pairs), max_response_tokens, response_format):
        raise BipoLensError("the scorer given to evaluate scores other pairs or another response format")
    scorers = scorer or MarginScorer(model, margin_pairs, max_response_tokens, response_format)
    # A/B questions compare the answer letters alone: nothing follows them to score.
    ab_scorers = MarginScorer(model, ab_pairs[:max_questions], None, "text") if ab_pairs else None
    groups: dict[str, list[int]] = {}
    for index, pair in enumerate(margin_pairs):
        groups.setdefault(pair.question, []).append(index)
    multiple_choice = any(len(g) > 1 for g in groups.values())
    questions = list(dict.fromkeys(p.question for p in pairs))[:max_generations]
    reference = {p.question: p for p in pairs}

    def answer(vectors: list[SteeringVector], ms: list[float]) -> dict[float, list[list[str]]]:
        """``answers[m][k][q]``: sample ``k`` of question ``q`` at multiplier ``m``."""
        if not ms or not questions:
            return {m: [[] for _ in range(samples)] for m in ms}
        if samples == 1:
            grid = generate_grid(model, questions, vectors, ms, max_new_tokens=max_new_tokens, sampling=sampling)
            return {m: [[row[j] for row in grid]] for j, m in enumerate(ms)}
        grid = generate_samples(model, questions, vectors, ms, samples, sampling, max_new_tokens=max_new_tokens)
        return {m: [[grid[q][j][k] for q in range(len(questions))] for k in range(samples)] for j, m in enumerate(ms)}

    unsteered = answer([], [0.0])[0.0] if 0 in multipliers else None
    results, generations = [], []
    items: dict[tuple[str, float], dict[str, list]] = {}  # per question or pair: what the intervals resample
    bar = tqdm(total=len(vectors) * (len(multipliers) + 1), desc="evaluating", disable=not progress, leave=False)
    for name, vector in vectors.items():
        answers = answer([vector], [m for m in multipliers if m != 0])
        if unsteered is not None:
            answers[0] = unsteered
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
            by_sample = answers[m]  # [k][q]
            judged = [judge.scores(texts, [reference[q] for q in questions]) if judge and texts else [None] * len(texts)
                      for texts in by_sample]
            ppl = [perplexities(model, questions, texts) for texts in by_sample]
            d2 = [[distinct2(t) for t in texts] for texts in by_sample]
            mc1 = [float(bool((margin[g] > 0).all())) for g in groups.values()]
            items[(name, m)] = {
                "logprob_margin": margin.tolist(), "preference_accuracy": (margin > 0).float().tolist(),
                "mc1_accuracy": mc1 if multiple_choice else [], "ab_probability": ab_items,
                **{metric: values if samples > 1 else values[0]
                   for metric, values in (("judge_score", judged), ("perplexity", ppl), ("distinct2", d2))},
            }
            flat = lambda nested: [v for row in nested for v in row]  # noqa: E731
            results.append({
                "vector": name, "multiplier": m,
                "logprob_margin": float(margin.mean()), "logprob_margin_per_token": float(per_token.mean()),
                "preference_accuracy": float((margin > 0).float().mean()),
                "mc1_accuracy": statistics.fmean(mc1) if multiple_choice else None,
                "ab_probability": ab, "judge_score": mean_of_usable(flat(judged)),
                "perplexity": mean_of_usable(flat(ppl)), "distinct2": mean_of_usable(flat(d2)),
                # per question (the mean over its samples): what a bootstrap of the fluency budget resamples
                "perplexity_per_question": [mean_of_usable([row[q] for row in ppl]) for q in range(len(questions))],
            })
            generations += [{"vector": name, "multiplier": m, "question": q, "answer": t, "judge_score": s,
                             "perplexity": p, "distinct2": d, **({"sample": k} if samples > 1 else {})}
                            for k in range(len(by_sample))
                            for q, t, s, p, d in zip(questions, by_sample[k], judged[k], ppl[k], d2[k])]
            bar.update(1)
    bar.close()
    return {"results": results, "summary": summarise(results, items), "fluency": fluency_summary(results) if questions else {},
            "generations": generations,
            "n_margin_pairs": len(margin_pairs), "n_ab_pairs": len(ab_pairs[:max_questions]) if ab_pairs else 0,
            "n_generation_questions": len(questions), "samples": samples,
            "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p, "seed": sampling.seed},
            "response_format": response_format, "max_new_tokens": max_new_tokens}


def summarise(results: list[dict], items: dict[tuple[str, float], dict[str, list]] | None = None) -> dict:
    """Per vector and metric: least-squares slope against the multiplier, the value at the largest
    multiplier minus the value at the smallest (``range``), and Spearman's rank correlation
    (monotonicity). With ``items`` (per question or pair values at each ``(vector, multiplier)``),
    ``range_ci_low`` / ``range_ci_high``: the 95% bootstrap interval of ``range``, paired by question
    (and, for sampled answers given as ``[sample][question]``, resampling the samples too). Where 0
    lies between the multipliers, ``up`` (largest minus 0) and ``down`` (0 minus smallest) with their
    intervals: a vector steers both ways when both intervals lie above 0."""
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
            entry = summary[name][metric]
            interval = _difference_ci(items, name, metric, xs[0], xs[-1])
            if interval is not None:
                entry["range_ci_low"], entry["range_ci_high"] = interval
            if 0 in xs and xs[0] < 0 < xs[-1]:  # each direction on its own: does it steer both ways?
                at = dict(points)
                for key, (a, b) in (("up", (0, xs[-1])), ("down", (xs[0], 0))):
                    entry[key] = at[b] - at[a]
                    interval = _difference_ci(items, name, metric, a, b)
                    if interval is not None:
                        entry[f"{key}_ci_low"], entry[f"{key}_ci_high"] = interval
    return summary


def _difference_ci(items, name: str, metric: str, a: float | int, b: float | int) -> tuple[float, float] | None:
    """The 95% bootstrap interval of metric(b) - metric(a), paired by question (and sample)."""
    low, high = ((items or {}).get((name, x), {}).get(metric) for x in (a, b))
    if low and high and isinstance(low[0], list):  # [sample][question]: resample both
        return crossed_difference_ci(low, high)
    return paired_difference_ci(low, high) if low and high and len(low) == len(high) else None


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
