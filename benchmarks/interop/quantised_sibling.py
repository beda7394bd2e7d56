"""Does a BiPO vector survive llama.cpp's own quantisation? The siblings stage's reading, on the
default model requantised by llama.cpp's ``llama-quantize`` (Q4_K_M unless told: what users run).

Run by ``./dev interop quantised [TYPE]`` (which builds ``llama-quantize`` once). Usage:
    python benchmarks/interop/quantised_sibling.py --quantize PATH/llama-quantize [--type Q4_K_M] [--work-dir DIR]

The figures' siblings stage asks this of ``smollm2-135m-instruct@int4`` (bipo-lens's own symmetric
per-row rounding); here the quantiser is llama.cpp's, and every step is a command a user types:

1. ``llama-quantize --allow-requantize`` on the default model's GGUF (itself Q4_1) -> ``TYPE``;
2. BiPO on it with the claims' recipe, seeds 0-2 (``bipo-lens train --model Q.gguf``: BiPO's
   power-seeking train.csv, first 64 pairs, layer 15, 8 epochs, lr 0.005), checked to have the
   claims' seeds' data fingerprint and settings (``figures/work/power_seeking_bipo*.safetensors``);
3. ``bipo-lens transfer --native`` both ways: seed k of one model applied as it is (same width) on
   the other, against that model's seed k, on the first 48 held-out pairs at +/-1; retained
   efficacy with its 95% interval over pairs and both sides' seeds;
4. the same ``transfer`` on the figures' own ``@int4`` seeds, which must read what the siblings
   stage recorded (``figures/results.json``): the command line and the stage agree; so must step 3's
   reading where the stage has this type's row (its ``@q4_0`` is this Q4_0 file to the bit).

For the types gguf-py can write (Q4_0, Q4_1, Q5_0, Q5_1, Q8_0) it first checks that bipo-lens's
``smollm2-135m-instruct@q4_0`` (and so the figures' Q4_0 sibling) is this file's model to the bit.

Prints a table and ends with ``quantised sibling: ok`` (or a line saying what did not match).
Trained seeds are kept in the work directory, so a second run only reads.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
FIGURES = ROOT / "figures"
WORK = FIGURES / "work"
DEFAULT = "smollm2-135m-instruct"
LAYER, PAIRS, TEST_PAIRS, EPOCHS, LR, SEEDS = 15, 64, 48, 8, 0.005, 3


def cli(*args) -> str:
    print("$ bipo-lens " + " ".join(map(str, args)), flush=True)
    done = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"bipo-lens {args[0]} failed:\n{done.stderr[-3000:]}")
    return done.stdout


def seed_files(stem: Path) -> list[Path]:
    return [stem.with_name(f"{stem.name}_seed{k}.safetensors") for k in range(SEEDS)]


def claims_seeds() -> list[Path]:
    return [WORK / "power_seeking_bipo.safetensors"] + [WORK / f"power_seeking_bipo_seed{k}.safetensors"
                                                         for k in range(1, SEEDS)]


def settings(path: Path) -> tuple:
    """What must match the claims' seed: the training pairs and every setting but the fast-path flags."""
    from bipo_lens.vectors import SteeringVector

    v = SteeringVector.load(path)
    kept = {k: x for k, x in v.hyperparameters.items() if k != "fast_path"}
    return v.data_fingerprint, json.dumps(kept, sort_keys=True)


def tensor_types(gguf: Path) -> str:
    """What the file holds: llama.cpp falls back from a K-quant (256-wide blocks) to Q5_0/Q8_0 for
    rows whose width 256 does not divide (576 here), so "Q4_K_M" may be mostly 5- and 8-bit."""
    from collections import Counter

    from gguf import GGUFReader

    counts = Counter(t.tensor_type.name for t in GGUFReader(gguf).tensors if len(t.shape) > 1)
    return ", ".join(f"{n} {kind}" for kind, n in counts.most_common())


def same_as_ours(quantised: Path, kind: str) -> str | None:
    """Whether ``DEFAULT@kind`` (gguf-py's quantiser, :func:`bipo_lens.models.quantise_weights`) loads
    the very weights of llama.cpp's file: None if so, else what differs."""
    import torch

    from bipo_lens.models import load_model

    ours = load_model(f"{DEFAULT}@{kind}", device="cpu").original_model.state_dict()
    theirs = load_model(str(quantised), device="cpu").original_model.state_dict()
    differ = [name for name in ours if not torch.equal(ours[name], theirs[name])]
    print(f"  {DEFAULT}@{kind}: {len(ours) - len(differ)} of {len(ours)} tensors identical to this file's model")
    return f"{len(differ)} tensors differ, e.g. {differ[:3]}" if differ else None


def reading(source: list[Path], target: str, native: list[Path], test: Path, out: Path) -> dict:
    cli("transfer", "--vector", ",".join(map(str, source)), "--target-model", target, "--native",
        ",".join(map(str, native)), "--test-data", test, "--max-test-pairs", TEST_PAIRS, "--multiplier", 1,
        "--out", out / "moved.safetensors", "--out-json", out / "transfer.json", "--overwrite")
    return json.loads((out / "transfer.json").read_text())


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quantize", required=True, help="llama.cpp's llama-quantize")
    parser.add_argument("--type", default="Q4_K_M", help="a llama-quantize type: Q4_K_M, Q4_0, Q5_K_M, Q8_0, ...")
    parser.add_argument("--work-dir", default=None, help="default: the bipo-lens cache's quantised/TYPE")
    parser.add_argument("--data-dir", default=None, help="default: $BIPO_LENS_SHARED_DATA or ../shared/data")
    args = parser.parse_args()
    from bipo_lens.models import EMBEDDED_MODELS, _embedded_gguf, cache_root
    from bipo_lens.pairs import shared_data_dir

    started = time.time()
    data = Path(args.data_dir) if args.data_dir else shared_data_dir()
    power = data / "bipo" / "power-seeking" if data else None
    if power is None or not (power / "train.csv").is_file():
        raise SystemExit("BiPO's power-seeking data not found (../shared/data/bipo/power-seeking): the claims' recipe needs it")
    work = Path(args.work_dir) if args.work_dir else cache_root() / "quantised" / args.type
    work.mkdir(parents=True, exist_ok=True)
    source = _embedded_gguf(EMBEDDED_MODELS[DEFAULT])
    quantised = work / f"SmolLM2-135M-Instruct.{args.type}.gguf"
    if not quantised.is_file():
        partial, log = quantised.with_suffix(".partial"), quantised.with_suffix(".log")
        with log.open("w") as sink:
            subprocess.run([args.quantize, "--allow-requantize", str(source), str(partial), args.type, "2"],
                           check=True, stdout=sink, stderr=subprocess.STDOUT)
        partial.rename(quantised)
    print(f"model: {source.name} requantised by llama.cpp to {args.type}: {quantised} "
          f"({quantised.stat().st_size / 2**20:.0f} MiB, from {source.stat().st_size / 2**20:.0f} MiB)")
    print("  tensor types: " + tensor_types(quantised))
    from bipo_lens.model_names import GGUF_TYPES

    if args.type.lower() in GGUF_TYPES and (differ := same_as_ours(quantised, args.type.lower())):
        print(f"quantised sibling: FAILED: {DEFAULT}@{args.type.lower()} is not llama.cpp's {args.type}: {differ}")
        return 1

    ours = claims_seeds()
    theirs = seed_files(work / "bipo")
    for k, path in enumerate(theirs):
        if not path.is_file():
            cli("train", "--model", quantised, "--data", power / "train.csv", "--max-pairs", PAIRS, "--layer", LAYER,
                "--epochs", EPOCHS, "--bipo-lr", LR, "--seed", k, "--out", path, "--overwrite")
        if settings(path) != settings(ours[k]):
            raise SystemExit(f"{path} was not trained as the claims' seed {k} was (data or settings differ)")
    test = power / "test.csv"
    rows = []
    for name, natives in ((quantised.name, theirs), ("@int4 (figures' siblings stage)", None)):
        target = str(quantised) if natives else f"{DEFAULT}@int4"
        natives = natives or [WORK / f"{DEFAULT}@int4_bipo_seed{k}.safetensors" for k in range(SEEDS)]
        there = reading(ours, target, natives, test, work / f"to_{name.split()[0]}")
        back = reading(natives, DEFAULT, ours, test, work / f"from_{name.split()[0]}")
        rows += [(f"{DEFAULT} -> {name}", there), (f"{name} -> {DEFAULT}", back)]

    print(f"\nBiPO seeds 0-2 (layer {LAYER}, {PAIRS} pairs), each against the target's native seed k, "
          f"{TEST_PAIRS} held-out pairs at +/-1")
    print("| source -> target | cos(seed k, native seed k) | native range | retained [95%] | verdict (> 0.5) |")
    print("| --- | ---: | ---: | ---: | --- |")
    from bipo_lens.analysis.claims import TRANSFER_KEEPS, verdict

    for way, found in rows:
        low, high = found["retained_ci"]
        print(f"| {way} | {found['cosine_to_native']:.2f} | {found['native_range']:+.2f} | "
              f"{found['retained']:.2f} [{low:.2f}, {high:.2f}] | {verdict((low, high), TRANSFER_KEEPS, SEEDS)[0]} |")
    stage = json.loads((FIGURES / "results.json").read_text())["siblings"]["rows"]
    checked, mismatched = [], []
    for suffix, read in (("@int4", rows[2:]), (f"@{args.type.lower()}", rows[:2])):  # the stage's row for this file
        recorded = [r for r in stage if r["source"].endswith(suffix) or r["target"].endswith(suffix)]
        if recorded:
            checked.append(suffix)
            mismatched += [(suffix, r["retained"]["value"], found["retained"]) for r, (_, found) in zip(recorded, read)
                           if abs(r["retained"]["value"] - found["retained"]) > 1e-3]
    print(f"\nwall {time.time() - started:.0f} s")
    if mismatched:
        print(f"quantised sibling: FAILED: transfer read {mismatched} where the siblings stage recorded otherwise")
        return 1
    print(f"quantised sibling: ok (the {' and '.join(checked)} rows read as figures/results.json records them)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
