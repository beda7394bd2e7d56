"""Residual-stream activations at one layer, computed once and reused (fast BiPO, CAA)."""

from __future__ import annotations

import torch
from jaxtyping import Float
from torch import Tensor

from bipo_lens.models import packing_allowed, run_to_layer
from bipo_lens.tokens import Sequence, make_batch, make_packed_batch

MAX_ROW_TOKENS = 1024


def device_of(model) -> torch.device:
    """Where a model's inputs go (with ``--device-map``, the embedding's device, not every block's)."""
    found = getattr(model, "lens_info", None)
    return found.device if found is not None else next(model.original_model.parameters()).device


@torch.no_grad()
def pair_residuals(
    model, pairs: list[tuple[Sequence, Sequence]], layer: int, pairs_per_pass: int = 32, store: str | None = None
) -> list[Float[Tensor, "pos d_model"]]:
    """``blocks.{layer}.hook_resid_post`` of every sequence (``2i``: matching, ``2i+1``: not), unpadded.

    Runs only blocks ``0..layer``, with each pair's prompt computed once (packed rows, see
    :func:`make_packed_batch`) where the model allows it. ``store="host"``: each pass's activations
    are moved to CPU memory (pinned where CUDA is there, for asynchronous copies back) as they are
    made, so a set larger than the device's memory never sits on it whole.
    """
    pad = model.tokenizer.pad_token_id or 0
    found: list[Tensor] = []
    if store == "host":
        pinned = torch.cuda.is_available()
        done: list[Tensor] = []
        for start in range(0, len(pairs), pairs_per_pass):
            part = pair_residuals(model, pairs[start : start + pairs_per_pass], layer, pairs_per_pass)
            done += [t.to("cpu").pin_memory() if pinned else t.to("cpu", copy=True) for t in part]
        return done
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
        by_pair: dict[int, tuple[Tensor, Tensor]] = {}  # rows hold pairs in any order
        for row, members in enumerate(batch.packing):
            offset = 0
            for index in members:
                matching, not_matching = chunk[index]
                p, end = matching.prompt_len, offset + len(matching.ids) + not_matching.response_len
                by_pair[index] = (resid[row, offset : offset + len(matching.ids)].clone(),
                                  torch.cat([resid[row, offset : offset + p], resid[row, offset + len(matching.ids) : end]]))
                offset = end
        found += [side for index in range(len(chunk)) for side in by_pair[index]]
    return found


def mean_response_activation(
    resid: Float[Tensor, "pos d_model"], seq: Sequence
) -> Float[Tensor, " d_model"]:
    """Mean over the response tokens' positions (the prompt is shared by both sides of a pair)."""
    return resid[seq.prompt_len :].mean(dim=0)


POSITIONS = ("response_mean", "answer_token")


def first_divergence(matching: Sequence, not_matching: Sequence) -> int:
    """Position of the first response token where the two sides differ: the answer letter of an A/B
    pair (``(A)`` against ``(B)``), where free-text answers part ways otherwise. Past the shorter
    side's end it is that side's last token."""
    shorter = min(matching.response_len, not_matching.response_len)
    offset = next((i for i in range(shorter)
                   if matching.ids[matching.prompt_len + i] != not_matching.ids[not_matching.prompt_len + i]), shorter - 1)
    return matching.prompt_len + max(offset, 0)


def response_deltas(model, encoded: list[tuple[Sequence, Sequence]], layer: int,
                    positions: str = "response_mean") -> Float[Tensor, "pairs d_model"]:
    """Matching minus not-matching activation per pair, read at ``positions``: ``"response_mean"``,
    the mean over each side's response tokens, or ``"answer_token"``, the position where the two
    responses first differ (CAA as Rimsky et al. read it: at the answer letter)."""
    if positions not in POSITIONS:
        raise ValueError(f"unknown positions {positions!r}: use {', '.join(POSITIONS)}")
    sequences = [seq for pair in encoded for seq in pair]
    residuals = pair_residuals(model, encoded, layer)
    if positions == "answer_token":
        at = [first_divergence(m, n) for m, n in encoded for _ in (m, n)]
        acts = torch.stack([r[p] for r, p in zip(residuals, at)])
    else:
        acts = torch.stack([mean_response_activation(r, s) for r, s in zip(residuals, sequences)])
    return acts[0::2] - acts[1::2]
