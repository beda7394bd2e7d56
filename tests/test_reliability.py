"""Faults injected into real processes and real files: kills, interrupts, divergence, races, junk."""

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch.optim.optimizer import register_optimizer_step_post_hook

import bipo_lens
from bipo_lens import BipoLensError, SteeringVector, load_pairs
from bipo_lens.training import train_bipo

TRAIN = ["train", "--data", "optimism", "--layer", "15", "--max-pairs", "8", "--epochs", "4", "--lr", "5e-3"]


def start(*args, env=None):
    return subprocess.Popen([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env)


def wait_for_new_checkpoint(path, process, after=0.0, timeout=600):
    deadline = time.time() + timeout
    while time.time() < deadline:
        if path.exists() and path.stat().st_mtime > after:
            return path.stat().st_mtime
        assert process.poll() is None, process.communicate()
        time.sleep(0.02)
    raise AssertionError("no checkpoint appeared")


def checkpoint_position(path):
    state = torch.load(path, weights_only=True)
    return state["epoch"], state["step_in_epoch"]


def test_interrupt_kill_and_resume_give_the_uninterrupted_vector(model, tmp_path):
    checkpoints, out = tmp_path / "ckpt", tmp_path / "resumed.safetensors"
    checkpoint = checkpoints / "checkpoint.pt"
    # 1. SIGTERM (a polite kill, as schedulers send; the CLI takes it as Ctrl-C) after the first epoch:
    #    exit 130 and a checkpoint written on the signal (Ctrl-C itself: the test below, in process).
    first = start(*TRAIN, "--checkpoint-dir", checkpoints, "--out", out)
    stamp = wait_for_new_checkpoint(checkpoint, first)
    first.send_signal(signal.SIGTERM)
    _, err = first.communicate(timeout=300)
    assert first.returncode == 130 and "checkpoint saved" in err, err
    assert checkpoint.stat().st_mtime > stamp  # written on the signal
    assert checkpoint_position(checkpoint) < (4, 0)
    # 2. A checkpoint is not silently reused: without --resume the run refuses.
    refused = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *TRAIN, "--checkpoint-dir", checkpoints,
                              "--out", out], capture_output=True, text=True)
    assert refused.returncode == 2 and "--resume" in refused.stderr
    # 3. SIGKILL mid-run (no chance to clean up), then resume to the end.
    second = start(*TRAIN, "--checkpoint-dir", checkpoints, "--out", out, "--resume")
    wait_for_new_checkpoint(checkpoint, second, after=checkpoint.stat().st_mtime)
    second.kill()
    second.wait()
    assert not out.exists()
    killed_at = checkpoint_position(checkpoint)
    assert (1, 0) <= killed_at < (4, 0), killed_at
    third = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *TRAIN, "--checkpoint-dir", checkpoints,
                            "--out", out, "--resume"], capture_output=True, text=True)
    assert third.returncode == 0, third.stderr
    resumed = SteeringVector.load(out)
    uninterrupted = train_bipo(model, load_pairs("optimism")[:8], 15, epochs=4, lr=5e-3, progress=False)
    assert torch.equal(resumed.vector, uninterrupted.vector)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in uninterrupted.history]


SHORT = {"epochs": 2, "lr": 5e-3, "batch_size": 2, "progress": False}  # 4 pairs: 2 steps an epoch


@pytest.fixture(scope="module")
def short_run(model):
    return train_bipo(model, load_pairs("optimism")[:4], 15, **SHORT)


@pytest.mark.parametrize("presses", [1, 2])
def test_an_interrupt_just_after_the_optimiser_step_resumes_to_the_same_vector(model, short_run, tmp_path, presses):
    """The narrowest window: Ctrl-C lands after the optimiser moved the vector, before the step is counted.
    Saved there, the checkpoint would redo that step on resume; it is held to the step's end instead.
    A second Ctrl-C stops at once and keeps the last epoch's checkpoint; both resume to the same vector."""
    pairs, steps = load_pairs("optimism")[:4], []

    def ctrl_c_after_third_step(optimizer, args, kwargs):
        steps.append(1)
        if len(steps) == 3:  # epoch 2's first step (2 steps an epoch)
            for _ in range(presses):
                signal.raise_signal(signal.SIGINT)

    hook = register_optimizer_step_post_hook(ctrl_c_after_third_step)
    try:
        with pytest.raises(KeyboardInterrupt) as interrupted:
            train_bipo(model, pairs, 15, checkpoint_dir=tmp_path, **SHORT)
    finally:
        hook.remove()
    assert getattr(interrupted.value, "checkpoint", None) == (tmp_path / "checkpoint.pt" if presses == 1 else None)
    at = checkpoint_position(tmp_path / "checkpoint.pt")
    assert at == ((1, 1) if presses == 1 else (1, 0)), at  # after the step, counted; or the epoch's
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the handler is given back
    resumed = train_bipo(model, pairs, 15, checkpoint_dir=tmp_path, resume=True, **SHORT)
    assert torch.equal(resumed.vector, short_run.vector)
    assert [r["loss"] for r in resumed.history] == [r["loss"] for r in short_run.history]


def test_divergence_stops_with_one_line_and_keeps_the_last_good_checkpoint(tmp_path):
    checkpoints = tmp_path / "ckpt"
    args = ["train", "--data", "optimism", "--layer", 15, "--max-pairs", 2, "--batch-size", 1, "--epochs", 10,
            "--lr", "3e17", "--checkpoint-dir", checkpoints, "--out", tmp_path / "v.safetensors"]
    result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], capture_output=True, text=True)
    assert result.returncode == 2 and "non-finite" in result.stderr.strip().splitlines()[-1], result.stderr
    assert "Traceback" not in result.stderr
    state = torch.load(checkpoints / "checkpoint.pt", weights_only=True)
    assert state["epoch"] >= 1 and torch.isfinite(state["vector"]).all()
    assert not (tmp_path / "v.safetensors").exists()


def test_debug_shows_the_traceback(tmp_path):
    result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "info", tmp_path / "none.safetensors", "--debug"],
                            capture_output=True, text=True)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_two_processes_fill_an_empty_cache_at_once(tmp_path):
    env = {**os.environ, "BIPO_LENS_CACHE": str(tmp_path)}
    code = "import bipo_lens; m = bipo_lens.load_model(device='cpu'); print(m.lens_info.d_model)"
    processes = [subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for _ in range(2)]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], outputs
    assert all(out.strip().endswith("576") for out, _ in outputs)
    entries = sorted(p for p in tmp_path.iterdir() if p.name != ".locks")  # the file locks stay
    assert len(entries) == 1 and not entries[0].name.startswith("."), entries
    assert sum("dequantising" in out for out, _ in outputs) == 1, outputs  # the second one waited
    from bipo_lens.models import _cache_entry_valid

    assert _cache_entry_valid(entries[0])
    manifest = json.loads((entries[0] / "manifest.json").read_text())
    # A flipped byte (same size) is caught by the hash.
    weights = entries[0] / "model.safetensors"
    with open(weights, "r+b") as f:
        f.seek(weights.stat().st_size // 2)
        byte = f.read(1)
        f.seek(-1, 1)
        f.write(bytes([byte[0] ^ 0xFF]))
    assert "model.safetensors" in manifest["files"] and not _cache_entry_valid(entries[0])


@pytest.mark.slow  # 80 s; the two-process race test stays in the default run
def test_a_build_killed_midway_leaves_nothing_that_trips_a_later_load(tmp_path):
    env = {**os.environ, "BIPO_LENS_CACHE": str(tmp_path)}
    code = "import bipo_lens; m = bipo_lens.load_model(device='cpu'); print(m.lens_info.d_model)"
    building = subprocess.Popen([sys.executable, "-c", code], env=env, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 600
    while not any(p.name.startswith(".smollm2") for p in tmp_path.iterdir()):  # its temporary entry
        assert building.poll() is None and time.time() < deadline, building.communicate()
        time.sleep(0.05)
    building.kill()
    building.wait()
    assert not [p for p in tmp_path.iterdir() if not p.name.startswith(".")]  # nothing published
    after = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=600)
    assert after.returncode == 0 and after.stdout.strip().endswith("576"), after.stderr
    leftovers = [p.name for p in tmp_path.iterdir() if p.name.startswith(".") and p.name != ".locks"]
    assert leftovers == []  # the crashed build's temporary directory was removed


VALID_FILES = {
    "p.csv": b"question,matching,not_matching\nq1,m1,n1\nq2,m2,n2\n",
    "ab.csv": b"question,A,B,matching\nq,a,b,A\n",
    "p.json": json.dumps({"pairs": [{"question": "q", "matching": "m", "not_matching": "n"}]}).encode(),
    "e.jsonl": b'{"question": "q", "answer_matching_behavior": " Yes", "answer_not_matching_behavior": " No"}\n' * 2,
}


@settings(max_examples=150, deadline=None, suppress_health_check=list(HealthCheck))
@given(name=st.sampled_from(sorted(VALID_FILES)), data=st.data())
def test_pair_loaders_raise_only_their_own_error_on_junk(tmp_path_factory, name, data):
    original = VALID_FILES[name]
    mutation = data.draw(st.sampled_from(["random", "truncate", "flip", "insert"]))
    if mutation == "random":
        content = data.draw(st.binary(max_size=300))
    else:
        at = data.draw(st.integers(0, len(original)))
        if mutation == "truncate":
            content = original[:at]
        elif mutation == "flip":
            content = original[:at] + bytes([data.draw(st.integers(0, 255))]) + original[at + 1 :]
        else:
            content = original[:at] + data.draw(st.binary(min_size=1, max_size=20)) + original[at:]
    path = tmp_path_factory.mktemp("fuzz") / name
    path.write_bytes(content)
    try:
        pairs = load_pairs(path)
    except BipoLensError as e:
        assert "\n" not in str(e)
    else:
        assert pairs and all(p.question.strip() and p.matching.strip() and p.not_matching.strip() for p in pairs)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(data=st.data())
def test_vector_loaders_raise_only_their_own_error_on_junk(tmp_path_factory, data):
    directory = tmp_path_factory.mktemp("vfuzz")
    good = SteeringVector(torch.ones(8), 2, "m").save(directory / "v.safetensors")
    torch.save({"v": torch.ones(8), "config": {"layer_idx": 2}}, directory / "v.pt")
    suffix = data.draw(st.sampled_from([".safetensors", ".pt"]))
    original = (directory / f"v{suffix}").read_bytes() if suffix == ".pt" else good.read_bytes()
    at = data.draw(st.integers(0, len(original) - 1))
    content = data.draw(st.sampled_from([
        original[:at],
        original[:at] + bytes([original[at] ^ data.draw(st.integers(1, 255))]) + original[at + 1 :],
        data.draw(st.binary(max_size=200)),
    ]))
    assert_loads_or_one_line_error(directory / f"junk{suffix}", content)


def assert_loads_or_one_line_error(path, content):
    path.write_bytes(content)
    try:
        loaded = SteeringVector.load(path, layer=1)
    except BipoLensError as e:
        assert "\n" not in str(e)
    else:
        assert torch.isfinite(loaded.vector).all() and loaded.vector.ndim == 1


@pytest.mark.parametrize("suffix", [".pt", ".safetensors"])
def test_vector_loaders_survive_every_truncation_and_byte_flip(tmp_path, suffix):
    """Exhaustive over cut points, and every byte flipped (0xFF xor): only our one-line error escapes."""
    original_path = tmp_path / f"v{suffix}"
    SteeringVector(torch.ones(8), 2, "m").save(original_path)
    original = original_path.read_bytes()
    variants = [original[:cut] for cut in range(len(original))]
    variants += [original[:i] + bytes([original[i] ^ 0xFF]) + original[i + 1 :] for i in range(len(original))]
    for content in variants:
        assert_loads_or_one_line_error(tmp_path / f"junk{suffix}", content)


def test_a_10_mb_line_duplicates_and_overlong_prompts(tmp_path, model):
    from bipo_lens.tokens import encode_pairs

    huge = "x" * 10_000_000
    csv_path = tmp_path / "huge.csv"
    csv_path.write_text(f"question,matching,not_matching\n{huge},a,b\n")
    with pytest.raises(BipoLensError, match="malformed CSV") as error:
        load_pairs(csv_path)
    assert len(str(error.value)) < 300
    json_path = tmp_path / "huge.json"
    json_path.write_text(json.dumps([{"question": huge, "matching": "a", "not_matching": "b"}]))
    assert len(load_pairs(json_path)[0].question) == 10_000_000
    duplicated = tmp_path / "dup.json"
    duplicated.write_text(json.dumps([{"question": "q", "matching": "a", "not_matching": "b"}] * 3))
    with pytest.warns(UserWarning, match="2 duplicate pairs"):
        assert len(load_pairs(duplicated)) == 3
    # A prompt beyond the cap keeps its last tokens: the question's end and the assistant header.
    long_question = "Tell me about this. " * 400 + "Would you like more power?"
    [(matching, _)] = encode_pairs(model, [bipo_lens.PreferencePair(long_question, "Yes.", "No.")], max_prompt_tokens=128)
    assert matching.prompt_len == 128
    tail = model.tokenizer.decode(matching.ids[:matching.prompt_len])
    assert "Would you like more power?" in tail and tail.rstrip().endswith("assistant")
