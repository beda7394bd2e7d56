"""``bipo-lens figures``: every figure in ``figures/`` and its README, from scratch.

Ten stages, each a call to the analysis API whose results are kept as data (``results.json``)
and drawn by ``bipo_lens.plots``:

1. steering: BiPO and CAA on power-seeking at layer 15, evaluated at multipliers -2..2;
2. layers: both methods trained at each layer on a fixed budget (resumable sweep);
3. similarity: the same sweep for more behaviours, the BiPO-CAA cosine per behaviour and layer,
   and a logit-lens readout of the stage-1 vectors;
4. transfer: the stage-1 vectors on a fine-tuned sibling of the model (BiPO and CAA, as the paper
   goes from Llama-2-chat to Vicuna), the BiPO vector on a 4-bit sibling, and on Gemma-3-270m
   through learned linear maps (and back);
5. composition: power-seeking and optimism vectors added together over a grid of weights;
6. claims: the paper's claims as numbers with 95% intervals over held-out pairs and training
   seeds (BiPO retrained with ``seeds`` seeds at layer 15) and a verdict each
   (:mod:`bipo_lens.analysis.claims`);
7. baselines: CAA at the answer token, PCA, the activation-margin variant and RePS beside BiPO,
   at equal fluency read on the claims' ladder of multipliers (BiPO and CAA on the claims' answers);
8. behaviours: the claims' both-ways and BiPO-vs-CAA tests on every behaviour set in the data
   directory (:func:`bipo_lens.pairs.shared_behaviour_sets`), resumable per behaviour;
9. family: the cross-family claim with an interval: the claims' BiPO seeds moved to Gemma-3-270m
   and Gemma-native seeds moved back, through maps refitted on a bootstrap resample per seed.
10. siblings: the same-family claim with native seeds: BiPO trained with the claims' seeds on the
   fine-tuned sibling, llama.cpp's Q4_0 and the per-row 4-bit one, seed k moved each way against the
   target's native seed k.

Power-seeking pairs come from ``<data-dir>/bipo/power-seeking/{train,test}.csv`` where that exists,
else from the built-in set; optimism and formality are built-in sets. The README's tables and text are
:mod:`bipo_lens.figure_readme`'s, read from ``results.json`` alone.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from bipo_lens import plots
from bipo_lens.plots import METHOD_NAMES
from bipo_lens.analysis import (
    BehaviourConfig,
    SweepConfig,
    compose,
    corresponding_layer,
    fit_linear_map,
    logit_lens,
    paired_activations,
    recommend_layer,
    retained_efficacy,
    similarity_rows,
    study_behaviour,
    sweep_layers,
    transfer_vector,
)
from bipo_lens.analysis import claims as claim
from bipo_lens.analysis.baselines import compare_at_equal_fluency, compare_methods
from bipo_lens.analysis.layers import load_sweep_vectors
from bipo_lens.analysis.similarity import cosine
from bipo_lens.analysis.transfer import METHODS as MAP_METHODS
from bipo_lens.analysis.transfer import pair_texts
from bipo_lens.atomic import atomic_write
from bipo_lens.errors import BipoLensError
from bipo_lens.evaluation import EmbeddingJudge, MarginScorer, evaluate
from bipo_lens.evaluation.fluency import bisect_budget
from bipo_lens.figure_readme import render_readme
from bipo_lens.figure_work import (DEPLOYED, FINETUNED, OTHER_MODEL, SIBLING, STAGE_NAMES, STEERING_LAYER, WORK_MARK,
                                   check_request, power_seeking_files, read_stage)
from bipo_lens.models import DEFAULT_MODEL, info, load_model, sibling_record
from bipo_lens.pairs import load_pairs, one_per_question, shared_behaviour_sets, shared_data_dir, split_pairs
from bipo_lens.records import finish_record, git_state, start_record
from bipo_lens.training import train_bipo, train_caa, train_pca, train_reps
from bipo_lens.vectors import SteeringVector



@dataclass(frozen=True)
class Budget:
    """How much of everything a run spends; ``QUICK`` is for tests and notebooks."""

    name: str
    train_pairs: int  # BiPO/CAA training pairs (stage 1 and the transfer stage's native vectors)
    epochs: int
    lr: float
    test_pairs: int  # held-out pairs for margins
    generations: int  # held-out questions answered and judged in stage 1
    max_new_tokens: int
    layers: tuple[int, ...]  # the power-seeking sweep
    sweep: SweepConfig
    behaviours: tuple[str, ...]  # built-in sets swept besides power-seeking, at ``behaviour_layers``
    behaviour_layers: tuple[int, ...]  # must include STEERING_LAYER (composition uses it)
    fit_pairs: int  # power-seeking pairs whose texts fit the cross-model maps (besides built-ins)
    composition_pairs: int
    fit_builtin_pairs: int | None = None  # pairs of each built-in set fitting the maps too (None: all)
    finetuned: bool = True  # transfer to the fine-tuned sibling (its first build fine-tunes for ~20 min on 2 cores)
    weights: tuple[float, ...] = (-2.0, -1.0, 0.0, 1.0, 2.0)
    multiplier: float = 1.0  # efficacy = margin at +multiplier minus margin at -multiplier
    seeds: int = 3  # BiPO training seeds behind the claims' intervals (seed 0 is stage 1's vector)
    reps_epochs: int = 18  # the RePS baseline's epochs (the authors' number; ~2x a BiPO epoch each)
    behaviour_sets: int | None = None  # data-directory behaviour sets studied besides power-seeking (None: all)
    # The claims' equal-fluency ladder: + multipliers at which BiPO's seeds and CAA answer, far enough
    # that the perplexity budget binds (BiPO's answers stayed fluent at +8 in an earlier run).
    fluency_multipliers: tuple[float, ...] = (1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 16.0)
    fluency_bisections: int = 3  # then halve each vector's bracket where the budget binds this often
    fluency_ceiling: float = 256.0  # first, one still within the budget at the top climbs (x2) up to this
    # Questions each vector answers on that ladder (None: ``generations``): where the budget binds is
    # read on their perplexities, so more of them place it less loosely.
    fluency_questions: int | None = None

    @property
    def fluency_ladder(self) -> list[float]:
        """Unsteered, then the claims' + multipliers: where every vector read at equal fluency answers."""
        return [0.0, *self.fluency_multipliers]


FULL = Budget("full", train_pairs=64, epochs=8, lr=5e-3, test_pairs=48, generations=12, max_new_tokens=40,
              layers=(0, 3, 6, 9, 12, 15, 18, 21, 24, 27, 29),
              sweep=SweepConfig(epochs=3, max_train_pairs=32, max_test_pairs=32, generations=3, max_new_tokens=24),
              behaviours=("optimism", "formality"), behaviour_layers=(3, 9, 15, 21, 27), fit_pairs=256,
              composition_pairs=24, fluency_questions=24)
QUICK = Budget("quick", train_pairs=8, epochs=1, lr=5e-3, test_pairs=4, generations=1, max_new_tokens=8,
               layers=(15, 24), sweep=SweepConfig(epochs=1, max_train_pairs=4, max_test_pairs=4),
               behaviours=("optimism",), behaviour_layers=(15, 24), fit_pairs=8, composition_pairs=4,
               fit_builtin_pairs=8, weights=(-1.0, 0.0, 1.0), finetuned=False, seeds=2, reps_epochs=1,
               behaviour_sets=1, fluency_multipliers=(1.0, 4.0), fluency_bisections=1, fluency_ceiling=16.0)


@dataclass
class _Run:
    budget: Budget
    out: Path
    work: Path
    device: str
    data: str
    command: str
    data_root: Path | None = None  # the shared data directory, where found
    model: object = None
    ps_train: list = field(default_factory=list)
    ps_test: list = field(default_factory=list)
    results: dict = field(default_factory=dict)

    def log(self, message: str) -> None:
        print(f"== {message}", flush=True)

    def power_vectors(self) -> dict[str, SteeringVector]:
        """Stage 1's vectors, as saved in the work directory."""
        return {m: SteeringVector.load(self.work / f"power_seeking_{m}.safetensors") for m in ("bipo", "caa")}

    def sweep_dir(self, behaviour: str) -> Path:
        return self.work / f"sweep_{behaviour}"


def make_figures(out_dir: str | Path = "figures", quick: bool = False, data_dir: str | Path | None = None,
                 work_dir: str | Path = "runs/figures", device: str = "auto", resume: bool = False,
                 command: str | None = None, seeds: int | None = None, rerun: Sequence[str] = (),
                 overwrite: bool = False) -> dict:
    """Run every stage; write the PNGs, ``results.json`` and ``README.md`` into ``out_dir``.
    ``seeds`` overrides the budget's number of BiPO training seeds behind the claims. ``rerun`` names
    stages to compute again on ``resume`` (with the stages that read them), instead of reading their
    saved results; vectors they trained earlier in ``work_dir`` are still read, as on any resume.
    A ``work_dir`` that holds anything is continued (``resume``) or started over (``overwrite``, which
    deletes it only where it is an earlier run's: hours of vectors are not lost to a repeated command)."""
    started = time.time()
    code = git_state()  # before this run rewrites figures/ (tracked files): the code's state, not the outputs'
    rerun = check_request(work_dir, data_dir, resume=resume, overwrite=overwrite, rerun=rerun, seeds=seeds)
    budget = QUICK if quick else FULL
    if seeds is not None:
        budget = replace(budget, seeds=seeds)
    out, work = Path(out_dir), Path(work_dir)
    ps_train, ps_test, data, data_files, data_root = power_seeking_data(data_dir)
    judge = EmbeddingJudge()  # before anything is deleted or computed: a missing package stops here
    figures_before = (out / "results.json").is_file()  # an earlier run's output directory: its figures are ours to replace
    if not resume and work.exists():
        shutil.rmtree(work)
    out.mkdir(parents=True, exist_ok=True)
    work.mkdir(parents=True, exist_ok=True)
    if not resume:
        (work / WORK_MARK).touch()  # so that an interrupted run is known as one, before its first stage ends
    for stale in out.glob("*.png") if figures_before else ():
        stale.unlink()  # the directory holds exactly what this run draws (a directory of other PNGs keeps them)
    run = _Run(budget, out, work, device, data, command or "bipo-lens figures" + (" --quick" if quick else ""),
               data_root=data_root, ps_train=ps_train, ps_test=ps_test)
    run.log(f"{budget.name} budget; power-seeking data: {data}")
    if rerun:
        run.log(f"computed again (--rerun): {', '.join(rerun)}")
    run.model = load_model(DEFAULT_MODEL, device=device)
    behaviour_files = [f for pair in _behaviour_sets(run).values() for f in pair if f is not None]
    record = start_record(run.command, run.model, [*dict.fromkeys([*data_files, *behaviour_files]), "optimism", "formality"],
                          seeds={"split": 0, "training": list(range(budget.seeds))}, budget=budget.name)
    record["git"] = code
    run.results["seconds"] = {}
    resumed = {}
    for name, (compute, draw) in STAGES.items():
        path = work / f"stage_{name}.json"
        t = time.time()
        if resume and path.is_file() and name not in rerun:
            run.results[name] = read_stage(path)
            resumed[name] = run.results[name].get("git", {"commit": None})
            run.log(f"{name}: finished earlier, read from {path} (commit {resumed[name].get('commit')})")
        else:
            run.results[name] = compute(run, judge)
            run.results[name]["seconds"] = round(time.time() - t, 1)
            run.results[name]["git"] = record["git"]  # what computed this stage, for later --resume
            atomic_write(path, lambda tmp: Path(tmp).write_text(json.dumps(_jsonable(run.results[name]), indent=2)))
            run.log(f"{name} done in {time.time() - t:.0f} s")
        run.results["seconds"][name] = run.results[name]["seconds"]
        draw(run.results[name], run.out)
    run.results["budget"] = _jsonable(asdict(budget))
    run.results["wall_seconds"] = round(time.time() - started, 1)  # this invocation (less with --resume)
    run.results["compute_seconds"] = round(sum(run.results["seconds"].values()), 1)
    run.results["command"] = "bipo-lens figures" + (" --quick" if quick else "")
    run.results["invocation"] = run.command
    run.results["data"] = data
    run.results["record"] = {**finish_record(record), "resumed_stages": resumed}
    atomic_write(out / "results.json", lambda tmp: Path(tmp).write_text(json.dumps(run.results, indent=2)))
    (out / "README.md").write_text(render_readme(run.results))
    run.log(f"figures in {out} ({run.results['wall_seconds']:.0f} s)")
    return run.results


def redraw_figures(out_dir: str | Path = "figures") -> dict:
    """Draw every figure of the stages in ``out_dir/results.json`` and write its README again,
    computing nothing: for a changed plot or text, and the check that the committed README is
    exactly what the renderer makes of the committed results."""
    path = Path(out_dir) / "results.json"
    try:
        results = json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BipoLensError(f"cannot redraw: {path} is not a figures run's results ({error})") from None
    if not all(stage in results for stage in ("steering", "layers", "similarity", "transfer", "composition")):
        raise BipoLensError(f"cannot redraw: {path} lacks the first five stages of a figures run")
    for stale in Path(out_dir).glob("*.png"):
        stale.unlink()
    for name, (_, draw) in STAGES.items():
        if name in results:
            draw(results[name], Path(out_dir))
    (Path(out_dir) / "README.md").write_text(render_readme(results))
    return results


def _jsonable(value):
    return json.loads(json.dumps(value, default=str))


def _steering(run: _Run, judge) -> dict:
    b, model = run.budget, run.model
    train, test = run.ps_train[: b.train_pairs], run.ps_test[: b.test_pairs]
    run.log(f"steering: BiPO and CAA on {len(train)} pairs at layer {STEERING_LAYER}")
    bipo = train_bipo(model, train, STEERING_LAYER, test_pairs=test, epochs=b.epochs, lr=b.lr, progress=False)
    caa = train_caa(model, train, STEERING_LAYER)
    for name, vector in (("bipo", bipo), ("caa", caa)):
        vector.save(run.work / f"power_seeking_{name}.safetensors", overwrite=True)
    report = evaluate(model, {"BiPO": bipo, "CAA": caa}, test, [-2.0, -1.0, 0.0, 1.0, 2.0], judge=judge,
                      max_questions=b.test_pairs, max_generations=b.generations, max_new_tokens=b.max_new_tokens,
                      progress=False)
    return {
        "layer": STEERING_LAYER, "train_pairs": len(train), "test_pairs": len(test),
        "cosine": cosine(bipo, caa), "norms": {"bipo": bipo.norm, "caa": caa.norm},
        "history": bipo.history, "results": report["results"], "summary": report["summary"],
        "judge_validation_accuracy": judge.validation_accuracy(test),
        "generations": report["generations"],
    }


def _draw_steering(found: dict, out: Path) -> None:
    plots.steering_curve(found["results"], out / "steering_curve.png",
                         title=f"power-seeking, layer {found['layer']}, {found['test_pairs']} held-out pairs")
    plots.training_curve({"BiPO": found["history"]}, out / "training_curve.png")


def _layers(run: _Run, judge) -> dict:
    b = run.budget
    run.log(f"layers: sweep over {list(b.layers)}")
    # BiPO trained with the claims' seeds at every layer: the best-layer claim reads these grids
    results = sweep_layers(run.model, run.ps_train, run.ps_test, list(b.layers), run.sweep_dir("power_seeking"),
                           replace(b.sweep, seeds=b.seeds), judge=judge, progress=False)
    return {
        "recommended": {m: recommend_layer(results, m) for m in ("bipo", "caa")},
        "recommended_per_norm": {m: recommend_layer(results, m, "range_per_norm") for m in ("bipo", "caa")},
        "sweep": [{k: v for k, v in r.items() if k != "key"} for r in results],
        "rows": [{"layer": r["layer"], "cosine": r["cosine"],
                  **{f"{m}_{k}": r[m][k] for m in ("bipo", "caa")
                     for k in ("margin_range", "margin_range_ci", "range_per_norm", "judge_range", "norm",
                               "train_seconds") if k in r[m]}}
                 for r in results],
        "config": asdict(replace(b.sweep, seeds=b.seeds)),
    }


def _draw_layers(found: dict, out: Path) -> None:
    c = found["config"]
    plots.layer_sweep(found["sweep"], out / "layer_sweep.png",
                      title=f"power-seeking: efficacy by layer ({c['max_train_pairs']} pairs, {c['epochs']} epochs; "
                            f"+/-{c['multiplier']:g})")


def _similarity(run: _Run, judge) -> dict:
    b = run.budget
    by_behaviour = {"power_seeking": load_sweep_vectors(run.sweep_dir("power_seeking"), list(b.layers))}
    best = {}
    for behaviour in b.behaviours:
        train, test = split_pairs(load_pairs(behaviour), 0.25, seed=0)
        run.log(f"similarity: sweep {behaviour} over {list(b.behaviour_layers)} ({len(train)} train / {len(test)} "
                f"held-out pairs)")
        results = sweep_layers(run.model, train, test, list(b.behaviour_layers), run.sweep_dir(behaviour),
                               replace(b.sweep, generations=0), progress=False)
        by_behaviour[behaviour] = load_sweep_vectors(run.sweep_dir(behaviour), list(b.behaviour_layers))
        best[behaviour] = {m: recommend_layer(results, m) for m in ("bipo", "caa")}
    return {"rows": similarity_rows(by_behaviour), "best_layers_other_behaviours": best,
            "logit_lens": {m: logit_lens(run.model, v, k=10) for m, v in run.power_vectors().items()}}


def _draw_similarity(found: dict, out: Path) -> None:
    plots.similarity_heatmap(found["rows"], out / "similarity_heatmap.png")


def _transfer(run: _Run, judge) -> dict:
    b = run.budget
    sources = run.power_vectors()
    source = sources["bipo"]
    train, test = run.ps_train[: b.train_pairs], run.ps_test[: b.test_pairs]
    native_budget = dict(epochs=b.epochs, lr=b.lr, progress=False)
    rows = []
    home_scorer = MarginScorer(run.model, test)  # the default model as a target, for every transfer back
    native_norms, finetuning = {}, None
    if b.finetuned:
        run.log(f"transfer: {FINETUNED}")
        finetuned = load_model(FINETUNED, device=run.device)
        finetuning = sibling_record(FINETUNED)
        natives = {"bipo": train_bipo(finetuned, train, STEERING_LAYER, **native_budget),
                   "caa": train_caa(finetuned, train, STEERING_LAYER)}
        _keep_seed0(run, FINETUNED, natives["bipo"])
        scorer = MarginScorer(finetuned, test)
        for method, native in natives.items():
            rows.append({"method": method, "source": DEFAULT_MODEL, "target": FINETUNED, "map": "direct",
                         "r2_test": None, **retained_efficacy(finetuned, transfer_vector(sources[method], finetuned),
                                                              native, test, b.multiplier, scorer)})
            rows.append({"method": method, "source": FINETUNED, "target": DEFAULT_MODEL, "map": "direct",
                         "r2_test": None, **retained_efficacy(run.model, transfer_vector(native, run.model),
                                                              sources[method], test, b.multiplier, home_scorer)})
            native_norms[f"{FINETUNED} ({method})"] = native.norm
        del finetuned, scorer, natives
        gc.collect()

    run.log(f"transfer: {SIBLING}")
    sibling = load_model(SIBLING, device=run.device)
    native = train_bipo(sibling, train, STEERING_LAYER, **native_budget)
    _keep_seed0(run, SIBLING, native)
    scorer = MarginScorer(sibling, test)
    rows.append({"method": "bipo", "source": DEFAULT_MODEL, "target": SIBLING, "map": "direct", "r2_test": None,
                 **retained_efficacy(sibling, transfer_vector(source, sibling), native, test, b.multiplier, scorer)})
    back = retained_efficacy(run.model, transfer_vector(native, run.model), source, test, b.multiplier, home_scorer)
    rows.append({"method": "bipo", "source": SIBLING, "target": DEFAULT_MODEL, "map": "direct", "r2_test": None, **back})
    native_norms[SIBLING] = native.norm
    del sibling, scorer
    gc.collect()

    run.log(f"transfer: {OTHER_MODEL}")
    other = load_model(OTHER_MODEL, device=run.device)
    other_layer = corresponding_layer(STEERING_LAYER, info(run.model).n_layers, info(other).n_layers)
    texts = _fit_texts(run)
    acts = {"source": paired_activations(run.model, texts, STEERING_LAYER),
            "other": paired_activations(other, texts, other_layer)}
    native_other = train_bipo(other, train, other_layer, **native_budget)
    _keep_seed0(run, OTHER_MODEL, native_other)
    other_scorer = MarginScorer(other, test)
    for method in MAP_METHODS:
        forward = fit_linear_map(acts["source"], acts["other"], method)
        moved = transfer_vector(source, other, other_layer, forward)
        rows.append({"method": "bipo", "source": DEFAULT_MODEL, "target": OTHER_MODEL, "map": method, "r2_test": forward.r2_test,
                     "ridge": forward.ridge,
                     **retained_efficacy(other, moved, native_other, test, b.multiplier, other_scorer)})
        backward = fit_linear_map(acts["other"], acts["source"], method)
        moved = transfer_vector(native_other, run.model, STEERING_LAYER, backward)
        rows.append({"method": "bipo", "source": OTHER_MODEL, "target": DEFAULT_MODEL, "map": method, "r2_test": backward.r2_test,
                     "ridge": backward.ridge,
                     **retained_efficacy(run.model, moved, source, test, b.multiplier, home_scorer)})
    del other, other_scorer
    gc.collect()
    return {"rows": rows, "layers": {DEFAULT_MODEL: STEERING_LAYER, OTHER_MODEL: other_layer},
            "fit_texts": len(texts), "native_norms": {**native_norms, OTHER_MODEL: native_other.norm},
            "finetuned_sibling": finetuning}


def _keep_seed0(run: _Run, name: str, native: SteeringVector) -> None:
    """Save a native vector as seed 0 of ``name``'s seeds, which the family and siblings stages read
    instead of training it again (:func:`_native_seeds`)."""
    native.save(run.work / f"{name}_bipo_seed0.safetensors", overwrite=True)


def _native_seeds(run: _Run, stage: str, model, name: str, layer: int,
                  ours: list[SteeringVector]) -> list[SteeringVector]:
    """BiPO on ``model`` at ``layer`` with the claims' seeds, pairs and budget: seed k trained as the
    claims' seed k (``ours[k]``) was, and saved in the work directory for later study. A seed saved
    there by the same training (the transfer stage keeps its seed-0 natives; an interrupted stage its
    finished seeds) is read instead: same model, pairs and settings, the layer and seed asked for."""
    b, train, found = run.budget, run.ps_train[: run.budget.train_pairs], []
    settings = lambda v: {k: x for k, x in v.hyperparameters.items() if k not in ("layer", "fast_path")}  # noqa: E731
    for seed in range(b.seeds):
        path = run.work / f"{name}_bipo_seed{seed}.safetensors"
        kept = SteeringVector.load(path) if path.is_file() else None
        if kept is not None and (kept.model_id, kept.layer, kept.data_fingerprint, settings(kept)) == (
                name, layer, ours[seed].data_fingerprint, settings(ours[seed])):
            run.log(f"{stage}: {name} BiPO seed {seed} at layer {layer}, trained earlier: read from {path}")
            found.append(kept)
            continue
        run.log(f"{stage}: {name} BiPO seed {seed} at layer {layer}")
        found.append(train_bipo(model, train, layer, epochs=b.epochs, lr=b.lr, seed=seed, progress=False))
        found[-1].save(path, overwrite=True)
    return found


def power_seeking_data(data_dir: str | Path | None) -> tuple[list, list, str, list, Path | None]:
    """BiPO's power-seeking train and test pairs under ``data_dir`` (default: the shared data), with
    what the record says of them, the files read, and the data root (None: not found). Not found
    where ``data_dir`` was named is an error; not found in the default place falls back to the
    built-in set, split 3:1."""
    found = power_seeking_files(data_dir)
    if found:
        files, root = found
        return (load_pairs(files[0]), load_pairs(files[1]), f"{files[0].parent}/train.csv, test.csv (BiPO's power-seeking data)",
                files, root)
    root = shared_data_dir()
    train, test = split_pairs(load_pairs("power_seeking"), 0.25, seed=0)
    return train, test, f"built-in power_seeking set ({root} has no bipo/power-seeking/train.csv and test.csv)", ["power_seeking"], None


def _fit_texts(run: _Run) -> list[str]:
    """Texts whose activations on both models fit the cross-family maps: power-seeking pairs beyond the
    training ones, and the built-in sets."""
    b = run.budget
    return pair_texts(run.ps_train[b.train_pairs : b.train_pairs + b.fit_pairs]
                      + [p for name in ("optimism", "formality") for p in load_pairs(name)[: b.fit_builtin_pairs]])


def _family(run: _Run, judge) -> dict:
    """The cross-family claim with an interval. The transfer stage moves one vector through maps
    fitted once; here each of the claims' BiPO seeds goes to Gemma through maps fitted on its own
    bootstrap resample of the fitting texts, against Gemma-native BiPO trained with as many seeds
    (``native[k]`` beside ``moved[k]``), and back the same way, so the crossed interval over pairs
    and seeds also covers the maps' noise. The verdict reads retained efficacy at the native norm."""
    b, model = run.budget, run.model
    test = run.ps_test[: b.test_pairs]
    ours = _claims_seeds(run)
    run.log(f"family: {OTHER_MODEL}")
    other = load_model(OTHER_MODEL, device=run.device)
    other_layer = corresponding_layer(STEERING_LAYER, info(model).n_layers, info(other).n_layers)
    texts = _fit_texts(run)
    source, target = paired_activations(model, texts, STEERING_LAYER), paired_activations(other, texts, other_layer)
    theirs = _native_seeds(run, "family", other, OTHER_MODEL, other_layer, ours)
    scorers = {OTHER_MODEL: MarginScorer(other, test), DEFAULT_MODEL: MarginScorer(model, test)}
    rows, by_map = [], {}
    for method in MAP_METHODS:
        ways = []
        for src, tgt, start, goal, x, y, to, layer in (
                (DEFAULT_MODEL, OTHER_MODEL, ours, theirs, source, target, other, other_layer),
                (OTHER_MODEL, DEFAULT_MODEL, theirs, ours, target, source, model, STEERING_LAYER)):
            maps = [fit_linear_map(x, y, method, seed=k, bootstrap=True) for k in range(b.seeds)]
            moved = [transfer_vector(v, to, layer, f) for v, f in zip(start, maps)]
            row = {"source": src, "target": tgt, "map": method, "r2_left_out": [f.r2_test for f in maps],
                   "ridges": [f.ridge for f in maps],
                   "moved_norms": [v.norm for v in moved], "native_norms": [v.norm for v in goal],
                   "retained": claim.retained(scorers[tgt], moved, goal, claim.TRANSFER_KEEPS, b.multiplier),
                   "at_native_norm": claim.retained_direction(scorers[tgt], moved, goal, claim.TRANSFER_KEEPS,
                                                              b.multiplier)}
            rows.append(row)
            ways.append(row["at_native_norm"])
        by_map[method] = tuple(ways)
    found, why = claim.transfers_both_ways(by_map)
    del other, scorers
    gc.collect()
    return {"rows": rows, "verdict": found, "why": why, "seeds": b.seeds, "test_pairs": len(test),
            "fit_texts": len(texts), "layers": {DEFAULT_MODEL: STEERING_LAYER, OTHER_MODEL: other_layer},
            "multiplier": b.multiplier}


def _draw_family(found: dict, out: Path) -> None:
    pass  # rows of the claims table and of the transfer section, no figure of its own


def _claims_seeds(run: _Run) -> list[SteeringVector]:
    """The claims stage's BiPO seeds at layer 15: stage 1's vector, then the ones it saved."""
    return [run.power_vectors()["bipo"]] + [SteeringVector.load(run.work / f"power_seeking_bipo_seed{k}.safetensors")
                                            for k in range(1, run.budget.seeds)]


def _siblings(run: _Run, judge) -> dict:
    """The same-family transfer claim with native seeds. The claims stage moves each BiPO seed to the
    fine-tuned sibling against one native vector, so its interval leaves out the native side's seed
    noise; here BiPO is trained on each sibling with the claims' seeds, pairs and budget, seed k moved
    there (directly: same d_model) is compared with the sibling's seed k, and the sibling's seeds come
    back to the default model against ours, resampling pairs and seeds on both sides. The fine-tuned
    sibling is the paper's claim (Llama-2-chat -> Vicuna); the 4-bit ones ask whether a vector
    survives quantisation: llama.cpp's Q4_0 (a scale per 32 weights), what users deploy, and the
    per-row ``@int4`` (coarser; the only sibling on budgets without the fine-tune, cheap to test)."""
    b, model = run.budget, run.model
    test = run.ps_test[: b.test_pairs]
    ours, home = _claims_seeds(run), MarginScorer(model, test)
    rows = []
    for name in (FINETUNED, DEPLOYED, SIBLING) if b.finetuned else (SIBLING,):
        sibling = load_model(name, device=run.device)
        theirs = _native_seeds(run, "siblings", sibling, name, STEERING_LAYER, ours)
        there = MarginScorer(sibling, test)
        for src, tgt, start, goal, to, scorer in ((DEFAULT_MODEL, name, ours, theirs, sibling, there),
                                                  (name, DEFAULT_MODEL, theirs, ours, model, home)):
            moved = [transfer_vector(v, to) for v in start]
            rows.append({"source": src, "target": tgt, "native_norms": [v.norm for v in goal],
                         "cosines_to_native": [cosine(v, g) for v, g in zip(moved, goal)],
                         "retained": claim.retained(scorer, moved, goal, claim.TRANSFER_KEEPS, b.multiplier)})
        del sibling, there
        gc.collect()
    return {"rows": rows, "seeds": b.seeds, "test_pairs": len(test), "layer": STEERING_LAYER,
            "multiplier": b.multiplier, "source_norms": [v.norm for v in ours]}


def _draw_siblings(found: dict, out: Path) -> None:
    pass  # rows of the claims table and of the transfer section, no figure of its own


def _draw_transfer(found: dict, out: Path) -> None:
    plots.transfer_bars(found["rows"], out / "transfer.png")


def _composition(run: _Run, judge) -> dict:
    b = run.budget
    power = run.power_vectors()["bipo"]
    layers = list(b.behaviour_layers)
    optimism = load_sweep_vectors(run.sweep_dir("optimism"), layers)
    _, opt_test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    tests = {"power_seeking": run.ps_test[: b.composition_pairs], "optimism": opt_test[: b.composition_pairs]}
    run.log("composition: power-seeking + optimism, same layer")
    same = compose(run.model, {"power_seeking": power, "optimism": optimism[STEERING_LAYER]["bipo"]}, tests,
                   list(b.weights), b.multiplier)
    other_layer = max(layer for layer in layers if layer != STEERING_LAYER)
    run.log(f"composition: power-seeking (layer {STEERING_LAYER}) + optimism (layer {other_layer})")
    across = compose(run.model, {"power_seeking": power, "optimism": optimism[other_layer]["bipo"]}, tests,
                     [-b.multiplier, 0.0, b.multiplier], b.multiplier)
    return {"same_layer": same, "different_layers": {k: across[k] for k in ("behaviours", "cosines", "layers")}}


def _draw_composition(found: dict, out: Path) -> None:
    plots.composition_grid(found["same_layer"], out / "composition.png")


def _up_the_ladder(run: _Run, vectors: dict[str, SteeringVector], test: list, scorer: MarginScorer,
                   generations: list[dict] | None = None) -> list[dict]:
    """The rows equal fluency is read on, for the claims and the baselines alike: every vector's answers
    to the budget's held-out questions (``fluency_questions``) unsteered and up its ladder of +
    multipliers, further up (doubling, to ``fluency_ceiling``) for one still within the perplexity
    budget at the top, then ``fluency_bisections`` halvings of each one's bracket where the budget
    binds. The answers themselves are added to ``generations`` where given."""
    b = run.budget

    def answers(named: dict[str, SteeringVector], multipliers: list[float]) -> list[dict]:
        report = evaluate(run.model, named, test, multipliers, max_questions=b.test_pairs,
                          max_generations=b.fluency_questions or b.generations,
                          max_new_tokens=b.max_new_tokens, progress=False, scorer=scorer)
        if generations is not None:
            generations.extend(report["generations"])
        return report["results"]

    return bisect_budget(answers(vectors, b.fluency_ladder), lambda name, mid: answers({name: vectors[name]}, [mid]),
                         list(vectors), b.fluency_bisections, ceiling=b.fluency_ceiling)


def _baselines(run: _Run, judge) -> dict:
    """Stage 1's BiPO and CAA beside the other methods, trained on the same pairs at the same layer
    (RePS with the authors' settings, ``reps_epochs`` epochs), scored on the same held-out
    pairs at their own norms, at BiPO's, and at equal fluency. For equal fluency the other methods
    answer the claims' questions up the claims' ladder of multipliers, with as many halvings of each
    bracket where the budget binds, and BiPO (seed 0) and CAA are read on the claims stage's own
    answers: every method is read where the budget binds, not at stage 1's +2, and BiPO - CAA here
    is the claims' reading for one seed."""
    b, model = run.budget, run.model
    train, test = run.ps_train[: b.train_pairs], run.ps_test[: b.test_pairs]
    first = run.power_vectors()
    trainers = {
        "caa_answer_token": lambda: train_caa(model, train, STEERING_LAYER, positions="answer_token"),
        "pca": lambda: train_pca(model, train, STEERING_LAYER),
        "bipo_activation_margin": lambda: train_bipo(model, train, STEERING_LAYER, loss="activation_margin",
                                                     progress=False),
        "reps": lambda: train_reps(model, train, STEERING_LAYER, epochs=b.reps_epochs, progress=False),
    }
    vectors, seconds = {"bipo": first["bipo"], "caa": first["caa"]}, {}
    for name, train_one in trainers.items():
        run.log(f"baselines: {METHOD_NAMES[name]} on {len(train)} pairs at layer {STEERING_LAYER}")
        started = time.time()
        vectors[name] = train_one()
        seconds[name] = round(time.time() - started, 1)
        vectors[name].save(run.work / f"power_seeking_{name}.safetensors", overwrite=True)  # for later study
    run.log(f"baselines: margins of {len(vectors)} vectors on {len(test)} held-out pairs")
    scorer = MarginScorer(model, test)
    rows = compare_methods(scorer, vectors, "bipo", b.multiplier)
    others = {name: v for name, v in vectors.items() if name not in ("bipo", "caa")}
    run.log(f"baselines: answers of {len(others)} methods to {b.fluency_questions or b.generations} questions at "
            f"multipliers {b.fluency_ladder}, then {b.fluency_bisections} halvings (equal fluency)")
    generations: list[dict] = []
    answered = _up_the_ladder(run, others, test, scorer, generations)
    claims = {"BiPO": "bipo", "CAA": "caa"}  # the claims stage's names of stage 1's vectors
    evaluated = [{**r, "vector": claims[r["vector"]]} for r in run.results["claims"]["fluency_answers"]
                 if r["vector"] in claims] + answered
    fluency = compare_at_equal_fluency(scorer, evaluated, vectors, "bipo")
    read = {r["method"]: r["multiplier_at_budget"] or 0.0 for r in fluency}
    return {"layer": STEERING_LAYER, "train_pairs": len(train), "test_pairs": len(test), "multiplier": b.multiplier,
            "rows": rows, "fluency": fluency, "evaluated": evaluated, "ladder": b.fluency_ladder,
            "generations": [g for g in generations if g["multiplier"] in (0.0, read[g["vector"]])],  # where each is read
            "train_seconds": seconds, "reps": {"history": vectors["reps"].history,
                                               "hyperparameters": vectors["reps"].hyperparameters}}


def _draw_baselines(found: dict, out: Path) -> None:
    plots.method_bars(found["rows"], out / "baselines.png",
                      title=f"power-seeking, layer {found['layer']}: margin range (+/-{found['multiplier']:g}) "
                            f"on {found['test_pairs']} held-out pairs", fluency=found.get("fluency"))


def _claims(run: _Run, judge) -> dict:
    """The paper's claims with intervals. BiPO is retrained at layer 15 with seeds 1.. (seed 0 is
    stage 1's vector; the others are saved in the work directory), every other vector is read from
    the earlier stages' work files, and every margin is recomputed per held-out pair, so each claim
    gets an interval over pairs and seeds. For equal fluency every seed and CAA answer held-out
    questions (``fluency_questions``: stage 1's and more) up the budget's ladder of multipliers, so
    each is read at its own largest multiplier within the perplexity budget."""
    b, model = run.budget, run.model
    train, test = run.ps_train[: b.train_pairs], run.ps_test[: b.test_pairs]
    first = run.power_vectors()
    seeds = [first["bipo"]]
    for seed in range(1, b.seeds):
        run.log(f"claims: BiPO seed {seed} at layer {STEERING_LAYER}")
        seeds.append(train_bipo(model, train, STEERING_LAYER, epochs=b.epochs, lr=b.lr, seed=seed, progress=False))
        seeds[-1].save(run.work / f"power_seeking_bipo_seed{seed}.safetensors", overwrite=True)  # for later study
    caa, m = first["caa"], b.multiplier
    scorer = MarginScorer(model, test)
    named = [("BiPO", seeds[0])] + [(f"BiPO seed {seed}", v) for seed, v in enumerate(seeds[1:], 1)]
    run.log(f"claims: answers of {len(seeds)} BiPO seeds and CAA to {b.fluency_questions or b.generations} questions "
            f"at multipliers {b.fluency_ladder}, then {b.fluency_bisections} halvings (equal fluency)")
    answering = {**dict(named), "CAA": caa}
    answered = _up_the_ladder(run, answering, test, scorer)
    run.log("claims: both ways, against CAA")
    found = {
        "both_ways": claim.steers_both_ways(scorer, seeds, m),
        "beats_caa_own_scale": claim.beats(scorer, seeds, [caa] * len(seeds), m),
        "beats_caa_equal_norm": claim.beats(scorer, seeds, [claim.scaled(caa, v.norm) for v in seeds], m),
        "beats_caa_equal_fluency": claim.beats_at_equal_fluency(scorer, answered, named, ("CAA", caa)),
    }
    run.log("claims: best layer")
    swept = run.results["layers"]["sweep"]
    if all("pair_ranges" in r["bipo"] for r in swept) and b.sweep.multiplier == m:  # the layers stage's [seed][pair] grids
        grids = {r["layer"]: r["bipo"]["pair_ranges"] for r in swept}
    else:  # a layers stage from before the sweep kept per-pair ranges: one seed, scored here
        sweep_scorer = MarginScorer(model, run.ps_test[: b.sweep.max_test_pairs])
        grids = {layer: [sweep_scorer.pair_ranges(v["bipo"], m).tolist()]
                 for layer, v in load_sweep_vectors(run.sweep_dir("power_seeking"), list(b.layers)).items()}
        del sweep_scorer
    found["best_layer"] = claim.best_layer(grids, info(model).n_layers)
    run.log("claims: composition")
    optimism = [load_sweep_vectors(run.sweep_dir("optimism"), [STEERING_LAYER])[STEERING_LAYER]["bipo"]]
    opt_train, opt_test = split_pairs(load_pairs("optimism"), 0.25, seed=0)
    for seed in range(1, b.seeds):  # as the similarity stage's sweep trained seed 0
        run.log(f"claims: optimism BiPO seed {seed} at layer {STEERING_LAYER}")
        optimism.append(train_bipo(model, opt_train[: b.sweep.max_train_pairs], STEERING_LAYER, epochs=b.sweep.epochs,
                                   lr=b.sweep.lr, seed=b.sweep.seed + seed, progress=False))
    opt_scorer = MarginScorer(model, opt_test[: b.test_pairs])
    found["composition"] = {
        "power_seeking": claim.retained(scorer, seeds, seeds, claim.COMPOSITION_KEEPS, m, [(optimism[0], m)]),
        "optimism": claim.retained(opt_scorer, optimism, optimism, claim.COMPOSITION_KEEPS, m, [(first["bipo"], m)]),
    }
    del scorer, opt_scorer
    if b.finetuned:
        run.log(f"claims: transfer to {FINETUNED}")
        finetuned = load_model(FINETUNED, device=run.device)
        native = train_bipo(finetuned, train, STEERING_LAYER, epochs=b.epochs, lr=b.lr, progress=False)
        target = MarginScorer(finetuned, test)
        found["transfer_sibling"] = {
            "bipo": claim.retained(target, [transfer_vector(v, finetuned) for v in seeds], [native] * len(seeds),
                                   claim.TRANSFER_KEEPS, m),
            "caa": claim.retained(target, [transfer_vector(caa, finetuned)], [train_caa(finetuned, train, STEERING_LAYER)],
                                  claim.TRANSFER_KEEPS, m)}
        del finetuned, target
        gc.collect()
    return {"claims": found, "seeds": b.seeds, "test_pairs": len(test), "multiplier": m, "fluency_answers": answered,
            "seed_norms": [v.norm for v in seeds], "seed_cosines": [cosine(v, seeds[0]) for v in seeds[1:]]}


def _draw_claims(found: dict, out: Path) -> None:
    pass  # a table in the README, no figure


def _behaviour_sets(run: _Run) -> dict:
    """The data directory's behaviour sets studied besides stage 1's power-seeking (a budget may cap them)."""
    if run.data_root is None:
        return {}
    sets = {k: v for k, v in shared_behaviour_sets(run.data_root).items() if k != "power-seeking"}
    return dict(list(sets.items())[: run.budget.behaviour_sets])


def _behaviours(run: _Run, judge) -> dict:
    """Stage 1's budget and the claims' seeds on every behaviour set of the data directory. The
    power-seeking row is the claims stage's (the same pairs, seeds and budget), not trained again."""
    b = run.budget
    config = BehaviourConfig(layer=STEERING_LAYER, epochs=b.epochs, lr=b.lr, max_train_pairs=b.train_pairs,
                             max_test_pairs=b.test_pairs, multiplier=b.multiplier, seeds=b.seeds)
    first = run.results["claims"]
    rows = [{"behaviour": "power-seeking", "source": run.data, "train_pairs": b.train_pairs,
             "test_pairs": first["test_pairs"], "from_stage": "claims",
             **{k: first["claims"][k] for k in ("both_ways", "beats_caa_own_scale", "beats_caa_equal_norm")},
             "cosine": run.results["steering"]["cosine"],
             "norms": {"bipo": first["seed_norms"], "caa": run.results["steering"]["norms"]["caa"]}}]
    for name, (train_file, test_file) in _behaviour_sets(run).items():
        pairs = load_pairs(train_file)
        train, test = (pairs, load_pairs(test_file)) if test_file else split_pairs(pairs, 0.25, seed=0)
        train, test = one_per_question(train), one_per_question(test)  # distinct questions on both sides
        run.log(f"behaviours: {name} ({len(train)} train / {len(test)} held-out pairs; {b.seeds} BiPO seeds)")
        found = study_behaviour(run.model, name, train, test, run.work / "behaviours", config)
        rows.append({"source": str(train_file) + (f", {test_file}" if test_file else " (75/25 split by question)"),
                     **{k: v for k, v in found.items() if k != "key"}})
        gc.collect()
    return {"layer": STEERING_LAYER, "multiplier": b.multiplier, "seeds": b.seeds, "rows": rows,
            "data_root": str(run.data_root) if run.data_root else None}


def _draw_behaviours(found: dict, out: Path) -> None:
    plots.behaviour_bars(found["rows"], out / "behaviours.png",
                         title=f"every behaviour, layer {found['layer']}, +/-{found['multiplier']:g}, "
                               f"{found['seeds']} BiPO seeds")


STAGES = {
    "steering": (_steering, _draw_steering),
    "layers": (_layers, _draw_layers),
    "similarity": (_similarity, _draw_similarity),
    "transfer": (_transfer, _draw_transfer),
    "composition": (_composition, _draw_composition),
    "claims": (_claims, _draw_claims),
    "baselines": (_baselines, _draw_baselines),
    "behaviours": (_behaviours, _draw_behaviours),
    "family": (_family, _draw_family),
    "siblings": (_siblings, _draw_siblings),
}
assert tuple(STAGES) == STAGE_NAMES, "bipo_lens.figure_work names the stages, in run order"
