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
    """Loss (training, and held-out where recorded: convergence shows as the held-out curve levelling
    off), vector norm and held-out reward accuracy per epoch."""
    sns.set_theme(style="whitegrid")
    keys = ["loss", "norm"] + (["reward_accuracy"] if any("reward_accuracy" in h[0] for h in histories.values() if h) else [])
    fig, axes = plt.subplots(1, len(keys), figsize=(4.2 * len(keys), 3.4))
    for ax, key in zip(axes, keys):
        for name, history in histories.items():
            points = [(r["epoch"], r[key]) for r in history if key in r]
            if points:
                line, = ax.plot(*zip(*points), marker="o", label=name)
            held_out = [(r["epoch"], r["held_out_loss"]) for r in history if "held_out_loss" in r]
            if key == "loss" and held_out:
                ax.plot(*zip(*held_out), marker="s", linestyle="--", color=line.get_color(), label=f"{name} (held-out)")
        ax.set_xlabel("epoch")
        held_out_drawn = key == "loss" and any("held_out_loss" in r for h in histories.values() for r in h)
        ax.set_title({"loss": "loss (dashed: held-out)" if held_out_drawn else "training loss", "norm": "vector norm",
                      "reward_accuracy": "held-out reward accuracy"}[key])
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


def layer_sweep(results: list[dict], path: str | Path, title: str = "") -> Path:
    """Efficacy against layer for BiPO and CAA: the margin range at the vectors' own scale (with its
    95% interval as a band where the sweep measured one), the same per unit of vector norm
    (direction quality), and the judge range where measured."""
    sns.set_theme(style="whitegrid")
    panels = [("margin_range", "margin range (+m vs -m), nats"), ("range_per_norm", "margin range per unit norm")]
    if any(r[m].get("judge_range") is not None for r in results for m in ("bipo", "caa")):
        panels.append(("judge_range", "judge score range (+m vs -m)"))
    fig, axes = plt.subplots(1, len(panels), figsize=(4.4 * len(panels), 3.6), squeeze=False)
    for ax, (key, label) in zip(axes[0], panels):
        for method, colour in (("bipo", "C0"), ("caa", "C1")):
            points = sorted((r["layer"], r[method][key]) for r in results if r[method].get(key) is not None)
            if points:
                ax.plot(*zip(*points), marker="o", color=colour, label={"bipo": "BiPO", "caa": "CAA"}[method])
                bands = sorted((r["layer"], *r[method]["margin_range_ci"]) for r in results
                               if key == "margin_range" and r[method].get("margin_range_ci"))
                if bands:
                    ax.fill_between([b[0] for b in bands], [b[1] for b in bands], [b[2] for b in bands],
                                    color=colour, alpha=0.2, linewidth=0)
                best = max(points, key=lambda p: p[1])
                ax.scatter([best[0]], [best[1]], s=160, facecolors="none", edgecolors=colour, linewidths=2)
        ax.set_xlabel("layer")
        ax.set_title(label, fontsize=10)
    axes[0][0].legend()
    if title:
        fig.suptitle(title, fontsize=11)
    return _save(fig, path)


def similarity_heatmap(rows: list[dict], path: str | Path) -> Path:
    """Cosine(BiPO, CAA) per behaviour and layer, and both methods' norms by layer."""
    import pandas as pd

    sns.set_theme(style="white")
    frame = pd.DataFrame(rows)
    table = frame.pivot(index="behaviour", columns="layer", values="cosine")
    fig, (left, right) = plt.subplots(1, 2, figsize=(12, 0.6 * len(table) + 2.6),
                                      gridspec_kw={"width_ratios": [1.6, 1]})
    sns.heatmap(table, annot=True, fmt=".2f", cmap="vlag", vmin=-1, vmax=1, ax=left, cbar_kws={"label": "cosine"})
    left.set_title("cosine(BiPO, CAA)", fontsize=10)
    for index, (behaviour, part) in enumerate(frame.groupby("behaviour", sort=False)):
        part = part.sort_values("layer")
        right.plot(part["layer"], part["bipo_norm"], marker="o", color=f"C{index}", label=f"{behaviour} BiPO")
        right.plot(part["layer"], part["caa_norm"], marker="s", ls="--", color=f"C{index}", label=f"{behaviour} CAA")
    right.set_yscale("log")
    right.set_xlabel("layer")
    right.set_title("vector norm", fontsize=10)
    right.grid(alpha=0.3)
    right.legend(fontsize=7)
    return _save(fig, path)


METHOD_NAMES = {"bipo": "BiPO", "caa": "CAA", "caa_answer_token": "CAA (answer token)", "pca": "PCA",
                "bipo_activation_margin": "BiPO (activation margin)", "reps": "RePS"}  # how results' method keys are written in figures and text


def transfer_bars(rows: list[dict], path: str | Path) -> Path:
    """Retained efficacy (transferred range / native range on the target) per transfer and map."""
    sns.set_theme(style="whitegrid")
    fig, ax = plt.subplots(figsize=(1.6 * len(rows) + 2.5, 3.8))
    methods = {r.get("method", "bipo") for r in rows}
    prefix = (lambda r: METHOD_NAMES[r["method"]] + ": ") if len(methods) > 1 else (lambda r: "")  # noqa: E731
    labels = [f"{prefix(r)}{r['source']}\n-> {r['target']}\n({r['map']})" for r in rows]
    values = [r["retained"] for r in rows]
    bars = ax.bar(range(len(rows)), values, color=[f"C{i % 10}" for i in range(len(rows))])
    for bar, value in zip(bars, values):
        ax.text(bar.get_x() + bar.get_width() / 2, value, f"{value:.2f}", ha="center",
                va="bottom" if value >= 0 else "top", fontsize=9)
    ax.axhline(1.0, color="grey", ls="--", lw=0.8)
    ax.axhline(0.0, color="black", lw=0.6)
    ax.set_xticks(range(len(rows)), labels, fontsize=7)
    ax.set_ylabel("retained efficacy")
    ax.set_title("transferred vector's margin range / native vector's, on the target", fontsize=10)
    return _save(fig, path)


def composition_grid(result: dict, path: str | Path) -> Path:
    """Each behaviour's mean held-out margin over the grid of the two vectors' weights, as the change
    from the unsteered model (both weights 0)."""
    import pandas as pd

    sns.set_theme(style="white")
    names = list(result["behaviours"])[:2]
    frame = pd.DataFrame([{**{f"w_{n}": g["weights"][n] for n in names}, **g["margins"]} for g in result["grid"]])
    fig, axes = plt.subplots(1, len(names), figsize=(5.2 * len(names), 4.2))
    for ax, name in zip(axes, names):
        table = frame.groupby([f"w_{names[0]}", f"w_{names[1]}"])[name].mean().unstack()
        table = table - table.loc[0.0, 0.0]  # the change from the unsteered model
        sns.heatmap(table.iloc[::-1], annot=True, fmt="+.1f", cmap="vlag", center=0, ax=ax,
                    cbar_kws={"label": "change in mean margin (nats)"})
        retained = result["behaviours"][name]["retained"]
        ax.set_title(f"{name} margin (retained with the other on: {retained:.2f})", fontsize=10)
    return _save(fig, path)


def fluency_front(fluency: dict, path: str | Path, title: str = "") -> Path:
    """Behaviour against damage (the equal-fluency comparison): the metric at each multiplier against
    the perplexity of the steered answers under the unsteered model, one line per vector, multipliers
    written at the points; the dotted line is the perplexity budget, crosses mark collapsed answers."""
    sns.set_theme(style="whitegrid")
    settings = fluency["_settings"]
    metric = settings["metric"]
    fig, ax = plt.subplots(figsize=(6.2, 4.4))
    for index, (name, entry) in enumerate((n, e) for n, e in fluency.items() if n != "_settings"):
        points = [p for p in entry["front"] if p["perplexity"] is not None and p[metric] is not None]
        if not points:
            continue
        ax.plot([p["perplexity"] for p in points], [p[metric] for p in points], marker="o", color=f"C{index}", label=name)
        for p in points:
            ax.annotate(f"{p['multiplier']:+g}", (p["perplexity"], p[metric]), fontsize=7, xytext=(3, 3),
                        textcoords="offset points")
            if p["collapsed"]:
                ax.scatter([p["perplexity"]], [p[metric]], marker="x", s=90, color="black", zorder=3)
    ax.axvline(settings["budget_perplexity"], color="grey", ls=":", lw=1,
               label=f"budget: {settings['budget_factor']:g}x unsteered perplexity")
    ax.set_xscale("log")
    ax.set_xlabel("perplexity of steered answers under the unsteered model")
    ax.set_ylabel({"logprob_margin": "log p(matching) - log p(not matching)"}.get(metric, metric))
    ax.legend(fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    return _save(fig, path)


def _error_bars(values: list[float], cis: list) -> list[list[float]]:
    """matplotlib's ``yerr`` (below, above) from 95% intervals; no bar where there is no interval (nor
    on a side where a percentile interval does not reach the mean, as skewed resamples can give)."""
    cis = [ci or [v, v] for v, ci in zip(values, cis)]
    return [[max(v - lo, 0.0) for v, (lo, _) in zip(values, cis)], [max(hi - v, 0.0) for v, (_, hi) in zip(values, cis)]]


def method_bars(rows: list[dict], path: str | Path, title: str = "", fluency: list[dict] | None = None) -> Path:
    """Each method's margin range with its 95% interval: at its own norm (left) and rescaled to the
    reference's norm (middle: the direction's quality); with ``fluency`` rows, its margin shift at the
    largest multiplier its answers survive (right: equal damage)."""
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 3 if fluency else 2, figsize=(16 if fluency else 11, 4.2))
    labels = [METHOD_NAMES.get(r["method"], r["method"]).replace(" (", "\n(") + f"\n|v| {r['norm']:.1f}" for r in rows]
    reference = METHOD_NAMES.get(rows[0]["reference"], rows[0]["reference"])
    for ax, key, subtitle in ((axes[0], "range", "at its own norm"), (axes[1], "range_at_reference_norm", f"at {reference}'s norm")):
        values = [r[key] for r in rows]
        ax.bar(range(len(rows)), values, yerr=_error_bars(values, [r[f"{key}_ci"] for r in rows]), capsize=3,
               color=[f"C{i % 10}" for i in range(len(rows))])
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(range(len(rows)), labels, fontsize=7)
        ax.set_ylabel("margin range (nats)")
        ax.set_title(subtitle, fontsize=10)
    if fluency:
        ax, by_method = axes[2], {r["method"]: r for r in fluency}
        values = [(by_method.get(r["method"]) or {}).get("shift") or 0.0 for r in rows]
        cis = [(by_method.get(r["method"]) or {}).get("shift_ci") for r in rows]
        ax.bar(range(len(rows)), values, yerr=_error_bars(values, cis), capsize=3,
               color=[f"C{i % 10}" for i in range(len(rows))])
        ax.axhline(0.0, color="black", lw=0.6)
        chosen = [(by_method.get(r["method"]) or {}).get("multiplier_at_budget") for r in rows]
        ax.set_xticks(range(len(rows)), [METHOD_NAMES.get(r["method"], r["method"]).replace(" (", "\n(")
                                         + ("\nnone fluent" if m is None else f"\nat {m:+g}") for r, m in zip(rows, chosen)],
                      fontsize=7)
        ax.set_ylabel("margin shift from unsteered (nats)")
        ax.set_title(f"at equal fluency (perplexity <= {fluency[0]['budget_perplexity']:.2f})", fontsize=10)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def behaviour_bars(rows: list[dict], path: str | Path, title: str = "") -> Path:
    """Per behaviour, with 95% intervals over held-out pairs and seeds: how far BiPO moves the margin
    up (+m) and down (-m) from unsteered (left: both above 0 is "steers both ways"), and BiPO's
    margin range minus CAA's, at CAA's own scale and at BiPO's norm (right)."""
    sns.set_theme(style="whitegrid")
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.4))
    names = [r["behaviour"] for r in rows]
    panels = (
        (axes[0], [("up (+m)", lambda r: (r["both_ways"]["up"], r["both_ways"]["up_ci"])),
                   ("down (-m)", lambda r: (r["both_ways"]["down"], r["both_ways"]["down_ci"]))],
         "BiPO's shift from unsteered (nats)"),
        (axes[1], [("CAA at own scale", lambda r: (r["beats_caa_own_scale"]["value"], r["beats_caa_own_scale"]["ci"])),
                   ("CAA at BiPO's norm", lambda r: (r["beats_caa_equal_norm"]["value"], r["beats_caa_equal_norm"]["ci"]))],
         "BiPO range - CAA range (nats)"),
    )
    width = 0.38
    for ax, series, subtitle in panels:
        for k, (label, read) in enumerate(series):
            values, cis = zip(*(read(r) for r in rows))
            ax.bar([i + (k - 0.5) * width for i in range(len(rows))], values, width,
                   yerr=_error_bars(list(values), list(cis)), capsize=3, label=label)
        ax.axhline(0.0, color="black", lw=0.6)
        ax.set_xticks(range(len(rows)), [n.replace("-", "-\n", 1) if len(n) > 14 else n for n in names], fontsize=7)
        ax.set_title(subtitle, fontsize=10)
        ax.legend(fontsize=8)
    fig.suptitle(title, fontsize=10)
    return _save(fig, path)
