"""A ``bipo-lens figures`` run's stages by name, the models it studies, its work directory, and the
checks that stop a run before anything is computed or deleted.

Nothing here imports torch: ``bipo-lens figures`` checks its flags and directories with this module
before it imports :mod:`bipo_lens.figures` (which loads the analysis, torch and transformers: 3-5 s of
imports on two cores), so a mistyped stage, a forgotten ``--resume`` or a directory holding hours of
someone's vectors is answered at once. :func:`bipo_lens.figures.make_figures` runs the same checks,
for callers of the function.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from bipo_lens.errors import BipoLensError
from bipo_lens.model_names import DEFAULT_MODEL
from bipo_lens.pairs import shared_data_dir

STAGE_NAMES = ("steering", "layers", "similarity", "transfer", "composition", "claims", "baselines", "behaviours",
               "family", "siblings")  # in run order: a stage reads only earlier ones (bipo_lens.figures.STAGES)
READS = {  # stage -> {earlier stage: {key of its results it reads: what that key holds}}, checked on --resume
    "claims": {"layers": {"sweep": "layer sweep"}},
    "baselines": {"claims": {"fluency_answers": "answers up the equal-fluency ladder"}},
    "behaviours": {"claims": {"claims": "claims", "test_pairs": "held-out pair count", "seed_norms": "seed norms"},
                   "steering": {"cosine": "BiPO-CAA cosine", "norms": "vector norms"}},
    "family": {"claims": {"seed_norms": "seed norms"}},  # and the seeds' vectors it saved
    "siblings": {"claims": {"seed_norms": "seed norms"}},  # and the seeds' vectors it saved
}
STEERING_LAYER = 15
SIBLING = f"{DEFAULT_MODEL}@int4"
DEPLOYED = f"{DEFAULT_MODEL}@q4_0"  # llama.cpp's Q4_0, as llama-quantize writes it: models.quantise_weights
FINETUNED = "smollm2-135m-pydoc"  # the default model, LoRA-fine-tuned: bipo_lens.finetune
OTHER_MODEL = "gemma-3-270m"
WORK_MARK = ".bipo-lens-figures"  # written into a work directory as a run starts


def holds_anything(directory: Path) -> bool:
    """Anything to lose: a run that stopped before its first stage (a wrong --device) left only its mark."""
    return directory.is_dir() and any(entry.name != WORK_MARK for entry in directory.iterdir())


def is_work_dir(directory: Path) -> bool:
    """An earlier figures run's work directory: it finished a stage, or was marked as it started."""
    return (directory / WORK_MARK).is_file() or any(directory.glob("stage_*.json"))


def read_stage(path: Path) -> dict:
    """A stage's saved results; a file that is not what a run writes (edited by hand, cut short by a full
    disk) is said with what to do, before anything is computed."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as error:
        raise BipoLensError(f"{path} is not a stage's saved results ({error}): delete it to compute that stage "
                            f"again") from None


def check_resumable(work: Path, rerun: Sequence[str] = ()) -> None:
    """A stage computed on ``--resume`` reads earlier stages' saved results (:data:`READS`); one saved
    before what it reads was kept stops the run here, before the model loads, saying which file to delete."""
    def saved(name: str) -> bool:
        return name not in rerun and (work / f"stage_{name}.json").is_file()

    for name in STAGE_NAMES:
        if saved(name):
            continue  # read back, not computed: it reads nothing
        for earlier, keys in READS.get(name, {}).items():
            path = work / f"stage_{earlier}.json"
            if not saved(earlier):
                continue  # computed in this run, with everything it holds now
            missing = [what for key, what in keys.items() if key not in read_stage(path)]
            if missing:
                raise BipoLensError(f"{path} holds no {missing[0]}, which the {name} stage reads (a {earlier} stage "
                                    f"from before they were kept): delete it to compute the {earlier} stage again")


def rerun_closure(stages: Sequence[str]) -> list[str]:
    """The stages ``--rerun`` computes again: the ones named and every stage that reads one of them
    (:data:`READS`), so that no saved stage is kept beside a newer version of what it was computed from."""
    unknown = [name for name in stages if name not in STAGE_NAMES]
    if unknown:
        raise BipoLensError(f"--rerun {unknown[0]}: no such stage (stages: {', '.join(STAGE_NAMES)})")
    chosen = set(stages)
    for name in STAGE_NAMES:  # in order: a stage reads only earlier ones
        if chosen & set(READS.get(name, {})):
            chosen.add(name)
    return [name for name in STAGE_NAMES if name in chosen]


def power_seeking_files(data_dir: str | Path | None) -> tuple[list[Path], Path] | None:
    """BiPO's power-seeking ``train.csv`` and ``test.csv`` under ``data_dir`` (default: the shared data)
    and that root; None where the default place lacks them (the built-in set stands in). Missing where
    ``data_dir`` was named is an error."""
    root = Path(data_dir) if data_dir else shared_data_dir()
    files = [root / "bipo" / "power-seeking" / name for name in ("train.csv", "test.csv")]
    if all(f.is_file() for f in files):
        return files, root
    if data_dir:
        raise BipoLensError(f"--data-dir {data_dir} has no bipo/power-seeking/train.csv and test.csv (BiPO's power-seeking data)")
    return None


def check_request(work_dir: str | Path, data_dir: str | Path | None = None, resume: bool = False,
                  overwrite: bool = False, rerun: Sequence[str] = (), seeds: int | None = None) -> list[str]:
    """Every check a figures run makes before it computes or deletes anything (bar the judge's package,
    which takes its imports to find): the flags agree, ``--resume`` finds what its stages read, the data
    is there, and a ``work_dir`` holding anything is continued or, where it is an earlier run's, started
    over on ``--overwrite``. Returns the stages ``rerun`` computes again (:func:`rerun_closure`)."""
    if seeds is not None and seeds < 1:
        raise BipoLensError(f"--seeds must be at least 1, not {seeds}")
    stages = rerun_closure(rerun)
    if resume and overwrite:
        raise BipoLensError("--resume continues the run in --work-dir and --overwrite starts it over: give one")
    if stages and not resume:
        raise BipoLensError("--rerun computes stages of an earlier run again: give --resume and its --work-dir")
    work = Path(work_dir)
    if resume:
        for name in STAGE_NAMES:  # every stage this run reads back, readable
            if name not in stages and (work / f"stage_{name}.json").is_file():
                read_stage(work / f"stage_{name}.json")
        check_resumable(work, stages)
    power_seeking_files(data_dir)
    if not resume and holds_anything(work):
        if not overwrite:
            raise BipoLensError(f"--work-dir {work} holds an earlier run: continue it with --resume, or start over with "
                                f"--overwrite (deletes it)")
        if not is_work_dir(work):
            raise BipoLensError(f"--work-dir {work} holds files that are not a figures run's (no stage_*.json, no "
                                f"{WORK_MARK}): name a new directory")
    return stages
