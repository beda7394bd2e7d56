"""Every figure, one function each, drawn from results (never from live models)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import seaborn as sns  # noqa: E402


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
    fig.tight_layout()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path
