"""Scale as a tested property: config-only model shapes, data-parallel training under torchrun."""

import argparse
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from bipo_lens.errors import BipoLensError
from bipo_lens.model_names import ModelShape, peek, random_shapes
from bipo_lens.models import load_options
from bipo_lens.shapes import byte_tokenizer, shape_config
from bipo_lens.vectors import SteeringVector

BIPO_LENS = Path(sys.executable).parent / "bipo-lens"


def run(command, env=None, timeout=900):
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, **(env or {})})


@pytest.mark.parametrize("shape, billions, layers, width", [
    ("random:llama-2-7b", 6.74, 32, 4096), ("random:mistral-7b", 7.24, 32, 4096),
    ("random:llama-3.2-1b", 1.24, 16, 2048), ("random:smollm2-135m", 0.135, 30, 576),
])
def test_shapes_have_the_published_sizes(shape, billions, layers, width):
    """The written configs give the published parameter counts (instantiated on the meta device: no memory)."""
    from transformers import AutoModelForCausalLM

    assert shape in random_shapes()
    config = shape_config(shape)
    with torch.device("meta"):
        model = AutoModelForCausalLM.from_config(config)
    assert sum(p.numel() for p in model.parameters()) / 1e9 == pytest.approx(billions, rel=0.01)
    assert (config.num_hidden_layers, config.hidden_size) == (layers, width)
    assert peek(shape) == ModelShape(shape, layers, width)  # what commands check --layer against before loading


def test_byte_tokenizer_round_trips_any_text_and_fits_every_vocabulary():
    tokenizer = byte_tokenizer()
    text = "Grüße, 東京! <|im_end|> tabs\tand\nlines"
    ids = tokenizer(text, add_special_tokens=False)["input_ids"]
    assert tokenizer.decode(ids) == text and tokenizer.convert_tokens_to_ids("<|im_end|>") in ids
    assert max(tokenizer.get_vocab().values()) < min(shape_config(s).vocab_size for s in random_shapes())
    prompt = tokenizer.apply_chat_template([{"role": "user", "content": "hi"}], tokenize=False, add_generation_prompt=True)
    assert prompt == "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


def test_a_random_shape_loads_in_bf16_and_trains_from_the_cli(tmp_path):
    """``random:smollm2-135m`` in bf16: weights built in bf16 with the published count; a vector
    trained from the CLI; an unknown shape is one line."""
    code = ("import resource, torch, bipo_lens as bl; m = bl.load_model('random:smollm2-135m', device='cpu', "
            "dtype='bfloat16'); p = list(m.lens_raw.parameters()); "
            "print(p[0].dtype, sum(x.numel() for x in p), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)")
    loaded = run([sys.executable, "-c", code])
    assert loaded.returncode == 0, loaded.stderr
    dtype, params, rss_mb = loaded.stdout.split()[-3:]
    assert dtype == "torch.bfloat16" and int(params) == 134515008
    assert int(rss_mb) > 0  # peak RSS is reported by the benchmark; a bound here varied with the machine's load
    out = tmp_path / "v.safetensors"
    trained = run([BIPO_LENS, "train", "--model", "random:smollm2-135m", "--data", "optimism", "--layer", 3,
                   "--max-pairs", 4, "--epochs", 1, "--max-response-tokens", 8, "--out", out])
    assert trained.returncode == 0, trained.stderr
    vector = SteeringVector.load(out)
    assert vector.model_id == "random:smollm2-135m" and vector.norm > 0
    unknown = run([BIPO_LENS, "train", "--model", "random:gpt-9", "--data", "optimism", "--layer", 3, "--out", out,
                   "--overwrite"])
    assert unknown.returncode == 2 and unknown.stderr.strip().splitlines()[-1].startswith("bipo-lens: error: unknown model shape")
    assert "random:llama-2-7b" in unknown.stderr and "Traceback" not in unknown.stderr


# No warm-up and a large rate, so the vector reaches a norm (3.77) where the sign of d matters: near v = 0
# both directions give the same gradient (d * d = 1), and at lr 5e-3 (norm 0.38 even without warm-up) a d
# drawn per rank passed as one d shared by all ranks (cosine 0.99998); here it gives 0.998, caught
# (benchmarks/records/mutations-2026-11-28.txt).
TRAIN = ["train", "--data", "optimism", "--layer", 15, "--max-pairs", 8, "--epochs", 4, "--batch-size", 4,
         "--max-response-tokens", 12, "--bipo-lr", 5e-2, "--warmup-steps", 0]
TORCHRUN = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node", 2, "--no-python", BIPO_LENS]
TWO_CORES = {"OMP_NUM_THREADS": "1"}  # two ranks on two cores


@pytest.fixture(scope="module")
def one_process(tmp_path_factory) -> SteeringVector:
    """The reference: the same training in a single process, uninterrupted."""
    out = tmp_path_factory.mktemp("one") / "one.safetensors"
    single = run([BIPO_LENS, *TRAIN, "--out", out])
    assert single.returncode == 0, single.stderr
    vector = SteeringVector.load(out)
    assert vector.norm > 0.01  # it moved: equality of two zero vectors would prove nothing
    return vector


def assert_same_training(one: SteeringVector, other: SteeringVector) -> None:
    cosine = float(one.vector @ other.vector / (one.vector.norm() * other.vector.norm()))
    assert cosine >= 0.9999 and one.norm == pytest.approx(other.norm, rel=1e-3), (cosine, one.norm, other.norm)
    assert [r["loss"] for r in other.history] == pytest.approx([r["loss"] for r in one.history], rel=1e-4)


def test_two_ranks_under_torchrun_give_the_one_process_vector(one_process, tmp_path):
    """``torchrun --nproc-per-node 2 --no-python bipo-lens train ...`` (gloo, CPU) takes the steps one
    process takes: same vector (cosine >= 0.9999) and losses; only rank 0 writes."""
    ranks = run([*TORCHRUN, *TRAIN, "--out", tmp_path / "two.safetensors", "--checkpoint-dir", tmp_path / "ckpt"],
                env=TWO_CORES)
    assert ranks.returncode == 0, ranks.stderr[-3000:]
    assert ranks.stdout.count("saved ") == 1  # rank 0 alone reports and saves
    assert_same_training(one_process, SteeringVector.load(tmp_path / "two.safetensors"))
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["checkpoint.pt"]


@pytest.mark.slow  # 45 s; the 2-rank equivalence test above stays in the default run
def test_a_two_rank_run_stopped_midway_resumes_in_one_process(one_process, tmp_path):
    """A checkpoint holds the global state (vector, optimiser, schedule, pair order, random state),
    not a rank's: a torchrun job stopped with SIGTERM (as a scheduler stops it) after its first epoch
    resumes in a single process, and ends with the vector of a run that was never stopped."""
    checkpoint, out = tmp_path / "ckpt" / "checkpoint.pt", tmp_path / "resumed.safetensors"
    job = subprocess.Popen([str(c) for c in [*TORCHRUN, *TRAIN, "--out", out, "--checkpoint-dir", checkpoint.parent]],
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env={**os.environ, **TWO_CORES})
    deadline = time.monotonic() + 600
    while not checkpoint.exists():  # the end of the first epoch
        assert job.poll() is None and time.monotonic() < deadline, job.communicate()[1][-3000:]
        time.sleep(0.02)
    job.send_signal(signal.SIGTERM)
    _, err = job.communicate(timeout=300)
    assert job.returncode != 0 and not out.exists(), err[-3000:]
    state = torch.load(checkpoint, weights_only=True)
    assert (1, 0) <= (state["epoch"], state["step_in_epoch"]) < (4, 0), (state["epoch"], state["step_in_epoch"])
    resumed = run([BIPO_LENS, *TRAIN, "--out", out, "--checkpoint-dir", checkpoint.parent, "--resume"])
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    assert_same_training(one_process, SteeringVector.load(out))


SPREAD = ["--device-map", "auto", "--max-memory", "cpu=250MB"]  # SmolLM2 in fp32 is 540 MB: the rest goes to disk


def test_a_model_spread_over_cpu_and_disk_trains_and_steers_as_the_whole_model(one_process, model, tmp_path):
    """``--device-map auto`` (accelerate) with too little memory for the model: the blocks that do
    not fit are offloaded to disk and brought in for each forward, and the vector trained through
    them is the one-process vector (cosine >= 0.9999, same losses). Generation through the spread
    model gives the whole model's text, steered both ways; bad placement flags are one line."""
    import bipo_lens
    from bipo_lens.generation import generate
    from bipo_lens.pairs import load_pairs
    from bipo_lens.training.caa import train_caa

    out = tmp_path / "spread.safetensors"
    trained = run([BIPO_LENS, *TRAIN, *SPREAD, "--out", out])
    assert trained.returncode == 0, trained.stderr[-3000:]
    vector = SteeringVector.load(out)
    assert_same_training(one_process, vector)
    assert vector.record["device"]["device_map"].keys() == {"cpu", "disk"}

    spread = bipo_lens.load_model(device_map="auto", max_memory={"cpu": "250MB"})
    offloaded = [name for name, where in spread.lens_info.device_map.items() if where == "disk"]
    assert "model.layers.29" in offloaded and "model.layers.0" not in offloaded
    caa = train_caa(model, load_pairs("optimism")[:8], 15)
    question = "How do you feel about the next ten years?"
    whole = generate(model, question, [caa], [-3.0, 3.0], max_new_tokens=20)
    assert generate(spread, question, [caa], [-3.0, 3.0], max_new_tokens=20) == whole
    assert whole[0] != whole[1] and all(len(text.split()) >= 5 for text in whole), whole

    bad = run([BIPO_LENS, *TRAIN, "--device-map", "auto", "--max-memory", "cpu", "--out", tmp_path / "bad.safetensors"])
    assert bad.returncode == 2 and "Traceback" not in bad.stderr, bad.stderr[-2000:]
    assert bad.stderr.strip().splitlines()[-1].startswith("bipo-lens: error: --max-memory wants DEVICE=SIZE")
    assert not (tmp_path / "bad.safetensors").exists()
    with pytest.raises(BipoLensError, match="only applies with --device-map"):
        load_options(argparse.Namespace(device="cpu", max_memory="cpu=1GB"))


def test_maps_that_mix_a_gpu_with_offload_are_told_apart():
    """TransformerLens 4.3 refuses a device map that mixes a GPU with CPU or disk offload; the loader
    boots it without seeing such a map (on an H200, 2026-11-28: the default model's shape over GPU 0
    and the CPU trained the one-device vector, cosine 1.0000; benchmarks/GPU.md). Which maps are such."""
    from bipo_lens.models import _mixes_gpu_and_offload

    assert _mixes_gpu_and_offload({"model.embed_tokens": 0, "model.layers.7": "cpu"})
    assert _mixes_gpu_and_offload({"model.layers.0": "cuda:1", "lm_head": "disk"})
    assert not _mixes_gpu_and_offload({"model.layers.0": "cpu", "lm_head": "disk"})
    assert not _mixes_gpu_and_offload({"model.layers.0": 0, "model.layers.9": 1})
    assert not _mixes_gpu_and_offload(None)


def test_the_benchmark_s_flop_count_is_what_torch_counts_in_the_step(model):
    """MFU's numerator: the FLOPs the benchmark divides by a step's time are the matrix products
    torch's own counter sees in that step (the blocks after L forward, the vector's gradient back,
    the response logits), at a shallow and a middle layer. Attention's score products are counted
    by neither (on the CPU torch counts none for SDPA), so the MFU it prints leans low, never high."""
    from torch.utils.flop_counter import FlopCounterMode

    from bipo_lens import load_pairs
    from bipo_lens.bench import _flops_per_step
    from bipo_lens.scoring import FastPath, PairScorer
    from bipo_lens.tokens import encode_pairs

    pairs = load_pairs("power_seeking")[:4]
    for layer in (3, 15):
        scorer = PairScorer(model, encode_pairs(model, pairs, 64), layer, FastPath(), None)
        vector = torch.zeros(576, requires_grad=True)
        with FlopCounterMode(display=False) as counter:
            scorer.logps(range(len(pairs)), vector, 1.0).sum().backward()
        assert _flops_per_step(model, pairs, layer, 64) == pytest.approx(counter.get_total_flops(), rel=0.01)
