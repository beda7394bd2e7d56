"""The one place that adds vectors to the residual stream (and, for RePS's suppression term, the one
projection that removes a direction from it: :func:`null_out`).

Training, evaluation, generation and analysis all steer through :func:`steer`, a context manager
that hooks ``blocks.{L}.hook_resid_post``; the fast trainer, which replays cached activations,
uses the same :func:`add_steering` arithmetic on them.

Token strategies give each position ``i`` of a sequence a weight ``w_i``; the vector added there is
``w_i * multiplier * v``. Over a sequence of ``n`` tokens (a prompt, or a training/scoring pass):

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

**During generation** a position's weight is fixed when the position is first computed, and never
revised (a KV cache could not revise it, and the definition must not depend on whether one is used):

- prompt positions ``i < P`` (``P`` prompt tokens, padding not counted) get the table's weights with
  ``n = P``: ``last_only`` steers the prompt's last token, ``first_only`` its first;
- a generated token at position ``i >= P`` enters as the sequence's last token, so it gets the
  table's ``w_i`` with ``n = i + 1``: 1 for ``all``, ``last_only``, ``exponential_growth`` and
  ``linear_growth`` (``max_strength`` for the last two), 0 for ``first_only`` and ``second_to_last``,
  ``min_strength`` for ``linear_decay``, ``max(min_strength, max_strength * decay_rate**i)`` for
  ``exponential_decay``.

:meth:`TokenStrategy.generation_weights` is that definition; positions count real tokens, so a
left-padded row is steered exactly as the same row alone.
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

    def weights(
        self, positions: Int[Tensor, "*#shape"], length: int | Int[Tensor, "*#shape"]
    ) -> Float[Tensor, "..."]:
        """Weights of ``positions`` in a sequence of ``length`` tokens (a tensor: one per position)."""
        i = positions.float()
        last = torch.as_tensor(length, device=positions.device).float() - 1
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
        fraction = torch.where(last > 0, i / last.clamp(min=1), torch.ones_like(i))
        if self.name == "linear_decay":
            return hi - (hi - lo) * fraction
        return lo + (hi - lo) * fraction  # linear_growth

    def generation_weights(
        self, positions: Int[Tensor, "*#shape"], prompt_lengths: Int[Tensor, "*#shape"]
    ) -> Float[Tensor, "..."]:
        """The module docstring's definition: prompt positions weighted over the prompt, each
        generated position as the last token of the sequence it entered."""
        return self.weights(positions, torch.where(positions < prompt_lengths, prompt_lengths, positions + 1))


Multiplier = float | Float[Tensor, " batch"]


def add_steering(
    resid: Float[Tensor, "batch pos d_model"],
    vector: Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"],
    multiplier: Multiplier,
    weights: Float[Tensor, " pos"] | Float[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``resid + multiplier * weights * vector``: the one piece of arithmetic that steers.

    A tensor multiplier (or a vector per row) steers each row its own way; ``weights`` come from a
    :class:`TokenStrategy`, per position or per row and position."""
    vector = vector.to(device=resid.device, dtype=resid.dtype)
    vector = einops.rearrange(vector, "b d -> b 1 d") if vector.ndim == 2 else vector
    scale = torch.as_tensor(multiplier, device=resid.device, dtype=resid.dtype)
    scale = einops.rearrange(scale, "b -> b 1 1") if scale.ndim == 1 else scale
    if weights is not None:
        weights = weights.to(resid.device, resid.dtype)
        scale = scale * (weights[None, :, None] if weights.ndim == 1 else weights[:, :, None])
    return resid + scale * vector


def null_out(
    resid: Float[Tensor, "batch pos d_model"],
    vector: Float[Tensor, " d_model"],
    bias: Float[Tensor, ""] | float = 0.0,
    weights: Float[Tensor, "batch pos"] | None = None,
) -> Float[Tensor, "batch pos d_model"]:
    """``resid - relu(resid . v + b) / |v|^2 * v``: RePS's suppression ("null it out", Wu et al. 2025),
    which removes the part of each position's residual along ``v`` wherever it points the vector's way
    (past the bias) and leaves the rest. Not an addition: the one projection that steers, beside
    :func:`add_steering`. ``weights`` (0 or 1 per row and position) choose the positions it acts on."""
    vector = vector.to(device=resid.device, dtype=resid.dtype)
    latent = torch.relu(resid @ vector + bias)
    if weights is not None:
        latent = latent * weights.to(resid.device, resid.dtype)
    return resid - einops.einsum(latent / vector.pow(2).sum(), vector, "b p, d -> b p d")


class _LayerHook:
    """Adds every vector of one layer, weighted per position by the token strategy.

    ``positions`` come from the model (the raw twin's ``position_ids``, which count real tokens and
    advance under a KV cache); where none are given the pass starts at position 0 (a full pass).
    ``prompt_lengths`` (per row) mark where generated positions begin; without them the whole
    sequence is the prompt."""

    def __init__(self, terms: list[tuple[Tensor, Multiplier]], strategy: TokenStrategy,
                 prompt_lengths: Int[Tensor, " batch"] | None = None):
        self.terms = terms
        self.strategy = strategy
        self.prompt_lengths = prompt_lengths

    def __call__(self, resid: Tensor, hook=None, positions: Tensor | None = None) -> Tensor:
        weights = None
        if self.strategy.name != "all":
            n = resid.shape[1]
            if positions is None:
                positions = torch.arange(n, device=resid.device)[None]
            positions = positions.to(resid.device).expand(resid.shape[0], n)
            lengths = self.prompt_lengths
            lengths = torch.full((resid.shape[0],), n) if lengths is None else lengths
            weights = self.strategy.generation_weights(positions, lengths.to(resid.device)[:, None])
        for vector, multiplier in self.terms:
            resid = add_steering(resid, vector, multiplier, weights)
        return resid


def _by_layer(terms) -> dict[int, list]:
    by_layer: dict[int, list] = {}
    for layer, vector, multiplier in terms:
        by_layer.setdefault(layer, []).append((vector, multiplier))
    return by_layer


@contextlib.contextmanager
def steer(
    model,
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[Multiplier],
    strategy: TokenStrategy = TokenStrategy(),
) -> Iterator[None]:
    """Within the block, ``model`` runs with each vector added at its layer times its multiplier
    (TransformerLens hooks at ``blocks.{L}.hook_resid_post``; full passes: generate with
    :func:`bipo_lens.generation.generate`)."""
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
    hooks = [(f"blocks.{layer}.hook_resid_post", _LayerHook(t, strategy)) for layer, t in _by_layer(terms).items()]
    with model.hooks(fwd_hooks=hooks):
        yield


class _RawLayerSlot:
    """The forward hook of one decoder layer of a raw model, registered once and kept: each
    :func:`steer_raw_layers` block puts its :class:`_LayerHook` in ``active`` and takes it out again.

    Why not a new hook per block: a compiled forward (``generate(..., compile=True)``: static cache,
    CUDA graphs) guards on the hook functions it traced, so a fresh closure per call would recompile
    the model every call; one function whose state changes is traced once."""

    def __init__(self) -> None:
        self.active: list[_LayerHook] = []

    def __call__(self, module, args, kwargs, output):
        if not self.active:
            return output
        hidden = output[0] if isinstance(output, tuple) else output
        for layer_hook in self.active:
            hidden = layer_hook(hidden, positions=kwargs.get("position_ids"))
        return (hidden, *output[1:]) if isinstance(output, tuple) else hidden


def _raw_slot(raw, layer: int) -> _RawLayerSlot:
    slots = raw.__dict__.setdefault("_bipo_lens_steering_slots", {})
    if layer not in slots:
        slots[layer] = _RawLayerSlot()
        raw.model.layers[layer].register_forward_hook(slots[layer], with_kwargs=True)
    return slots[layer]


@contextlib.contextmanager
def steer_raw_layers(
    model,
    terms: Sequence[tuple[int, Float[Tensor, " d_model"] | Float[Tensor, "batch d_model"], Multiplier]],
    strategy: TokenStrategy = TokenStrategy(),
    prompt_lengths: Int[Tensor, " batch"] | None = None,
) -> Iterator[None]:
    """:func:`steer_tensors` on the bridge's raw twin (``model.lens_raw``), which the fast paths and
    the generation engine run: each vector is added to its decoder layer's output, which is
    ``blocks.{L}.hook_resid_post`` (a test checks the two agree), through the same
    :class:`_LayerHook`. Positions are the ``position_ids`` the model passes to its layers."""
    entered: list[tuple[_RawLayerSlot, _LayerHook]] = []
    try:
        for layer, layer_terms in _by_layer(terms).items():
            slot, hook = _raw_slot(model.lens_raw, layer), _LayerHook(layer_terms, strategy, prompt_lengths)
            slot.active.append(hook)
            entered.append((slot, hook))
        yield
    finally:
        for slot, hook in entered:
            slot.active.remove(hook)
