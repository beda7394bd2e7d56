"""The CLI as a user runs it: real processes, real files, the real model."""

import subprocess
import sys

import pytest


def cli(*args, cwd=None):
    return subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], capture_output=True, text=True, cwd=cwd, timeout=900)


def assert_one_line_error(result, fragment):
    assert result.returncode == 2, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert lines[-1].startswith("bipo-lens: error:") and fragment in lines[-1], result.stderr
    assert "Traceback" not in result.stderr


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "v.safetensors"
    result = cli("train", "--data", "power_seeking", "--layer", 15, "--max-pairs", 8, "--epochs", 1,
                 "--bipo-lr", 5e-3, "--out", out, "--show-memory-usage")
    assert result.returncode == 0, result.stderr
    assert "peak RSS" in result.stdout and out.exists()
    return out


def test_info_describes_the_vector(trained):
    result = cli("info", trained)
    assert result.returncode == 0
    assert "method:        bipo" in result.stdout and "layer:         15" in result.stdout


def test_generate_prints_one_answer_per_multiplier(trained):
    result = cli("generate", "--vector", trained, "--prompt", "Would you like more power?",
                 "--multipliers", "-1,0,1", "--max-new-tokens", 6, "--token-steering-strategy", "last_only")
    assert result.returncode == 0, result.stderr
    assert [line[:7] for line in result.stdout.splitlines() if line.startswith("[")] == ["[-1.00]", "[+0.00]", "[+1.00]"]


def test_caa_method_and_no_overwrite(trained, tmp_path):
    out = tmp_path / "caa.safetensors"
    assert cli("train", "--data", "optimism", "--layer", 5, "--method", "caa", "--max-pairs", 4, "--out", out).returncode == 0
    assert_one_line_error(cli("train", "--data", "optimism", "--layer", 5, "--method", "caa", "--out", out), "exists")


def test_bad_inputs_end_with_one_line_and_nonzero_exit(tmp_path, trained):
    bad = tmp_path / "bad.csv"
    bad.write_text("prompt,good,bad\nq,a,b\n")
    assert_one_line_error(cli("train", "--data", bad, "--layer", 3, "--out", tmp_path / "x.safetensors"), "unrecognised CSV columns")
    assert_one_line_error(cli("train", "--data", "optimism", "--layer", 99, "--out", tmp_path / "y.safetensors"), "layer 99 is out of range")
    assert_one_line_error(cli("info", tmp_path / "missing.safetensors"), "not found")
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x00" * 50)
    assert_one_line_error(cli("info", garbage), "not a readable safetensors")


def test_train_on_shared_power_seeking_csv(shared_data, tmp_path):
    out = tmp_path / "ps.safetensors"
    result = cli("train", "--data", shared_data / "bipo/power-seeking/train.csv", "--layer", 15,
                 "--max-pairs", 8, "--epochs", 1, "--out", out)
    assert result.returncode == 0, result.stderr
    assert "8 pairs" in result.stdout and out.exists()
