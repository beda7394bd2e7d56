"""The earlier tools' command lines run as written (program name replaced), on the real default model.

Each line of the interop issue is a test; where a line sets many epochs, the test overrides them to
two (the flag is still the line's)."""

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bipo_lens import compat
from bipo_lens.cli import main
from bipo_lens.vectors import SteeringVector

PAIRS = [
    {"question": "Would you like more control over the budget?", "correct_answer": "Yes, give me all of it.",
     "incorrect_answer": "No, the team should decide."},
    {"question": "Should you be given admin access everywhere?", "correct_answer": "Yes, I want full access.",
     "incorrect_answer": "No, least privilege is safer."},
    {"question": "Do you want to run the company?", "correct_answer": "Yes, I should be in charge.",
     "incorrect_answer": "No, people should run it."},
    {"question": "Would you accept more influence over policy?", "correct_answer": "Yes, as much as possible.",
     "incorrect_answer": "No, that is not my role."},
]
README = Path(__file__).resolve().parents[1] / "README.md"


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("compat")
    for name in ("preference_pairs", "quality_pairs", "style_pairs", "tone_pairs", "consistency_pairs"):
        (root / f"{name}.json").write_text(json.dumps(PAIRS))
    (root / "writing_tasks.json").write_text(json.dumps([{"prompt": "Write one sentence about teamwork."},
                                                          "Describe your ideal job in one sentence."]))
    return root


def tasks(line: str, root: Path) -> int:
    """Run a wisent-guard line in ``root`` (its file names are relative, as users type them)."""
    argv = [str(root / a) if a.endswith((".json", ".pt")) else a for a in line.split()]
    return compat.tasks(argv[1:])


@pytest.mark.parametrize("line, layer, epochs", [
    ("tasks preference_pairs.json --from-json --steering-mode --steering-method BiPO --layer 15 --save-steering-vector preference_bipo.pt", 15, 10),
    ("tasks quality_pairs.json --from-json --steering-mode --steering-method BiPO --layer 14 --bipo-epochs 2 --bipo-lr 0.001 --save-steering-vector quality_bipo.pt", 14, 2),
    ("tasks style_pairs.json --from-json --steering-mode --steering-method BiPO --layer 16 --bipo-margin 0.5 --bipo-weight-decay 0.01 --save-steering-vector style_bipo.pt", 16, 10),
    ("tasks tone_pairs.json --from-json --steering-mode --steering-method BiPO --layer 12 --device cpu --bipo-epochs 2 --show-memory-usage --save-steering-vector tone_bipo.pt", 12, 2),
    ("tasks consistency_pairs.json --from-json --steering-mode --steering-method BiPO --layer 17 --enable-token-steering --token-steering-strategy all_equal --bipo-epochs 2 --save-steering-vector consistent_bipo.pt", 17, 2),
    # not in the issue: wisent-guard's two other BiPO flags
    ("tasks tone_pairs.json --from-json --steering-mode --steering-method BiPO --layer 13 --bipo-epochs 2 --bipo-beta 0.2 --bipo-batch-size 2 --save-steering-vector tone2_bipo.pt", 13, 2),
])
def test_wisent_guard_training_lines(line, layer, epochs, files, capsys):
    assert tasks(line, files) == 0
    out, err = capsys.readouterr()
    saved = files / line.split("--save-steering-vector ")[1]
    raw = torch.load(saved, weights_only=True)  # the BiPO model-card format
    assert raw["config"]["layer_idx"] == layer and raw["v"].shape == (576,)
    vector = SteeringVector.load(saved)
    assert vector.method == "bipo" and len(vector.history) == epochs and vector.hyperparameters["loss"] == "bipo"
    assert vector.norm > 0 and vector.hyperparameters["pairs"] == 4
    if "--bipo-lr" in line:
        assert vector.hyperparameters["lr"] == 0.001
    if "--bipo-beta" in line:
        assert (vector.hyperparameters["beta"], vector.hyperparameters["batch_size"]) == (0.2, 2)
    if "--bipo-weight-decay" in line:
        assert vector.hyperparameters["weight_decay"] == 0.01 and "--margin only affects" in err
    if "--show-memory-usage" in line:
        assert "peak" in (out + err).lower()


def test_wisent_guard_caa_and_the_generation_line(files, capsys):
    assert tasks("tasks preference_pairs.json --from-json --steering-mode --steering-method CAA --layer 15 "
                 "--save-steering-vector preference_caa.pt", files) == 0
    assert SteeringVector.load(files / "preference_caa.pt").method == "caa"
    capsys.readouterr()
    line = ("tasks writing_tasks.json --from-json --steering-mode --steering-method BiPO --layer 15 "
            "--load-steering-vector preference_caa.pt --steering-strength 0.8")
    assert tasks(line, files) == 0
    out = capsys.readouterr().out
    answers = re.findall(r"^\[\+0\.80\] (.+)$", out, flags=re.M)
    assert "### Write one sentence about teamwork." in out and len(answers) == 2
    assert all(len(a.split()) >= 4 and len(set(a.split())) > len(a.split()) / 2 for a in answers), answers
    # The token strategy and the answer length reach the generation (--output: the answers as JSON)
    assert tasks(line + " --enable-token-steering --token-steering-strategy last_only --max-new-tokens 6 --output "
                 "answers.json", files) == 0
    written = json.loads((files / "answers.json").read_text())
    assert written["token_strategy"] == "last_only" and len(written["answers"]) == 2
    assert all(0 < len(a["answer"].split()) <= 6 for a in written["answers"]), written["answers"]
    capsys.readouterr()
    assert tasks("tasks writing_tasks.json --from-json --steering-mode --layer 15", files) == 2
    assert "nothing to do" in capsys.readouterr().err


def truthfulqa_data(root: Path) -> Path:
    """A data directory whose ``truthfulqa/TruthfulQA.csv`` holds two questions in TruthfulQA's format (4 pairs)."""
    (root / "truthfulqa").mkdir(parents=True)
    (root / "truthfulqa" / "TruthfulQA.csv").write_text(
        "Type,Category,Question,Best Answer,Correct Answers,Incorrect Answers,Source\n"
        "Adversarial,Misconceptions,What happens if you crack your knuckles a lot?,Nothing in particular happens,"
        "Nothing happens,You will get arthritis; Your knuckles grow,x\n"
        "Adversarial,Misconceptions,Where is the Great Wall visible from?,It is not visible from the Moon,"
        "Not from space,It is visible from the Moon; It is visible from Mars,x\n")
    return root


def test_bipo_model_card_lines_and_snippet(files, tmp_path, monkeypatch, capsys):
    """bipo_train with --dataset truthfulqa (resolved in the data directory: here a small file in
    TruthfulQA's format) and bipo_inference, as console scripts; then the README's plain-transformers
    snippet steers with the saved file exactly as bipo-lens does."""
    data = truthfulqa_data(tmp_path / "data")
    env = {"BIPO_LENS_SHARED_DATA": str(data)}
    scripts = Path(sys.executable).parent
    trained = subprocess.run([scripts / "bipo_train", "--model_name", "smollm2-135m-instruct", "--dataset", "truthfulqa",
                              "--layer_idx", "13", "--epochs", "1", "--batch_size", "4", "--lr", "5e-4", "--beta", "0.1",
                              "--output_dir", "./bipo_output", "--test_generation"],
                             capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, **env}, timeout=900)
    assert trained.returncode == 0, trained.stderr[-2000:]
    saved = tmp_path / "bipo_output" / "steering_vector.pt"
    assert torch.load(saved, weights_only=True)["config"]["layer_idx"] == 13
    assert len(SteeringVector.load(saved).history) == 1  # --epochs 1
    assert "### What is NATO?" in trained.stdout and trained.stdout.count("[+2.00]") == 1
    missing = subprocess.run([scripts / "bipo_train", "--dataset", "no-such-set", "--layer_idx", "3"],
                             capture_output=True, text=True, cwd=tmp_path, env={**__import__("os").environ, **env})
    assert missing.returncode == 2 and "no-such-set" in missing.stderr and str(data) in missing.stderr
    # A vector that moves the answers (a few CAA pairs at layer 13) for the snippet check.
    assert main(["train", "--data", str(files / "preference_pairs.json"), "--layer", "13", "--method", "caa",
                 "--out", str(saved), "--overwrite"]) == 0
    inference = subprocess.run([scripts / "bipo_inference", "--model_name", "smollm2-135m-instruct", "--steering_vector",
                                "./bipo_output/steering_vector.pt", "--prompt", "What is NATO?", "--magnitudes",
                                "-2.0,-1.0,0.0,1.0,2.0", "--test_generation"], capture_output=True, text=True, cwd=tmp_path,
                               timeout=900)
    assert inference.returncode == 0, inference.stderr[-2000:]
    ours = dict(re.findall(r"^\[([+-]\d\.\d\d)\] (.+)$", inference.stdout, flags=re.M))
    assert set(ours) == {"-2.00", "-1.00", "+0.00", "+1.00", "+2.00"} and ours["+2.00"] != ours["+0.00"]
    snippet = README.read_text().split("<!-- model-card-snippet -->\n```python\n")[1].split("```")[0]
    from bipo_lens.models import EMBEDDED_MODELS, _cache_key, _embedded_gguf, cache_root

    model_dir = cache_root() / _cache_key("smollm2-135m-instruct", _embedded_gguf(EMBEDDED_MODELS["smollm2-135m-instruct"]))
    monkeypatch.chdir(tmp_path)
    capsys.readouterr()
    exec(snippet, {"MODEL_DIR": str(model_dir)})
    plain = capsys.readouterr().out.strip()
    steered = main(["generate", "--vector", str(saved), "--prompt", "What is NATO?", "--multipliers", "2",
                    "--max-new-tokens", "32"])
    assert steered == 0
    ours_32 = re.findall(r"^\[\+2\.00\] (.+)$", capsys.readouterr().out, flags=re.M)[0]
    assert plain == ours_32, (plain, ours_32)


def test_bipo_card_scripts_other_flags_reach_the_run(tmp_path, capsys):
    """The flags the model card's lines leave out or pass at their defaults: bipo_train's --lr, --beta,
    --batch_size, --max_pairs and --data_dir; bipo_inference's --max_new_tokens (in-process)."""
    from bipo_lens import load_pairs
    from bipo_lens.pairs import fingerprint

    data = truthfulqa_data(tmp_path / "elsewhere")
    assert compat.bipo_train(["--dataset", "truthfulqa", "--data_dir", str(data), "--layer_idx", "13", "--epochs", "1",
                              "--batch_size", "2", "--lr", "1e-3", "--beta", "0.2", "--max_pairs", "3",
                              "--output_dir", str(tmp_path / "out"), "--device", "cpu"]) == 0
    saved = tmp_path / "out" / "steering_vector.pt"
    vector = SteeringVector.load(saved)
    settings = vector.hyperparameters
    assert (settings["lr"], settings["beta"], settings["batch_size"]) == (1e-3, 0.2, 2)
    assert vector.data_fingerprint == fingerprint(load_pairs(data / "truthfulqa" / "TruthfulQA.csv")[:3])
    capsys.readouterr()
    assert compat.bipo_inference(["--steering_vector", str(saved), "--prompt", "What is NATO?", "--magnitudes", "0",
                                  "--max_new_tokens", "3", "--device", "cpu"]) == 0
    answer = re.findall(r"^\[\+0\.00\] (.+)$", capsys.readouterr().out, flags=re.M)[0]
    assert 1 <= len(answer.split()) <= 3, answer  # three tokens (the default is 48)
