"""Residual-stream activations at one layer, computed once and reused (fast BiPO, CAA)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from bipo_lens.training.data import Sequence, make_batch


def device_of(model) -> torch.device:
    return next(model.original_model.parameters()).device


@torch.no_grad()
def residuals(
    model, sequences: list[Sequence], layer: int, batch_size: int = 16
) -> list[Float[Tensor, "pos d_model"]]:
    """``blocks.{layer}.hook_resid_post`` for each sequence, unpadded, without running later blocks."""
    hook_name = f"blocks.{layer}.hook_resid_post"
    order = sorted(range(len(sequences)), key=lambda i: len(sequences[i].ids))  # batch by length
    found: dict[int, Tensor] = {}
    pad = model.tokenizer.pad_token_id or 0
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        batch = make_batch([sequences[i] for i in chunk], pad, device_of(model))
        _, cache = model.run_with_cache(
            batch.tokens,
            attention_mask=batch.attention_mask,
            names_filter=hook_name,
            stop_at_layer=layer + 1,
        )
        resid = cache[hook_name]
        for row, index in enumerate(chunk):
            found[index] = resid[row, : len(sequences[index].ids)].clone()
    return [found[i] for i in range(len(sequences))]


def mean_response_activation(
    resid: Float[Tensor, "pos d_model"], seq: Sequence
) -> Float[Tensor, " d_model"]:
    """Mean over the response tokens' positions (the prompt is shared by both sides of a pair)."""
    return resid[seq.prompt_len :].mean(dim=0)


def response_deltas(model, encoded: list[tuple[Sequence, Sequence]], layer: int) -> Float[Tensor, "pairs d_model"]:
    """Mean response activation of the matching minus the not-matching sequence, per pair."""
    sequences = [seq for pair in encoded for seq in pair]
    means = [mean_response_activation(r, s) for r, s in zip(residuals(model, sequences, layer), sequences)]
    acts = torch.stack(means)
    return acts[0::2] - acts[1::2]
