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
else from the built-in set; optimism and formality are built-in sets.
"""

from __future__ import annotations

import gc
import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from statistics import fmean

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
from bipo_lens.figure_work import STAGE_NAMES, WORK_MARK, check_request, power_seeking_files, read_stage
from bipo_lens.models import DEFAULT_MODEL, info, load_model, sibling_record
from bipo_lens.pairs import load_pairs, one_per_question, shared_behaviour_sets, shared_data_dir, split_pairs
from bipo_lens.records import describe, finish_record, git_state, start_record
from bipo_lens.training import train_bipo, train_caa, train_pca, train_reps
from bipo_lens.vectors import SteeringVector

STEERING_LAYER = 15
SIBLING = f"{DEFAULT_MODEL}@int4"
DEPLOYED = f"{DEFAULT_MODEL}@q4_0"  # llama.cpp's Q4_0, as llama-quantize writes it: models.quantise_weights
FINETUNED = "smollm2-135m-pydoc"  # the default model, LoRA-fine-tuned: bipo_lens.finetune
OTHER_MODEL = "gemma-3-270m"


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


def _family_claim(transfer: dict) -> dict:
    """Across families without the family stage only point values exist (the maps are fitted once, no
    interval). Read from the transfer stage as the README is written, so that no stage depends on it."""
    rows = [r for r in transfer["rows"] if r["map"] != "direct"]
    return {"rows": [{k: r[k] for k in ("source", "target", "map", "retained", "r2_test")} for r in rows],
            "verdict": claim.INCONCLUSIVE if rows else None,
            "why": "point values from maps fitted once, one seed: no interval"}


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
