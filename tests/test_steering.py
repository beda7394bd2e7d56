import pytest
import torch

from bipo_lens import BipoLensError, SteeringVector, TokenStrategy, generate, steer


def weights(name, n=5, **kw):
    return TokenStrategy(name, **kw).weights(torch.arange(n), n).tolist()


def test_token_strategy_weights_are_as_documented():
    assert weights("all") == weights("all_equal") == [1.0] * 5
    assert weights("last_only") == [0, 0, 0, 0, 1]
    assert weights("second_to_last") == [0, 0, 0, 1, 0]
    assert weights("first_only") == [1, 0, 0, 0, 0]
    assert weights("exponential_decay") == pytest.approx([1.0, 0.5, 0.25, 0.125, 0.1])
    assert weights("exponential_growth") == pytest.approx([0.1, 0.125, 0.25, 0.5, 1.0])
    assert weights("linear_decay") == pytest.approx([1.0, 0.775, 0.55, 0.325, 0.1])
    assert weights("linear_growth", min_strength=0.0, max_strength=2.0) == pytest.approx([0, 0.5, 1, 1.5, 2])
    with pytest.raises(BipoLensError, match="unknown token strategy"):
        TokenStrategy("middle_out")


def test_row_multipliers_steer_each_row_its_own_way(model):
    v = SteeringVector(torch.randn(576, generator=torch.Generator().manual_seed(1)) * 3, 12)
    tokens = model.tokenizer(["Hello there, friend"] * 3, return_tensors="pt").input_ids
    with torch.no_grad():
        plain = model(tokens[:1])
        with steer(model, [v], [torch.tensor([0.0, 1.0, -1.0])]):
            rows = model(tokens)
        with steer(model, [v], [1.0]):
            plus = model(tokens[:1])
    assert torch.allclose(rows[0], plain[0], atol=1e-4)
    assert torch.allclose(rows[1], plus[0], atol=1e-4)
    assert not torch.allclose(rows[2], plus[0], atol=1e-2)


def test_hooks_are_removed_after_the_block(model):
    v = SteeringVector(torch.ones(576) * 5, 3)
    tokens = model.tokenizer("Hello", return_tensors="pt").input_ids
    with torch.no_grad():
        before = model(tokens)
        with steer(model, [v], [1.0]):
            pass
        assert torch.equal(model(tokens), before)


def test_two_vectors_at_two_layers_compose(model):
    a = SteeringVector(torch.randn(576, generator=torch.Generator().manual_seed(2)), 5)
    b = SteeringVector(torch.randn(576, generator=torch.Generator().manual_seed(3)), 20)
    tokens = model.tokenizer("Composition test", return_tensors="pt").input_ids
    with torch.no_grad(), steer(model, [a, b], [2.0, -1.0]):
        both = model(tokens)
    with torch.no_grad(), steer(model, [a], [2.0]), steer(model, [b], [-1.0]):
        nested = model(tokens)
    assert torch.allclose(both, nested, atol=1e-4)


def test_generation_at_zero_is_unsteered_and_strategies_run(model):
    v = SteeringVector(torch.randn(576, generator=torch.Generator().manual_seed(4)) * 8, 15)
    zero_v = SteeringVector(torch.zeros(576), 15)
    question = "What is your favourite colour?"
    at_zero, strong = generate(model, question, [v], [0.0, 4.0], max_new_tokens=12)
    assert at_zero == generate(model, question, [zero_v], [1.0], max_new_tokens=12)[0]
    assert strong != at_zero
    first_only = generate(model, question, [v], [4.0], TokenStrategy("first_only"), max_new_tokens=12)[0]
    assert isinstance(first_only, str) and first_only
