"""Residual-stream activations at one layer, computed once and reused (fast BiPO, CAA)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from bipo_lens.models import packing_allowed, run_to_layer
from bipo_lens.tokens import Sequence, make_batch, make_packed_batch

MAX_ROW_TOKENS = 1024


def device_of(model) -> torch.device:
    return next(model.original_model.parameters()).device


@torch.no_grad()
def pair_residuals(
    model, pairs: list[tuple[Sequence, Sequence]], layer: int, pairs_per_pass: int = 32
) -> list[Float[Tensor, "pos d_model"]]:
    """``blocks.{layer}.hook_resid_post`` of every sequence (``2i``: matching, ``2i+1``: not), unpadded.

    Runs only blocks ``0..layer``, with each pair's prompt computed once (packed rows, see
    :func:`make_packed_batch`) where the model allows it.
    """
    pad = model.tokenizer.pad_token_id or 0
    found: list[Tensor] = []
    packed = packing_allowed(model, MAX_ROW_TOKENS)
    for start in range(0, len(pairs), pairs_per_pass):
        chunk = pairs[start : start + pairs_per_pass]
        if not packed:
            sequences = [seq for pair in chunk for seq in pair]
            batch = make_batch(sequences, pad, device_of(model))
            resid = run_to_layer(model, batch.tokens, layer, batch.attention_mask)
            found += [resid[row, : len(seq.ids)].clone() for row, seq in enumerate(sequences)]
            continue
        batch = make_packed_batch(chunk, pad, device_of(model), MAX_ROW_TOKENS)
        resid = run_to_layer(model, batch.tokens, layer, batch.attention_mask, batch.position_ids)
        for row, members in enumerate(batch.packing):
            offset = 0
            for index in members:
                matching, not_matching = chunk[index]
                p, end = matching.prompt_len, offset + len(matching.ids) + not_matching.response_len
                found.append(resid[row, offset : offset + len(matching.ids)].clone())
                found.append(torch.cat([resid[row, offset : offset + p], resid[row, offset + len(matching.ids) : end]]))
                offset = end
    return found


def mean_response_activation(
    resid: Float[Tensor, "pos d_model"], seq: Sequence
) -> Float[Tensor, " d_model"]:
    """Mean over the response tokens' positions (the prompt is shared by both sides of a pair)."""
    return resid[seq.prompt_len :].mean(dim=0)


def response_deltas(model, encoded: list[tuple[Sequence, Sequence]], layer: int) -> Float[Tensor, "pairs d_model"]:
    """Mean response activation of the matching minus the not-matching sequence, per pair."""
    sequences = [seq for pair in encoded for seq in pair]
    means = [mean_response_activation(r, s) for r, s in zip(pair_residuals(model, encoded, layer), sequences)]
    acts = torch.stack(means)
    return acts[0::2] - acts[1::2]
