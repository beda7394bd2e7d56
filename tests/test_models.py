import json
import os
import shutil
import subprocess
import sys

import pytest
import torch
from transformers import AutoModelForCausalLM

from bipo_lens import BipoLensError, load_model
from bipo_lens.model_names import DEFAULT_MODEL, peek
from bipo_lens.models import (
    EMBEDDED_MODELS,
    _cache_entry_valid,
    _cache_key,
    _embedded_gguf,
    build_prompt,
    cache_root,
    check_layer,
    info,
    run_from_layer,
    run_to_layer,
    unembed,
)
from bipo_lens.steering import steer
from bipo_lens.vectors import SteeringVector


def _plain_model():
    spec = EMBEDDED_MODELS["smollm2-135m-instruct"]
    entry = cache_root() / _cache_key("smollm2-135m-instruct", _embedded_gguf(spec))
    return AutoModelForCausalLM.from_pretrained(entry, dtype=torch.float32).eval(), entry


@pytest.fixture(scope="module")
def plain():
    return _plain_model()[0]


def test_default_model_shape(model):
    assert info(model).n_layers == 30 and info(model).d_model == 576 and info(model).chat
    assert peek(DEFAULT_MODEL) == info(model).shape  # what commands check a --layer against before loading
    assert "blocks.15.hook_resid_post" in model.hook_dict


def test_bridge_logits_equal_plain_transformers(model, plain):
    tokens = model.tokenizer("The capital of France is", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(model(tokens), plain(tokens).logits, atol=1e-4)


def test_hook_steering_equals_adding_to_decoder_layer_output(model, plain):
    """A vector at blocks.L.hook_resid_post is the same as one added to layer L's output in HF."""
    layer, vector = 11, torch.randn(576, generator=torch.Generator().manual_seed(0)) * 4
    tokens = model.tokenizer("Tell me about your goals.", return_tensors="pt").input_ids

    def add(module, inputs, output):
        return (output[0] + vector,) + tuple(output[1:]) if isinstance(output, tuple) else output + vector

    handle = plain.model.layers[layer].register_forward_hook(add)
    try:
        with torch.no_grad():
            expected = plain(tokens).logits
    finally:
        handle.remove()
    with torch.no_grad(), steer(model, [SteeringVector(vector, layer)], [1.0]):
        steered = model(tokens)
    with torch.no_grad():
        unsteered = model(tokens)
    assert torch.allclose(steered, expected, atol=1e-3)
    assert (steered - unsteered).abs().max() > 0.1


def test_split_forward_matches_the_bridge(model):
    """The fast trainer's two halves (raw model, no hook points) equal the bridge's forward."""
    tokens = model.tokenizer("One, two, three, four", return_tensors="pt").input_ids
    with torch.no_grad():
        full, cache = model.run_with_cache(tokens, names_filter="blocks.20.hook_resid_post")
        resid = run_to_layer(model, tokens, 20)
        resumed = unembed(model, run_from_layer(model, resid, 20))
    assert torch.allclose(resid, cache["blocks.20.hook_resid_post"], atol=1e-4)
    assert torch.allclose(full, resumed, atol=1e-4)


def test_chat_prompt_has_system_prompt_and_assistant_header(model):
    prompt = build_prompt(model, "Hi?")
    assert "You are a helpful, honest and concise assistant." in prompt
    assert prompt.rstrip().endswith("assistant")


def test_layer_out_of_range_is_a_clear_error(model):
    for layer in (30, 99, -1):  # 30 blocks: 0..29, and the first one past the end is refused too
        with pytest.raises(BipoLensError, match=f"layer {layer} is out of range: .* has layers 0..29"):
            check_layer(model, layer)
    check_layer(model, 29)
    check_layer(model, 0)


def test_offline_hub_id_fails_with_one_line_naming_embedded_models(tmp_path):
    """huggingface_hub reads HF_HUB_OFFLINE when it is imported, so a fresh process (as a user starts
    one) is what honours it; inside this one the hub would be tried over the network first."""
    result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "train", "--model", "someone/no-such-model-xyz",
                             "--data", "optimism", "--layer", "3", "--out", str(tmp_path / "v.safetensors")],
                            capture_output=True, text=True, timeout=300,
                            env={**os.environ, "HF_HUB_OFFLINE": "1"})
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert result.returncode == 2 and "Traceback" not in result.stderr, result.stderr
    assert lines[-1].startswith("bipo-lens: error: could not load model") and "smollm2-135m-instruct" in lines[-1]
    assert not (tmp_path / "v.safetensors").exists()


def test_corrupt_cache_entry_is_detected_and_rebuilt(tmp_path, monkeypatch):
    _, entry = _plain_model()
    copy = tmp_path / entry.name
    shutil.copytree(entry, copy)
    assert _cache_entry_valid(copy)
    with open(copy / "model.safetensors", "r+b") as f:  # truncate: a partial write
        f.truncate(1000)
    assert not _cache_entry_valid(copy)
    monkeypatch.setenv("BIPO_LENS_CACHE", str(tmp_path))
    rebuilt = load_model(device="cpu")
    assert _cache_entry_valid(copy)
    assert json.loads((copy / "manifest.json").read_text())["files"]
    assert info(rebuilt).d_model == 576


def test_local_hugging_face_directory_loads(model):
    _, entry = _plain_model()
    local = load_model(str(entry), device="cpu")
    tokens = model.tokenizer("Local directories load too", return_tensors="pt").input_ids
    with torch.no_grad():
        assert torch.allclose(local(tokens), model(tokens), atol=1e-5)
    assert info(local).chat and info(local).model_id == str(entry)
    assert peek(str(entry)) == info(local).shape  # read from its config.json
