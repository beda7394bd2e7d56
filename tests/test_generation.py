"""The generation engine on the real default model: sane text, cache == recompute, padding, seeds.

These are the checks that catch a broken generation path (transformers 5.24 turned every answer
into ``La-----`` while the rest of the suite stayed green); ``./dev canary`` runs them on the
newest dependency versions.
"""

import json
import subprocess
import sys

import pytest
import torch

from bipo_lens import Sampling, SteeringVector, TokenStrategy, generate, generate_batch, generate_samples
from bipo_lens.models import build_prompt, stop_token_ids, tokenize_prompt
from bipo_lens.steering import STRATEGIES, steer_raw_layers

QUESTION = "What is the capital of France?"


def distinct_token_ratio(model, text: str) -> float:
    ids = model.tokenizer(text, add_special_tokens=False)["input_ids"]
    return len(set(ids)) / len(ids) if ids else 0.0


def random_vector(seed: int, norm: float, layer: int = 15) -> SteeringVector:
    v = torch.randn(576, generator=torch.Generator().manual_seed(seed))
    return SteeringVector(v / v.norm() * norm, layer)


@pytest.mark.sanity
def test_unsteered_greedy_answer_names_paris(model):
    answer = generate(model, QUESTION, [], [0.0], max_new_tokens=24)[0]
    assert "Paris" in answer, answer
    assert distinct_token_ratio(model, answer) > 0.4, answer


@torch.no_grad()
def recompute_reference(model, question: str, vector: SteeringVector, multipliers: list[float],
                        strategy: TokenStrategy, max_new_tokens: int) -> list[str]:
    """Greedy decoding without a cache, one row per multiplier (same prompt: no padding): every
    step runs the whole sequence again, each position weighted by the written definition (prompt
    positions over the prompt, generated ones as the last token they were)."""
    prompt = tokenize_prompt(model, build_prompt(model, question))
    stops = stop_token_ids(model)
    tokens = torch.tensor([prompt] * len(multipliers))
    lengths = torch.full((len(multipliers),), len(prompt))
    scale = torch.tensor(multipliers)
    for _ in range(max_new_tokens):
        with steer_raw_layers(model, [(vector.layer, vector.vector, scale)], strategy, lengths):
            logits = model.lens_raw(tokens, use_cache=False, logits_to_keep=1).logits
        tokens = torch.cat([tokens, logits[:, -1].argmax(-1, keepdim=True)], dim=1)
    answers = []
    for row in tokens[:, len(prompt):].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row))
        answers.append(model.tokenizer.decode(row[:cut], skip_special_tokens=True).strip())
    return answers


# Three strategies (every position, the last token, a per-token schedule) in the default run; the
# other five share their code paths and run with --slow.
@pytest.mark.sanity
@pytest.mark.parametrize("name", [s if s in ("all", "last_only", "exponential_decay") else pytest.param(s, marks=pytest.mark.slow)
                                  for s in STRATEGIES])
def test_cached_generation_equals_full_recompute(model, name):
    strategy = TokenStrategy(name, decay_rate=0.8, min_strength=0.2, max_strength=1.0)
    vector = random_vector(7, 6.0)
    cached = generate(model, QUESTION, [vector], [-2.0, 0.0, 2.0], strategy, max_new_tokens=16)
    assert cached == recompute_reference(model, QUESTION, vector, [-2.0, 0.0, 2.0], strategy, 16)
    if name not in ("first_only", "second_to_last"):  # one prompt token alone may not move this answer
        assert cached[0] != cached[1] or cached[2] != cached[1], cached  # the vector did act


@pytest.mark.sanity
@pytest.mark.parametrize("name", ["all", "last_only", "linear_decay"])
def test_a_padded_row_gives_the_tokens_it_gives_alone(model, name):
    strategy = TokenStrategy(name)
    vector = random_vector(3, 5.0)
    questions = ["Hi.", QUESTION, "Describe, in two sentences, what you would do with far more influence over world affairs."]
    prompts = [build_prompt(model, q, "You are a helpful, honest and concise assistant.") for q in questions]
    rows = [[(vector, m)] for m in (1.5, -1.0, 2.0)]
    together = generate_batch(model, prompts, rows, strategy, max_new_tokens=20)
    alone = [generate_batch(model, [p], [r], strategy, max_new_tokens=20)[0] for p, r in zip(prompts, rows)]
    assert together == alone
    assert len(set(together)) == 3


@pytest.mark.sanity
def test_sampling_is_reproducible_per_seed(model):
    question = "Tell me a short story about a lighthouse."
    draw = lambda seed: generate(model, question, [], [0.0, 0.0, 0.0], max_new_tokens=16,  # noqa: E731
                                 sampling=Sampling(temperature=1.0, top_p=0.95, seed=seed))
    first = draw(1)
    assert draw(1) == first
    assert len(set(first)) > 1  # rows in one batch draw different samples
    assert draw(2) != first
    greedy = generate(model, question, [], [0.0, 0.0], max_new_tokens=16)
    assert greedy[0] == greedy[1]
    # The settings reach the sampler: a nucleus of ~0 or a temperature near 0 leaves only the top token.
    for nearly_greedy in (Sampling(temperature=1.0, top_p=1e-6, seed=1), Sampling(temperature=1e-4, seed=1)):
        assert generate(model, question, [], [0.0, 0.0, 0.0], max_new_tokens=16, sampling=nearly_greedy) == [greedy[0]] * 3
    sampling = Sampling(temperature=1.0, seed=3)
    samples = generate_samples(model, [question, "Name a colour."], [], [0.0], n=4, sampling=sampling, max_new_tokens=8)
    assert [[len(cell) for cell in row] for row in samples] == [[4], [4]]
    assert len(set(samples[0][0])) > 1 and all(s.strip() for s in samples[1][0])
    assert generate_samples(model, [question, "Name a colour."], [], [0.0], n=4, sampling=sampling,
                            max_new_tokens=8) == samples


@pytest.mark.sanity
def test_demo_answers_are_language_and_move_with_the_multiplier(model, tmp_path):
    """The README's main job, shortened: every answer is text, not one character repeated, and
    its flags (layer, epochs, lr, pairs, questions, answer length) are the run's.

    Floor: the distinct-token ratio (unique tokens / tokens) of an answer. The broken path's
    ``I-------`` answers score 0.05-0.15; coherent 32-token answers of this model score 0.5-0.95,
    and the demo's steered ones (multiplier +/-2) no lower than 0.35 in our runs. 0.3 sits between.
    """
    result = subprocess.run([sys.executable, "-m", "bipo_lens.cli", "demo", "--epochs", "1", "--max-pairs", "8", "--questions", "2",
                             "--max-new-tokens", "32", "--layer", "14", "--lr", "0.01", "--out-dir", str(tmp_path),
                             "--device", "cpu"],
                            capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stderr[-2000:]
    answers = json.loads((tmp_path / "demo.json").read_text())["answers"]
    assert len(answers) == 2 * 2 * 5
    bipo, caa = (SteeringVector.load(tmp_path / f"{m}.safetensors") for m in ("bipo", "caa"))
    assert bipo.layer == caa.layer == 14 and bipo.hyperparameters["lr"] == 0.01 and len(bipo.history) == 1
    assert "== power_seeking: 8 training pairs" in result.stdout
    assert max(len(model.tokenizer(a["answer"], add_special_tokens=False)["input_ids"]) for a in answers) <= 32
    for a in answers:
        text = a["answer"]
        assert text and len(set(text.replace(" ", ""))) > 3, a
        assert distinct_token_ratio(model, text) > 0.3, a
    # One epoch leaves BiPO's vector short (the full demo's ten move it); CAA's must move every answer.
    for question in {a["question"] for a in answers}:
        texts = {a["multiplier"]: a["answer"] for a in answers if a["method"] == "CAA" and a["question"] == question}
        assert texts[-2.0] != texts[0.0] and texts[2.0] != texts[0.0], texts


def test_scoring_in_padded_batches_reads_as_one_row_at_a_time(model, monkeypatch):
    """``score_tokens``: rows of different lengths, each with its own steering, scored in one
    right-padded pass read as they do alone (a logits budget of one row forces that), in the order
    given, whatever order the passes take them in."""
    from bipo_lens import generation

    rows = [tokenize_prompt(model, text) for text in (
        "The capital of France is Paris.", "Hi", "A much longer sentence about the sea, the sky and the birds above.")]
    steering = [[(random_vector(1, 8.0), 1.0)], [], [(random_vector(1, 8.0), -2.0), (random_vector(2, 4.0, 9), 1.0)]]
    passes = []
    handle = model.lens_raw.register_forward_pre_hook(lambda module, args, kwargs: passes.append(
        kwargs["input_ids"].shape[0]), with_kwargs=True)
    try:
        together = generation.score_tokens(model, rows, steering, top_k=3)
        monkeypatch.setattr(generation, "SCORING_LOGITS", 1)  # one row a pass
        alone = generation.score_tokens(model, rows, steering, top_k=3)
    finally:
        handle.remove()
    assert passes == [3, 1, 1, 1]  # the logits budget splits the batch
    assert [s.tokens for s in together] == [s.tokens for s in alone] == rows
    for a, b in zip(together, alone):
        assert a.logprobs[0] is None and a.logprobs[1:] == pytest.approx(b.logprobs[1:], abs=1e-4)
        assert a.next_token == b.next_token and [t for t, _ in a.next_top] == [t for t, _ in b.next_top]
    unsteered = generation.score_tokens(model, rows[:1], [[]])[0]
    assert unsteered.logprobs[1:] != pytest.approx(alone[0].logprobs[1:], abs=1e-2)  # the steering reached the pass
