"""The one place that adds vectors to the residual stream.

Training, evaluation, generation and analysis all steer through :func:`steer`, a context manager
that hooks ``blocks.{L}.hook_resid_post``; the fast trainer, which replays cached activations,
uses the same :func:`add_steering` arithmetic on them.

Token strategies (weights ``w_i`` for positions ``i = 0..n-1`` of the sequence seen so far):

=====================  ==========================================================================
``all`` (default)      ``w_i = 1`` everywhere, as in the paper (``all_equal`` is the same)
``last_only``          ``w_{n-1} = 1``, else 0
``second_to_last``     ``w_{n-2} = 1``, else 0
``first_only``         ``w_0 = 1``, else 0
``exponential_decay``  ``w_i = max(min_strength, max_strength * decay_rate**i)``
``exponential_growth`` ``w_i = max(min_strength, max_strength * decay_rate**(n-1-i))``
``linear_decay``       ``w_i`` falls linearly from ``max_strength`` (i=0) to ``min_strength`` (i=n-1)
``linear_growth``      ``w_i`` rises linearly from ``min_strength`` (i=0) to ``max_strength`` (i=n-1)
=====================  ==========================================================================

During cached generation each new token is the sequence's new last position, so it gets
``w_{n-1}`` for the grown ``n``: 1 for ``all``/``last_only``, 0 for ``first_only``/``second_to_last``,
``min_strength`` for the decays (once ``n`` is large) and ``max_strength`` for the growths.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass
from typing import Iterator, Sequence

import einops
import torch
from jaxtyping import Float, Int
from torch import Tensor

from bipo_lens.errors import BipoLensError
from bipo_lens.vectors import SteeringVector

STRATEGIES = (
    "all",
    "last_only",
    "second_to_last",
    "first_only",
    "exponential_decay",
    "exponential_growth",
    "linear_decay",
    "linear_growth",
)
ALIASES = {"all_equal": "all"}


@dataclass(frozen=True)
class TokenStrategy:
    name: str = "all"
    decay_rate: float = 0.5
    min_strength: float = 0.1
    max_strength: float = 1.0

    def __post_init__(self) -> None:
        name = ALIASES.get(self.name, self.name)
        if name not in STRATEGIES:
            raise BipoLensError(
                f"unknown token strategy {self.name!r}: use {', '.join(STRATEGIES + tuple(ALIASES))}"
            )
        object.__setattr__(self, "name", name)

    def weights(self, positions: Int[Tensor, " pos"], length: int) -> Float[Tensor, " pos"]:
        """Weights of ``positions`` in a sequence of ``length`` tokens."""
        i = positions.float()
        last = float(length - 1)
        lo, hi = self.min_strength, self.max_strength
        if self.name == "all":
            return torch.ones_like(i)
        if self.name == "last_only":
            return (i == last).float()
        if self.name == "second_to_last":
            return (i == last - 1).float()
        if self.name == "first_only":
            return (i == 0).float()
        if self.name == "exponential_decay":
            return (hi * self.decay_rate**i).clamp(min=lo)
        if self.name == "exponential_growth":
            return (hi * self.decay_rate ** (last - i)).clamp(min=lo)
        fraction = i / last if last > 0 else torch.ones_like(i)
        if self.name == "linear_decay":
            return hi - (hi - lo) * fraction
        return lo + (hi - lo) * fraction  # linear_growth


Multiplier = float | Float[Tensor, " batch"]


def add_steering(
    resid: Float[Tensor, "batch pos d_model"],
    vector: Float[Tensor, " d_model"],
    multiplier: Multiplier,
    weights: Float[Tensor, " pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``resid + multiplier * weights * vector``; a tensor multiplier steers each row its own way."""
    vector = vector.to(device=resid.device, dtype=resid.dtype)
    scale = torch.as_tensor(multiplier, device=resid.device, dtype=resid.dtype)
    scale = einops.rearrange(scale, "b -> b 1 1") if scale.ndim == 1 else scale
    if weights is not None:
        scale = scale * einops.rearrange(weights.to(resid.device, resid.dtype), "pos -> 1 pos 1")
    return resid + scale * vector


class _LayerHook:
    """Adds every vector of one layer, tracking positions across cached decoding steps."""

    def __init__(self, terms: list[tuple[Tensor, Multiplier]], strategy: TokenStrategy):
        self.terms = terms
        self.strategy = strategy
        self.seen = 0

    def __call__(self, resid: Tensor, hook=None) -> Tensor:
        n_new = resid.shape[1]
        if n_new > 1:  # a full pass (prompt or training batch) starts a new sequence
            self.seen = 0
        weights = None
        if self.strategy.name != "all":
            positions = torch.arange(self.seen, self.seen + n_new, device=resid.device)
            weights = self.strategy.weights(positions, self.seen + n_new)
        self.seen += n_new
        for vector, multiplier in self.terms:
            resid = add_steering(resid, vector, multiplier, weights)
        return resid


@contextlib.contextmanager
def steer(
    model,
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[Multiplier],
    strategy: TokenStrategy = TokenStrategy(),
) -> Iterator[None]:
    """Within the block, ``model`` runs with each vector added at its layer times its multiplier."""
    if len(vectors) != len(multipliers):
        raise BipoLensError(f"{len(vectors)} vectors but {len(multipliers)} multipliers")
    for vector in vectors:
        vector.check_compatible(model)
    terms = [(v.layer, v.vector, m) for v, m in zip(vectors, multipliers)]
    with steer_tensors(model, terms, strategy):
        yield


@contextlib.contextmanager
def steer_tensors(
    model,
    terms: Sequence[tuple[int, Float[Tensor, " d_model"], Multiplier]],
    strategy: TokenStrategy = TokenStrategy(),
) -> Iterator[None]:
    """:func:`steer` for raw ``(layer, tensor, multiplier)`` terms, such as a vector in training."""
    by_layer: dict[int, list] = {}
    for layer, vector, multiplier in terms:
        by_layer.setdefault(layer, []).append((vector, multiplier))
    hooks = [(f"blocks.{layer}.hook_resid_post", _LayerHook(t, strategy)) for layer, t in by_layer.items()]
    with model.hooks(fwd_hooks=hooks):
        yield


@contextlib.contextmanager
def steer_raw_layers(
    model, terms: Sequence[tuple[int, Float[Tensor, " d_model"], Multiplier]]
) -> Iterator[None]:
    """:func:`steer_tensors` on the bridge's raw twin (``model.lens_raw``), which the fast paths run:
    each vector is added to its decoder layer's output, which is ``blocks.{L}.hook_resid_post``
    (a test checks the two agree). Every position, like the ``all`` strategy."""
    by_layer: dict[int, list] = {}
    for layer, vector, multiplier in terms:
        by_layer.setdefault(layer, []).append((vector, multiplier))

    def hook_for(layer_terms):
        def hook(module, inputs, output):
            hidden = output[0] if isinstance(output, tuple) else output
            for vector, multiplier in layer_terms:
                hidden = add_steering(hidden, vector, multiplier)
            return (hidden, *output[1:]) if isinstance(output, tuple) else hidden
        return hook

    layers = model.lens_raw.model.layers
    handles = [layers[layer].register_forward_hook(hook_for(t)) for layer, t in by_layer.items()]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


def generate(
    model,
    question: str,
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[float],
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
) -> list[str]:
    """Greedy answers to one question, one per multiplier (every vector scaled by it).

    The multipliers run as one batch: the same prompt, each row steered by its own multiplier.
    """
    from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_prompt, tokenize_prompt

    prompt = build_prompt(model, question, DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt)
    device = next(model.original_model.parameters()).device
    tokens = torch.tensor([tokenize_prompt(model, prompt)], device=device)
    tokens = einops.repeat(tokens, "1 pos -> b pos", b=len(multipliers))
    row_multipliers = torch.tensor(list(multipliers), dtype=torch.float32, device=device)
    with torch.no_grad(), steer(model, list(vectors), [row_multipliers] * len(vectors), strategy):
        output = model.generate(
            tokens,
            max_new_tokens=max_new_tokens,
            do_sample=False,
            stop_at_eos=True,
            use_past_kv_cache=True,
            verbose=False,
            return_type="tokens",
        )
    answers = []
    eos = model.tokenizer.eos_token_id
    for row in output[:, tokens.shape[1] :].tolist():
        if eos in row:
            row = row[: row.index(eos)]
        answers.append(model.tokenizer.decode(row, skip_special_tokens=True).strip())
    return answers
