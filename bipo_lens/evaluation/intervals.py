"""95% bootstrap intervals for the steering effects the evaluation reports.

An effect is a paired difference: the same questions (or pairs) scored at the largest and at the
smallest multiplier. Resampling the questions, not the two sides separately, keeps that pairing, so
spread between questions that both sides share does not widen the interval. Percentile bootstrap,
seeded: the same numbers give the same interval.
"""

from __future__ import annotations

import math

import torch

RESAMPLES = 2000


def _usable(value) -> bool:
    return value is not None and not (isinstance(value, float) and math.isnan(value))


def paired_difference_ci(low: list, high: list, level: float = 0.95, resamples: int = RESAMPLES,
                         seed: int = 0) -> tuple[float, float] | None:
    """Interval for mean(high - low) over items scored on both sides (None where fewer than two are)."""
    if len(low) != len(high):
        raise ValueError(f"paired values of different lengths: {len(low)} and {len(high)}")
    diffs = [float(b) - float(a) for a, b in zip(low, high) if _usable(a) and _usable(b)]
    if len(diffs) < 2:
        return None
    values = torch.tensor(diffs, dtype=torch.float64)
    generator = torch.Generator().manual_seed(seed)
    means = values[torch.randint(len(values), (resamples, len(values)), generator=generator)].mean(dim=1)
    return _percentiles(means, level)


def crossed_difference_ci(low: list[list], high: list[list], level: float = 0.95, resamples: int = RESAMPLES,
                          seed: int = 0) -> tuple[float, float] | None:
    """Interval for mean(high - low) over a grid ``[sample][question]`` (every sample answers every
    question): each resample draws the samples and the questions with replacement, independently,
    and averages the usable cells of the drawn rows and columns. Both sources of spread, which
    question was asked and which seed answered it, widen the interval; with one sample it is the
    paired interval over questions. None where fewer than two questions have a usable cell."""
    if len(low) != len(high) or any(len(a) != len(b) for a, b in zip(low, high)) or len({len(r) for r in low}) > 1:
        raise ValueError("crossed values need the same [sample][question] grid on both sides")
    diffs = torch.tensor([[float(b) - float(a) if _usable(a) and _usable(b) else math.nan for a, b in zip(ra, rb)]
                          for ra, rb in zip(low, high)], dtype=torch.float64)
    if diffs.numel() == 0 or int((~diffs.isnan()).any(dim=0).sum()) < 2:
        return None
    means = _crossed_resamples(diffs, resamples, seed).nanmean(dim=(1, 2))
    return _percentiles(means[~means.isnan()], level)


def crossed_ratio_ci(numerator: list[list], denominator: list[list], level: float = 0.95, resamples: int = RESAMPLES,
                     seed: int = 0) -> tuple[float, float] | None:
    """Interval for mean(numerator) / mean(denominator) over one ``[sample][question]`` grid, resampled
    as :func:`crossed_difference_ci` does (the same rows and columns drawn for both, so a question
    that is hard for both stays paired). For retained efficacy: a transferred vector's per-pair
    margin range over the native vector's. None where fewer than two questions are usable or a
    resampled denominator is 0."""
    if len(numerator) != len(denominator) or any(len(a) != len(b) for a, b in zip(numerator, denominator)) \
            or len({len(r) for r in numerator}) > 1:
        raise ValueError("a crossed ratio needs the same [sample][question] grid above and below")
    both = torch.tensor([[[float(a), float(b)] if _usable(a) and _usable(b) else [math.nan, math.nan]
                          for a, b in zip(ra, rb)] for ra, rb in zip(numerator, denominator)], dtype=torch.float64)
    if both.numel() == 0 or int((~both[..., 0].isnan()).any(dim=0).sum()) < 2:
        return None
    drawn = torch.stack([_crossed_resamples(both[..., i], resamples, seed).nanmean(dim=(1, 2)) for i in (0, 1)])
    if bool((drawn[1] == 0).any()):
        return None
    ratios = drawn[0] / drawn[1]
    return _percentiles(ratios[~ratios.isnan()], level)


def _crossed_resamples(grid: torch.Tensor, resamples: int, seed: int) -> torch.Tensor:
    """``resamples x samples x questions``: rows and columns of ``grid`` drawn with replacement,
    independently; the same seed draws the same rows and columns for any grid of the same shape."""
    n_samples, n_questions = grid.shape
    generator = torch.Generator().manual_seed(seed)
    columns = torch.randint(n_questions, (resamples, n_questions), generator=generator)  # as the paired draw
    rows = torch.randint(n_samples, (resamples, n_samples), generator=generator)
    return grid[rows[:, :, None], columns[:, None, :]]


def _percentiles(values: torch.Tensor, level: float) -> tuple[float, float]:
    tail = (1 - level) / 2
    lo, hi = torch.quantile(values, torch.tensor([tail, 1 - tail], dtype=torch.float64))
    return float(lo), float(hi)
