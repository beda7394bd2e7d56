"""Every figure, one function each, drawn from results (never from live models)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402


def _save(fig, path: str | Path) -> Path:
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def training_curve(histories: dict[str, list[dict]], path: str | Path) -> Path:
    """Loss, vector norm and (where recorded) held-out preference accuracy per epoch."""
    sns.set_theme(style="whitegrid")
    keys = ["loss", "norm"] + (["test_accuracy"] if any("test_accuracy" in h[0] for h in histories.values() if h) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        for name, history in histories.items():
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.set_xlabel("epoch")
        ax.set_title({"loss": "training loss", "norm": "vector norm", "test_accuracy": "held-out preference accuracy"}[key])
    axes[0].legend()
    return _save(fig, path)


def steering_curve(results: list[dict], path: str | Path, title: str = "") -> Path:
    """Judge score, log-prob margin and (where present) A/B probability against the multiplier,
    one line per vector: BiPO against CAA at a glance."""
    sns.set_theme(style="whitegrid")
    metrics = [m for m in ("judge_score", "logprob_margin", "ab_probability") if any(r[m] is not None for r in results)]
    labels = {"judge_score": "judge score (embedding)", "logprob_margin": "log p(matching) - log p(not matching)",
              "ab_probability": "p(matching letter)"}
    fig, axes = plt.subplots(1, len(metrics), figsize=(4.4 * len(metrics), 3.6), squeeze=False)
    for ax, metric in zip(axes[0], metrics):
        for name in dict.fromkeys(r["vector"] for r in results):
            points = sorted((r["multiplier"], r[metric]) for r in results if r["vector"] == name and r[metric] is not None)
            if points:
                ax.plot(*zip(*points), marker="o", label=name)
        ax.axvline(0, color="grey", lw=0.8)
        ax.set_xlabel("multiplier")
        ax.set_title(labels[metric], fontsize=10)
    axes[0][0].legend()
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)
