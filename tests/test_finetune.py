"""The fine-tuned sibling: made from the default model by LoRA, merged, cached with its recipe.

The real sibling takes 150 steps (about 20 min on 2 cores, ``benchmarks/records``); here the same
code runs a 3-step recipe under a test name into a temporary cache, whose base-model entry is the
real one (linked, not rebuilt)."""

import dataclasses

import torch

from bipo_lens import finetune, load_model
from bipo_lens.finetune import Recipe, corpus_sha256, docs_corpus, sibling_fingerprint
from bipo_lens.generation import generate_grid
from bipo_lens.models import DEFAULT_MODEL, EMBEDDED_MODELS, _cache_entry_valid, _cache_key, _embedded_gguf, \
    _sibling_entry, cache_root, sibling_record


def test_docs_corpus_is_fixed_and_the_recipe_is_in_the_key(monkeypatch):
    turns = docs_corpus()
    assert len(turns) > 500 and turns == docs_corpus()
    assert all(q.startswith("In Python, what does `") and len(a) >= 40 for q, a in turns)
    assert any(q == "In Python, what does `json.dumps` do?" for q, _ in turns)
    assert corpus_sha256(turns) != corpus_sha256(turns[1:])
    name = "smollm2-135m-pydoc"
    before = sibling_fingerprint(name)
    monkeypatch.setitem(finetune.SIBLINGS, name, dataclasses.replace(finetune.SIBLINGS[name], steps=151))
    assert sibling_fingerprint(name) != before


def test_sibling_is_fine_tuned_once_cached_with_its_recipe_and_still_answers(tmp_path, monkeypatch, capfd, model):
    base_entry = cache_root() / _cache_key(DEFAULT_MODEL, _embedded_gguf(EMBEDDED_MODELS[DEFAULT_MODEL]))
    assert _cache_entry_valid(base_entry)  # the session's model fixture built it
    monkeypatch.setenv("BIPO_LENS_CACHE", str(tmp_path))
    (tmp_path / base_entry.name).symlink_to(base_entry)
    name = "test-sibling"
    monkeypatch.setitem(finetune.SIBLINGS, name, Recipe(base=DEFAULT_MODEL, steps=3, batch_size=2, max_tokens=48))

    sibling = load_model(name, device="cpu")
    built = capfd.readouterr().out
    assert "fine-tuning step 3/3" in built and "cached in" in built
    assert _cache_entry_valid(_sibling_entry(name))
    made = sibling_record(name)
    assert made["recipe"]["steps"] == 3 and made["corpus"]["sha256"] == corpus_sha256(docs_corpus())
    assert [step for step, _ in made["losses"]] == [0, 2] and all(loss > 0 for _, loss in made["losses"])

    # LoRA moved the adapted weights a little and left the rest alone.
    theirs, ours = model.lens_raw.model, sibling.lens_raw.model
    q_base, q_new = theirs.layers[10].self_attn.q_proj.weight, ours.layers[10].self_attn.q_proj.weight
    change = float((q_new - q_base).norm() / q_base.norm())
    assert 0 < change < 0.05, change
    assert torch.equal(theirs.embed_tokens.weight, ours.embed_tokens.weight)
    assert torch.equal(theirs.layers[10].input_layernorm.weight, ours.layers[10].input_layernorm.weight)

    again = load_model(name, device="cpu")  # from the cache: no second fine-tuning
    assert "fine-tuning" not in capfd.readouterr().out
    assert torch.equal(again.lens_raw.model.layers[10].self_attn.q_proj.weight, q_new)
    answer = generate_grid(again, ["What is the capital of France?"], [], [0.0], max_new_tokens=16)[0][0]
    assert "Paris" in answer, answer
