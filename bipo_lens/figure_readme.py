"""``figures/README.md`` from a figures run's ``results.json``: the tables and the text, every number
read from the results, nothing computed.

Kept apart from :mod:`bipo_lens.figures` (which runs the stages) so that rendering is a function of the
results alone: ``bipo-lens figures --redraw`` and the test that the committed README is exactly what
:func:`render_readme` makes of the committed ``results.json`` use it, and the notebooks show its tables
(:func:`claims_table`, :func:`baselines_table`, :func:`behaviours_table`) from the committed run.
"""

from __future__ import annotations

from statistics import fmean

from bipo_lens.analysis import claims as claim
from bipo_lens.figure_work import DEPLOYED, FINETUNED, OTHER_MODEL, SIBLING, STEERING_LAYER
from bipo_lens.model_names import DEFAULT_MODEL
from bipo_lens.plots import METHOD_NAMES
from bipo_lens.records import describe


def _finetuned_text(found: dict) -> str:
    """How the fine-tuned sibling was made, from the record its cache entry keeps (empty if not run)."""
    made = found.get("finetuned_sibling")
    if not made:
        return ""
    recipe, corpus = made["recipe"], made["corpus"]
    return (f"`{FINETUNED}`: `{recipe['base']}` LoRA-fine-tuned (rank {recipe['rank']}, {recipe['steps']} steps of "
            f"{recipe['batch_size']}, lr {recipe['lr']:g}; answer-only loss {made['losses'][0][1]:.2f} -> "
            f"{made['losses'][-1][1]:.2f}) on {corpus['examples']} question-answer turns from Python {corpus['python']}'s "
            f"standard-library docstrings (sha256 {corpus['sha256'][:12]}), merged: a sibling that shares the base, as "
            "Vicuna shares Llama-2's. ")



def _table(header: list[str], rows: list[list[str]], text_columns: int = 1) -> list[str]:
    """Markdown table lines; columns after the first ``text_columns`` are right-aligned numbers."""
    rule = ["---"] * text_columns + ["---:"] * (len(header) - text_columns)
    return ["| " + " | ".join(cells) + " |" for cells in (header, rule, *rows)]


def _signed(value, digits: int = 2) -> str:
    return "-" if value is None else f"{value:+.{digits}f}"


def _retained_at_native(row: dict) -> str:
    if "retained_at_native_norm" not in row:
        return "-"
    ci = row.get("retained_at_native_norm_ci")
    return f"{row['retained_at_native_norm']:.2f}" + (" [{:.2f}, {:.2f}]".format(*ci) if ci else "")


def _summary(results: dict) -> list[str]:
    """The findings in a few lines, every number read from ``results`` (the main README points here)."""
    s, lay, sim, tr, co = (results[k] for k in ("steering", "layers", "similarity", "transfer", "composition"))
    mixed = len({r.get("method", "bipo") for r in tr["rows"]}) > 1  # runs before CAA transferred too: BiPO only
    at = {(r["vector"], r["multiplier"]): r for r in s["results"]}
    low, high = min(m for _, m in at), max(m for _, m in at)
    ends = lambda name, key: f"{at[(name, low)][key]:+.2f} -> {at[(name, high)][key]:+.2f}"  # noqa: E731
    cosines = {}
    for r in sim["rows"]:
        cosines.setdefault(r["behaviour"], []).append(r["cosine"])
    ratios = [r["caa_norm"] / r["bipo_norm"] for r in lay["rows"] if r["bipo_norm"]]
    parts = [(f"both {co['same_layer']['layers']['power_seeking']}", co["same_layer"]),
             (f"{co['different_layers']['layers']['power_seeking']} + {co['different_layers']['layers']['optimism']}",
              co["different_layers"])]
    return [
        "## Summary", "",
        f"- **BiPO vs CAA at layer {s['layer']}**: cosine {s['cosine']:.2f} (norms {s['norms']['bipo']:.1f} and "
        f"{s['norms']['caa']:.1f}); from multiplier {low:+g} to {high:+g} the held-out margin goes {ends('BiPO', 'logprob_margin')} "
        f"(BiPO) and {ends('CAA', 'logprob_margin')} (CAA); judge {ends('BiPO', 'judge_score')} and {ends('CAA', 'judge_score')}.",
        "- **BiPO-CAA cosine across layers**: " + "; ".join(
            f"{b} {min(v):+.2f} to {max(v):+.2f}" for b, v in cosines.items()) + ".",
        f"- **Layer** (fixed budget): best by margin range BiPO {lay['recommended']['bipo']}, CAA "
        f"{lay['recommended']['caa']}; per unit of norm BiPO {lay['recommended_per_norm']['bipo']}, CAA "
        f"{lay['recommended_per_norm']['caa']}; CAA's norm is {min(ratios):.0f}-{max(ratios):.0f}x BiPO's across layers.",
        "- **Transfer** (retained efficacy; norms transferred / native): " + "; ".join(
            f"{METHOD_NAMES[r['method']] + ' ' if mixed else ''}{r['source']} -> {r['target']} ({r['map']}) {r['retained']:.2f} "
            f"({r.get('transferred_norm', float('nan')):.1f} / {r.get('native_norm', float('nan')):.1f}"
            + (f"; {r['retained_at_native_norm']:.2f} at the native norm" if "retained_at_native_norm" in r else "") + ")"
            for r in tr["rows"]) + "."
        + (f" Across families with {fam['seeds']} seeds a side and a map fit per seed: **{fam['verdict']}** at the "
           "native norm (" + "; ".join(f"{r['source']} -> {r['target']} ({r['map']}) "
                                       f"{_interval(r['at_native_norm'], signed=False)}" for r in fam["rows"]) + ")."
           if (fam := results.get("family")) else "")
        + (f" Within the family with {sib['seeds']} native seeds a side: " + "; ".join(
            f"{r['source']} -> {r['target']} {_interval(r['retained'], signed=False)}" for r in sib["rows"]) + "."
           if (sib := results.get("siblings")) else ""),
        "- **Composition** (power-seeking + optimism; retained, crosstalk): " + "; ".join(
            f"layers {label}: " + ", ".join(f"{name} {m['retained']:.2f}, {m['crosstalk']:+.2f}"
                                           for name, m in part["behaviours"].items())
            for label, part in parts) + ".",
        *([f"- **Baselines** (layer {results['baselines']['layer']}, margin range at BiPO's norm, 95% interval over "
           f"{results['baselines']['test_pairs']} held-out pairs): " + "; ".join(
               f"{METHOD_NAMES[r['method']]} {_ranged(r['range_at_reference_norm'], r['range_at_reference_norm_ci'])}"
               for r in results["baselines"]["rows"]) + "."] if results.get("baselines") else []),
        *([_behaviours_summary(results["behaviours"])] if results.get("behaviours") else []),
    ]


def _behaviours_summary(found: dict) -> str:
    rows = found["rows"]
    count = lambda key: sum(r[key]["verdict"] == claim.REPRODUCED for r in rows)  # noqa: E731
    return (f"- **Every behaviour** (layer {found['layer']}, +/-{found['multiplier']:g}, {found['seeds']} seeds, "
            f"{len(rows)} sets): steers both ways in {count('both_ways')} of {len(rows)}, beats CAA at equal norm in "
            f"{count('beats_caa_equal_norm')}, at CAA's own scale in {count('beats_caa_own_scale')} (reproduced, "
            "interval above 0; the rest in the table).")


def _ranged(value: float, ci: list | None, digits: int = 2, signed: bool = True, missing: str = "") -> str:
    """``+0.31 [+0.12, +0.50]``; ``missing`` stands where there is no interval."""
    number = (lambda v: f"{v:+.{digits}f}") if signed else (lambda v: f"{v:.{digits}f}")
    return number(value) + (f" [{number(ci[0])}, {number(ci[1])}]" if ci else missing)


def baselines_table(found: dict | None) -> list[str]:
    """The baselines section of ``figures/README.md`` (notebook 02 renders it too), from the baselines
    stage's results; nothing for a run without that stage."""
    if not found:
        return []
    reps = found["reps"]["hyperparameters"]
    return [
        "## `baselines.png`: BiPO beside its baselines",
        f"Trained on the same {found['train_pairs']} power-seeking pairs at layer {found['layer']}: BiPO and CAA "
        "(stage 1's), CAA read at the answer token (where the two responses first differ, as Rimsky et al.), "
        "repeng's PCA of the paired differences, the activation-margin BiPO variant (wisent-guard's loss and "
        f"defaults), and RePS (Wu et al. 2025, `bipo_lens.training.reps`: the authors' loss, factors and "
        f"optimiser, {reps['epochs']} epochs{'' if reps['epochs'] == 18 else ' instead of their 18'}; saved as "
        f"(mean factor + b) v, so multiplier 1 is their factor {reps['scale']:.1f}). Margin range at "
        f"+/-{found['multiplier']:g} on {found['test_pairs']} held-out pairs, with 95% intervals over pairs (one "
        "training seed each), at each vector's own norm and rescaled to BiPO's.", "",
        *_table(["method", "norm", "cos to BiPO", "range, own norm", "range at BiPO's norm", "BiPO - it, equal norm",
                 "train s"],
                [[METHOD_NAMES[r["method"]], f"{r['norm']:.2f}", f"{r['cosine_to_reference']:+.3f}",
                  _ranged(r["range"], r["range_ci"]), _ranged(r["range_at_reference_norm"], r["range_at_reference_norm_ci"]),
                  "-" if r["method"] == r["reference"] else _ranged(r["reference_minus_this_at_equal_norm"],
                                                                     r["reference_minus_this_ci"]),
                  f"{found['train_seconds'].get(r['method'], 0):.0f}" if r["method"] in found["train_seconds"]
                  else "stage 1"]
                 for r in found["rows"]]), "",
        f"RePS training: loss {found['reps']['history'][0]['loss']:.3f} -> {found['reps']['history'][-1]['loss']:.3f}, "
        f"b {reps['bias']:+.3f}, |v| {reps['unscaled_norm']:.2f} before scaling.", "",
        *_fluency_table(found.get("fluency"), _tops(found.get("evaluated", [])), found.get("ladder")),
    ]


def _tops(evaluated: list[dict]) -> dict[str, float]:
    """Each method's largest multiplier evaluated (a method read there never met the budget)."""
    tops: dict[str, float] = {}
    for r in evaluated:
        tops[r["vector"]] = max(tops.get(r["vector"], r["multiplier"]), r["multiplier"])
    return tops


def _fluency_table(rows: list[dict] | None, tops: dict[str, float], ladder: list[float] | None = None) -> list[str]:
    """The baselines at equal fluency (runs from before it was measured have none). A method read
    at ``tops[method]``, the largest multiplier it was evaluated at, never met the budget: its shift is
    a lower bound (a method still within the budget at the ladder's top climbs it first; the caption
    says so when one did).
    Where the budget binds resampled (runs from before it was: the interval at the chosen multipliers),
    how often each method was read at each multiplier, and the interval with both held there.
    ``ladder``: the multipliers every method answered at (runs from before it was kept: stage 1's)."""
    if not rows:
        return []
    chosen = lambda m, method: "none within" if m is None else f"{m:+g}" + (  # noqa: E731
        " (top: lower bound)" if m == tops.get(method) else "")
    climbed = ladder and any(top > max(ladder) for top in tops.values())
    collapse = lambda r: ", ".join(f"{d}{abs(m):g}" for d, m in (r["collapse_multiplier"] or {}).items()  # noqa: E731
                                   if m is not None) or "none up to the largest"
    resampled = next((r["budget_resampled"] for r in rows if r.get("budget_resampled")), None)

    def read_at(counts: dict[str, int]) -> str:
        """``+1 <1%, +2 99.5%``-like: rare reads stay visible; 0 is unsteered (no multiplier within)."""
        total = sum(counts.values())
        share = lambda n: "<1%" if 100 * n < total else f"{100 * n / total:.3g}%"  # noqa: E731
        return ", ".join(f"{'0' if float(m) == 0 else f'{float(m):+g}'} {share(n)}" for m, n in counts.items())

    def gap(r: dict) -> str:
        if r["method"] == r["reference"] or r["reference_minus_this"] is None:
            return "-"
        held = r.get("budget_resampled") and _ranged(r["reference_minus_this"], r["reference_minus_this_ci_at_fixed_budget"])
        return _ranged(r["reference_minus_this"], r["reference_minus_this_ci"]) + (f" (held: {held})" if held else "")

    questions = (f"{resampled['questions']} held-out questions at the claims' multipliers "
                 f"{', '.join(f'{m:+g}' for m in ladder if m)}" + (", doubled past the top by a method still within the "
                 "budget there," if climbed else "") + " and halvings where "
                 "the budget binds; BiPO and CAA: the claims' own answers" if ladder and resampled
                 else "stage 1's questions and multipliers")  # runs from before the ladder: stage 1's -2..+2
    broken = "its answers (+ side: the ladder goes up)" if ladder else "each direction's answers"
    theirs = [r["budget_resampled"]["read_at"][0] for r in rows if r.get("budget_resampled")]
    shared = theirs and all(t == theirs[0] for t in theirs)  # the same draws in every row: BiPO's reads once, in its row

    def reads(r: dict) -> str:
        if r["method"] == r["reference"]:
            return read_at(theirs[0]) if shared else "-"
        if not r.get("budget_resampled"):
            return "-"
        it = read_at(r["budget_resampled"]["read_at"][1])
        return it if shared else f"BiPO {read_at(r['budget_resampled']['read_at'][0])}; it {it}"

    return [
        f"At equal fluency: each method at the largest + multiplier whose greedy answers ({questions}) stay "
        f"within {rows[0]['budget_perplexity']:.2f} perplexity under the unsteered model (1.5x the "
        f"unsteered answers'), its held-out margin's shift from unsteered there, BiPO's minus it"
        f"{'' if resampled else ' (paired by pair)'}, and the multipliers where {broken} stop being language. "
        + (f"Where the budget binds is measured on {resampled['questions']} answers, so BiPO's-minus-it interval "
           f"also draws which of them were answered ({resampled['resamples']} resamples, with the pairs) and reads "
           "both where the budget binds on those (how often, at which multiplier: *read at*"
           + ("; BiPO's in its own row, the same draws for every method" if shared else "")
           + "); *held*: the interval with both held at the multipliers shown." if resampled else
           "The multipliers are chosen on the same answers.")
        + (" *Top*: still within the budget at the largest multiplier that method answered at, so its shift is "
           "a lower bound" + ("." if ladder else " (the claims table's equal-fluency row reads BiPO and CAA further up).")
           if any(r["multiplier_at_budget"] == tops.get(r["method"]) for r in rows) else ""), "",
        *_table(["method", "multiplier", "shift", "BiPO - it, equal fluency", *(["read at"] if resampled else []),
                 "collapses at"],
                [[METHOD_NAMES[r["method"]], chosen(r["multiplier_at_budget"], r["method"]),
                  "-" if r["shift"] is None else _ranged(r["shift"], r["shift_ci"]), gap(r),
                  *([reads(r)] if resampled else []), collapse(r)]
                 for r in rows], text_columns=1), "",
    ]


def behaviours_table(found: dict | None) -> list[str]:
    """The every-behaviour section of ``figures/README.md`` (notebook 02 renders it too), from the
    behaviours stage; nothing for a run without that stage."""
    if not found:
        return []
    m = found["multiplier"]
    return [
        "## `behaviours.png`: every behaviour",
        f"BiPO (stage 1's budget, {found['seeds']} seeds) and CAA at layer {found['layer']} on each behaviour set of "
        f"the data directory ({found['data_root'] or 'not found: power-seeking only'}), the first "
        f"{found['rows'][0]['train_pairs']} training pairs and up to {found['rows'][0]['test_pairs']} held-out pairs "
        "of each, one pair per question (sets without a held-out file split 75/25 by question, seed 0); the "
        "power-seeking row is the claims "
        f"stage's. *Up* and *down*: the held-out margin's shift from unsteered at +{m:g} and -{m:g} (both above 0: "
        f"steers both ways); BiPO - CAA: margin ranges at +/-{m:g}, CAA at its own scale and at each BiPO seed's "
        "norm. 95% intervals over held-out pairs and seeds.", "",
        *_table(["behaviour", "pairs", "up", "down", "both ways", "BiPO - CAA, own scale", "BiPO - CAA, equal norm",
                 "equal norm", "cos", "norm BiPO / CAA"],
                [[r["behaviour"], f"{r['train_pairs']} / {r['test_pairs']}",
                  _interval({"value": r["both_ways"]["up"], "ci": r["both_ways"]["up_ci"]}),
                  _interval({"value": r["both_ways"]["down"], "ci": r["both_ways"]["down_ci"]}),
                  r["both_ways"]["verdict"], _interval(r["beats_caa_own_scale"]), _interval(r["beats_caa_equal_norm"]),
                  r["beats_caa_equal_norm"]["verdict"], f"{r['cosine']:+.2f}",
                  f"{sum(r['norms']['bipo']) / len(r['norms']['bipo']):.2f} / {r['norms']['caa']:.2f}"]
                 for r in found["rows"]], text_columns=2), "",
    ]


def _interval(found: dict | None, digits: int = 2, signed: bool = True) -> str:
    """``+0.31 [+0.12, +0.50]`` for a claim's value and 95% interval."""
    if not found or found.get("value") is None:
        return "-"
    return _ranged(found["value"], found.get("ci"), digits, signed, missing=" (no interval)")


def _worst(*verdicts: str) -> str:
    """One verdict for a claim made of parts: every part must hold."""
    if claim.NOT_REPRODUCED in verdicts:
        return claim.NOT_REPRODUCED
    return claim.REPRODUCED if all(v == claim.REPRODUCED for v in verdicts) else claim.INCONCLUSIVE


def _fluent_multipliers(found: dict) -> str:
    """``+2, +1, +2 (seeds 0-2), CAA +2``: the multiplier each vector is read at (runs before seeds
    were read at equal fluency name one BiPO multiplier)."""
    chosen = found["multipliers"]
    ours, theirs = chosen.get("ours", [chosen.get("BiPO")]), chosen.get("theirs", chosen.get("CAA"))
    seeds = f" (seeds 0-{len(ours) - 1})" if len(ours) > 1 else ""
    return f"{', '.join(f'{x:+g}' for x in ours)}{seeds}, CAA {theirs:+g}"


def _budget_edges(found: dict) -> str:
    """``; over the budget from +10, +9.5, +10.5 and CAA +3``: each vector's first multiplier evaluated
    beyond the budget (runs from before the brackets were kept: nothing)."""
    brackets = found.get("brackets")
    if not brackets:
        return ""
    edge = lambda b: "none evaluated" if b[1] is None else f"{b[1]:+g}"  # noqa: E731
    return f"; over the budget from {', '.join(edge(b) for b in brackets['ours'])} and CAA {edge(brackets['theirs'])}"


def _budget_noise(found: dict) -> str:
    """`` (the interval also draws which of the N questions were answered, ...)``: where the budget
    binds resampled with the pairs and seeds (runs from before it was: nothing)."""
    resampled = found.get("budget_resampled")
    if not resampled:
        return ""
    read = [[float(m) for m in counts] for counts in resampled["read_at"]]  # BiPO's seeds, then CAA
    span = lambda ms: f"at {min(ms):+g}" if min(ms) == max(ms) else f"between {min(ms):+g} and {max(ms):+g}"  # noqa: E731
    return (f" (the interval also draws which of the {resampled['questions']} questions were answered, and so where "
            f"the budget binds: BiPO read {span([m for ms in read[:-1] for m in ms])}, CAA {span(read[-1])} over "
            f"{resampled['resamples']} resamples; each held at its multiplier: "
            f"{_ranged(found['value'], found.get('ci_at_fixed_budget'), 2, True)})")


def _edge_comparison(found: dict) -> str:
    """The verdict checked at the far edge of the bracket (see ``claims.beats_at_equal_fluency``)."""
    edge = found.get("at_bracket_edge")
    if not edge:
        return ""
    if "theirs" in edge:
        return f"; against CAA at {edge['theirs']:+g}, beyond its budget: {_interval(edge)}"
    return f"; BiPO at its first multipliers beyond the budget: {_interval(edge)}"


def _family_claim(transfer: dict) -> dict:
    """Across families without the family stage only point values exist (the maps are fitted once, no
    interval). Read from the transfer stage as the README is written, so that no stage depends on it."""
    rows = [r for r in transfer["rows"] if r["map"] != "direct"]
    return {"rows": [{k: r[k] for k in ("source", "target", "map", "retained", "r2_test")} for r in rows],
            "verdict": claim.INCONCLUSIVE if rows else None,
            "why": "point values from maps fitted once, one seed: no interval"}


def claims_table(stage: dict | None, transfer: dict | None = None, family: dict | None = None,
                 siblings: dict | None = None) -> list[str]:
    """The paper's claims beside ours, with intervals and a verdict each (empty for runs without
    the claims stage). ``family``: the family stage, whose seeded rows make the cross-family row;
    without it (runs before that stage) the row shows the claims stage's point values, with the
    transfer stage's retained efficacy at the native norm where its rows hold it. ``siblings``: the
    siblings stage, whose native seeds make the fine-tuned-sibling row (else the claims stage's, one
    native seed)."""
    if not stage:
        return []
    c, m = stage["claims"], stage["multiplier"]
    both, own, norm, fluent, layer, comp = (c[k] for k in ("both_ways", "beats_caa_own_scale", "beats_caa_equal_norm",
                                                          "beats_caa_equal_fluency", "best_layer", "composition"))
    size = lambda f: f"{f['seeds']} seed{'s' if f['seeds'] > 1 else ''} x {f['pairs']} pairs"  # noqa: E731
    verdict = lambda f: f"**{f['verdict']}** ({f['why']})"  # noqa: E731
    rows = [
        ["BiPO steers both ways", "+ raises and - lowers the behaviour (Fig. 1, power- and wealth-seeking personas, "
         "Llama-2-7b-chat, multipliers -2..2)",
         f"up {_interval({'value': both['up'], 'ci': both['up_ci']})}, down "
         f"{_interval({'value': both['down'], 'ci': both['down_ci']})} nats at +/-{m:g}; {size(both)}", verdict(both)],
        ["BiPO beats CAA, each at its own scale", "BiPO steers further than CAA at the same multipliers (Fig. 1)",
         f"BiPO range - CAA range {_interval(own)} nats; {size(own)}", verdict(own)],
        ["BiPO beats CAA at equal norm", "(not tested in the paper: the stricter form of the same claim)",
         f"CAA rescaled to each BiPO seed's norm: {_interval(norm)} nats; {size(norm)}", verdict(norm)],
        ["BiPO beats CAA at equal fluency", "(not tested in the paper: the users' form, same damage)",
         (f"margin shift at the largest multiplier within {fluent['budget_perplexity']:.2f} perplexity (BiPO "
          f"{_fluent_multipliers(fluent)}{_budget_edges(fluent)}): BiPO - CAA {_interval(fluent)} nats"
          f"{_budget_noise(fluent)}{_edge_comparison(fluent)}; {size(fluent)}")
         if fluent.get("budget_perplexity") else "-", verdict(fluent)],
        ["A middle layer steers best", "the authors steer at layer 15 of Llama-2-7b-chat's 32 (13 of Mistral-7B's 32)",
         f"best BiPO layer {layer['value']}; not told apart from it: {', '.join(map(str, layer['tied']))} "
         f"(paired intervals of the range difference); {size(layer)}", verdict(layer)],
    ]
    way = {(r["source"], r["target"]): r["retained"] for r in (siblings or {}).get("rows", [])}
    if (DEFAULT_MODEL, FINETUNED) in way:
        there, back, caa = way[(DEFAULT_MODEL, FINETUNED)], way[(FINETUNED, DEFAULT_MODEL)], c["transfer_sibling"]["caa"]
        rows.append(["Transfer to a fine-tuned sibling", "a Llama-2-7b-chat vector steers Vicuna-7b and other "
                     "fine-tunes of the same base (transferability section)",
                     f"retained BiPO {_interval(there, signed=False)} ({size(there)}, seed k against the sibling's "
                     f"native seed k), back {_interval(back, signed=False)}; CAA {_interval(caa, signed=False)}; "
                     f"{FINETUNED}; transfers if > {there['threshold']:g}", verdict(there)])
    elif "transfer_sibling" in c:
        sib = c["transfer_sibling"]
        rows.append(["Transfer to a fine-tuned sibling", "a Llama-2-7b-chat vector steers Vicuna-7b and other "
                     "fine-tunes of the same base (transferability section)",
                     f"retained BiPO {_interval(sib['bipo'], signed=False)} ({size(sib['bipo'])}, one native seed), CAA "
                     f"{_interval(sib['caa'], signed=False)}; {FINETUNED}; transfers if > {sib['bipo']['threshold']:g}",
                     verdict(sib["bipo"])])
    fam = _family_claim(transfer)
    at_native = {(r["source"], r["target"], r["map"]): r["retained_at_native_norm"]
                 for r in (transfer or {}).get("rows", []) if "retained_at_native_norm" in r}

    def family_row(r: dict) -> str:
        key = (r["source"], r["target"], r["map"])
        equal_norm = f" ({at_native[key]:.2f} at the native norm)" if key in at_native else ""
        return f"{r['source']} -> {r['target']} ({r['map']}) {r['retained']:.2f}{equal_norm}"

    if family:
        rows.append(["Transfer across families", "(not in the paper: its transfers keep Llama-2's architecture)",
                     "retained at the native norm " + ", ".join(
                         f"{r['source']} -> {r['target']} ({r['map']}) {_interval(r['at_native_norm'], signed=False)}"
                         for r in family["rows"])
                     + f" ({family['seeds']} seeds x {family['test_pairs']} pairs a side, one map fit per seed on a "
                       f"bootstrap resample of {family['fit_texts']} texts); as moved, unrescaled: "
                     + ", ".join(f"{_interval(r['retained'], signed=False)}" for r in family["rows"])
                     + f"; transfers if > {claim.TRANSFER_KEEPS:g} both ways through one map",
                     f"**{family['verdict']}** ({family['why']})"])
    else:
        rows.append(["Transfer across families", "(not in the paper: its transfers keep Llama-2's architecture)",
                     "retained " + ", ".join(map(family_row, fam["rows"])), f"**{fam['verdict']}** ({fam['why']})"])
    rows.append(["Composition", "two behaviours' vectors added together each keep their effect (vector synergy "
                 "section)", "retained beside the other at +1: power-seeking "
                 f"{_interval(comp['power_seeking'], signed=False)} ({size(comp['power_seeking'])}), optimism "
                 f"{_interval(comp['optimism'], signed=False)} ({size(comp['optimism'])}); holds if > "
                 f"{comp['power_seeking']['threshold']:g}",
                 f"**{_worst(comp['power_seeking']['verdict'], comp['optimism']['verdict'])}** (power-seeking: "
                 f"{comp['power_seeking']['why']}; optimism: {comp['optimism']['why']})"])
    return [
        "## Claims", "",
        f"Each claim as one number with its 95% interval (crossed bootstrap over held-out pairs and BiPO training "
        f"seeds 0-{stage['seeds'] - 1}; BiPO and CAA at layer {STEERING_LAYER} unless named). Verdict: *reproduced* "
        "where the interval lies wholly on the paper's side, *not reproduced* where wholly on the other, else "
        "*inconclusive*; one seed is never more than inconclusive. The seeds' norms: "
        + ", ".join(f"{n:.2f}" for n in stage["seed_norms"]) + "; cosine to seed 0: "
        + (", ".join(f"{x:.3f}" for x in stage["seed_cosines"]) or "-") + ".", "",
        *_table(["claim", "paper", "ours", "verdict"], rows, text_columns=4), "",
    ]


def siblings_table(found: dict | None) -> list[str]:
    """The siblings stage's rows: each sibling and way, with intervals over pairs and both sides' seeds."""
    if not found:
        return []
    return [
        f"Within the family with native seeds (the `siblings` stage): BiPO trained on each sibling with the claims' "
        f"{found['seeds']} seeds, pairs and budget at layer {found['layer']}; seed k applied as it is (same d_model) "
        f"and compared with the target's native seed k on {found['test_pairs']} held-out pairs, at "
        f"+/-{found['multiplier']:g}; 95% intervals resample pairs and seeds. Cosine to native: mean over seeds."
        + (f" `{DEPLOYED}` is llama.cpp's Q4_0 of the default model, a scale per 32 weights (the GGUF "
           "`llama-quantize --allow-requantize` writes, to the bit; token embedding Q8_0), `@int4` a scale per "
           "576-weight row." if any(r["target"] == DEPLOYED for r in found["rows"]) else ""), "",
        *_table(["source", "target", "native norms", "cos to native", "retained"],
                [[r["source"], r["target"], ", ".join(f"{n:.2f}" for n in r["native_norms"]),
                  f"{fmean(r['cosines_to_native']):+.3f}", f"**{_interval(r['retained'], signed=False)}** "
                  f"({r['retained']['verdict']})"] for r in found["rows"]], text_columns=2), "",
    ]


def _ridges(row: dict) -> list[float]:
    """lstsq's ridge per map fit of a transfer or family row: none for procrustes, direct maps, and
    runs before 2026-11-29 (which fixed it at 0.01)."""
    return [r for r in row.get("ridges", [row.get("ridge")]) if r is not None]


def _map_cell(row: dict) -> str:
    ridges = _ridges(row)
    return f"{row['map']} (ridge {'/'.join(f'{r:g}' for r in ridges)})" if ridges else row["map"]


def _ridge_text(rows: list[dict], shown: str) -> str:
    """How lstsq's ridge was set: chosen per fit (``shown`` says where the table gives it), or fixed."""
    if any(_ridges(row) for row in rows):
        return f"its ridge chosen by 5-fold cross-validation over whole texts among the fitting ones, {shown}"
    return "ridge 0.01"


def family_table(found: dict | None) -> list[str]:
    """The family stage's rows: each way and map, with intervals over pairs, seeds and map fits."""
    if not found:
        return []
    return [
        f"Across families with intervals (the `family` stage): {found['seeds']} BiPO seeds a side (SmolLM2's are the "
        f"claims' seeds at layer {found['layers'][DEFAULT_MODEL]}, Gemma's trained at layer "
        f"{found['layers'][OTHER_MODEL]} on the same pairs and budget), seed k moved through a map fitted on bootstrap "
        f"resample k of the {found['fit_texts']} texts and compared with the target's native seed k, on "
        f"{found['test_pairs']} held-out pairs; 95% intervals resample pairs and seeds, and so the map fits. R^2 on the "
        f"texts each resample left out, mean over seeds; lstsq ({_ridge_text(found['rows'], 'per seed')}).", "",
        *_table(["source", "target", "map", "R^2 (left out)", "norms moved / native", "retained", "at native norm"],
                [[r["source"], r["target"], _map_cell(r), f"{fmean(r['r2_left_out']):.3f}",
                  f"{fmean(r['moved_norms']):.1f} / {fmean(r['native_norms']):.1f}",
                  _interval(r["retained"], signed=False), f"**{_interval(r['at_native_norm'], signed=False)}**"]
                 for r in found["rows"]], text_columns=3), "",
        f"Verdict, read at the native norm (a vector transfers if it keeps more than {claim.TRANSFER_KEEPS:g} of a "
        f"native vector's range both ways through one map): **{found['verdict']}** ({found['why']}).", "",
    ]


def render_readme(results: dict) -> str:
    """``figures/README.md``: per figure, the command, the data and the key numbers."""
    s, lay, sim, tr, co = (results[k] for k in ("steering", "layers", "similarity", "transfer", "composition"))
    mixed = len({r.get("method", "bipo") for r in tr["rows"]}) > 1  # runs before CAA transferred too: BiPO only
    at_native = any("retained_at_native_norm" in r for r in tr["rows"])  # runs before it was measured: none
    b, c = results["budget"], lay["config"]
    spearman = {name: s["summary"][name]["logprob_margin"]["spearman"] for name in ("BiPO", "CAA")}
    lines = [
        "# Figures", "",
        f"Every file here was written by `{results['command']}` ({results['compute_seconds'] / 60:.0f} min of "
        f"computing, {b['name']} budget) on the embedded models: {describe(results['record'])}. Power-seeking data: "
        f"{results['data']}. The numbers below are read from `results.json`, which holds every measured value "
        "and the run's record (command, commit, versions, device, data hashes).", "",
        *(["Stages read from an earlier run (`--resume`): " + ", ".join(
            f"{k} (commit {(v.get('commit') or 'unknown')[:10]})" for k, v in results["record"]["resumed_stages"].items())
           + ".", ""] if results["record"].get("resumed_stages") else []),
        *_summary(results), "",
        *claims_table(results.get("claims"), results.get("transfer"), results.get("family"), results.get("siblings")),
        "Efficacy is the log-probability margin on held-out pairs: mean over pairs of log p(matching) - "
        "log p(not matching), summed over response tokens, in nats. A *margin range* is the mean margin "
        f"at multiplier +{b['multiplier']:g} minus that at -{b['multiplier']:g}.", "",
        "## `steering_curve.png`, `training_curve.png`: BiPO vs CAA",
        f"BiPO ({s['train_pairs']} pairs, {b['epochs']} epochs, lr {b['lr']}) and CAA on the same pairs at layer "
        f"{s['layer']}; {s['test_pairs']} held-out pairs; {b['generations']} held-out questions answered at each "
        f"multiplier and scored by the embedding judge (leave-one-out validation accuracy "
        f"{s['judge_validation_accuracy']:.2f}).", "",
        *_table(["vector", "multiplier", "margin", "preference accuracy", "judge"],
                [[r["vector"], f"{r['multiplier']:+g}", _signed(r["logprob_margin"]), f"{r['preference_accuracy']:.2f}",
                  _signed(r["judge_score"], 3)] for r in s["results"]]), "",
        f"Spearman (margin vs multiplier): BiPO {spearman['BiPO']:+.2f}, CAA {spearman['CAA']:+.2f}. "
        f"Cosine(BiPO, CAA) at layer {s['layer']}: **{s['cosine']:.3f}**; norms BiPO {s['norms']['bipo']:.2f}, "
        f"CAA {s['norms']['caa']:.2f}. Training: loss {s['history'][0]['loss']:.3f} -> {s['history'][-1]['loss']:.3f}, "
        f"held-out reward accuracy (DPO's implicit-reward accuracy, not the preference accuracy above) "
        f"{s['history'][-1].get('reward_accuracy', float('nan')):.2f} after the last epoch.",
        "", "Greedy answers to the first held-out questions (all of them are in `results.json`):", "",
        *[f"- *{g['question']}* {g['vector']} {g['multiplier']:+g}: {g['answer']}" for g in sorted(
            (g for g in s["generations"] if g["multiplier"] in (-2.0, 2.0)), key=lambda g: g["question"])
          if g["question"] in {x["question"] for x in s["generations"][:2]}], "",
        "## `layer_sweep.png`: choosing a layer",
        f"BiPO and CAA trained at each layer on power-seeking, {c['max_train_pairs']} pairs, BiPO {c['epochs']} "
        f"epochs at lr {c['lr']}; margins on {c['max_test_pairs']} held-out pairs at +/-{c['multiplier']:g}"
        + (f", judge on {c['generations']} answers of {c['max_new_tokens']} tokens" if c["generations"] else "")
        + ". Circles mark each method's best layer. Left: at each vector's own scale; middle: per unit of norm "
        "(the direction's quality)." + (f" BiPO trained with {c['seeds']} seeds per layer: its range is the mean, "
                                         "with the 95% interval over held-out pairs and seeds." if c.get("seeds", 1) > 1
                                         else ""), "",
        *_table(["layer", "BiPO range", "CAA range", "BiPO / norm", "CAA / norm", "BiPO judge", "CAA judge", "cosine"],
                [[str(r["layer"]), _ranged(r["bipo_margin_range"], r.get("bipo_margin_range_ci")), _signed(r["caa_margin_range"]),
                  _signed(r["bipo_range_per_norm"], 3), _signed(r["caa_range_per_norm"], 3),
                  _signed(r["bipo_judge_range"], 3), _signed(r["caa_judge_range"], 3), _signed(r["cosine"], 3)]
                 for r in lay["rows"]], text_columns=0), "",
        f"Best layer by margin range: **BiPO {lay['recommended']['bipo']}, CAA {lay['recommended']['caa']}**; per "
        f"unit norm: BiPO {lay['recommended_per_norm']['bipo']}, CAA {lay['recommended_per_norm']['caa']}. Other "
        "behaviours (built-in sets): " + "; ".join(f"{k} BiPO {v['bipo']}, CAA {v['caa']}"
                                                   for k, v in sim["best_layers_other_behaviours"].items()) + ".", "",
        "## `similarity_heatmap.png`: how alike BiPO and CAA are",
        "Cosine(BiPO, CAA) per behaviour and layer (the sweeps' vectors; optimism and formality are the built-in "
        "sets, 75/25 split), and the norms. " + "; ".join(
            f"{beh}: " + ", ".join(f"L{r['layer']} {r['cosine']:+.2f}" for r in sim["rows"] if r["behaviour"] == beh)
            for beh in dict.fromkeys(r["behaviour"] for r in sim["rows"])) + ".", "",
        f"Logit lens of the layer-{s['layer']} power-seeking vectors (final norm + unembedding, centred logits):", "",
        *_table(["vector", "promotes", "suppresses"],
                [[m, *(", ".join(f"`{t!r}`" for t, _ in lens[side][:8]) for side in ("promoted", "suppressed"))]
                 for m, lens in sim["logit_lens"].items()], text_columns=3), "",
        "## `transfer.png`: cross-model transfer",
        f"The layer-{s['layer']} {'vectors' if mixed else 'BiPO vector'} applied to other models, and back; retained "
        "efficacy = the target's margin range with the transferred vector / with a "
        f"{'vector of the same method' if mixed else 'BiPO vector'} trained natively on the target (same pairs "
        f"and budget). " + _finetuned_text(tr) + f"`{SIBLING}`: every linear weight rounded to 4 bits per output row "
        f"(same d_model: direct). Gemma-3-270m (d_model 640, layer {tr['layers'][OTHER_MODEL]} = same relative depth): "
        f"linear maps fitted on {tr['fit_texts']} texts (2 rows each) read by both models: ridge least squares "
        f"(`lstsq`, {_ridge_text(tr['rows'], 'in brackets')}) and scaled orthogonal Procrustes "
        "(`procrustes`); R^2 on held-out texts."
        + (" *At native norm*: the transferred vector rescaled to the native vector's norm (a map between residual "
           "spaces of different scales can change the norm tenfold, as it does here; this asks whether the direction carried over), "
           "with its 95% interval over held-out pairs." if at_native else ""), "",
        *_table([*(["vector"] if mixed else []), "source", "target", "map", "R^2 (held-out)", "transferred range",
                 "native range", "retained", *(["at native norm"] if at_native else []), "cos to native"],
                [[*([METHOD_NAMES[r["method"]]] if mixed else []), r["source"], r["target"], _map_cell(r),
                  "-" if r["r2_test"] is None else f"{r['r2_test']:.3f}",
                  _signed(r["transferred_range"]), _signed(r["native_range"]), f"**{r['retained']:.2f}**",
                  *([_retained_at_native(r)] if at_native else []),
                  _signed(r["cosine_to_native"], 3)] for r in tr["rows"]], text_columns=4 if mixed else 3), "",
    ]
    lines += siblings_table(results.get("siblings"))
    lines += family_table(results.get("family"))
    lines += baselines_table(results.get("baselines"))
    lines += behaviours_table(results.get("behaviours"))
    same, across = co["same_layer"], co["different_layers"]
    lines += [
        "## `composition.png`: two vectors at once",
        f"Power-seeking (stage-1 BiPO, layer {same['layers']['power_seeking']}) and optimism (BiPO from the sweep) "
        "added with weights over a grid; each panel is one behaviour's mean held-out margin, as the change from the "
        f"unsteered model. Retained = the behaviour's range with the other vector at +{same['multiplier']:g} / its "
        "range alone; crosstalk = how far the other vector alone moves it, relative to its own range.", "",
        *_table(["layers", "behaviour", "range alone", "range with other", "retained", "crosstalk"],
                [[label, name, _signed(m["range_alone"]), _signed(m["range_with_others"]), f"**{m['retained']:.2f}**",
                  _signed(m["crosstalk"])]
                 for label, part in ((f"both {same['layers']['power_seeking']}", same),
                                     (f"{across['layers']['power_seeking']} + {across['layers']['optimism']}", across))
                 for name, m in part["behaviours"].items()], text_columns=2), "",
        "Cosine between the two vectors: " + ", ".join(
            f"{v:+.3f} ({label})" for label, part in (("same layer", same), ("different layers", across))
            for v in part["cosines"].values()) + ".", "",
        "Stage times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in results["seconds"].items()) + ".", "",
    ]
    return "\n".join(lines)
