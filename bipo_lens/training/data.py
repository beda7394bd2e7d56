"""Pairs to token sequences: each pair gives a matching and a not-matching sequence sharing a prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Int
from torch import Tensor

from bipo_lens.errors import BipoLensError
from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_prompt, tokenize_prompt, tokenize_response
from bipo_lens.pairs import PreferencePair


@dataclass(frozen=True)
class Sequence:
    """Prompt + response token ids; ``prompt_len`` marks where the response starts."""

    ids: tuple[int, ...]
    prompt_len: int

    @property
    def response_len(self) -> int:
        return len(self.ids) - self.prompt_len


def encode_pairs(
    model,
    pairs: list[PreferencePair],
    max_response_tokens: int | None = 64,
    max_prompt_tokens: int = 512,
    system_prompt: str | None = DEFAULT_SYSTEM_PROMPT,
) -> list[tuple[Sequence, Sequence]]:
    """(matching, not_matching) sequences per pair. Responses are cut to ``max_response_tokens``;
    prompts longer than ``max_prompt_tokens`` keep their last tokens (the question's end and the
    assistant header, which matter most)."""
    encoded = []
    context = getattr(model.cfg, "n_ctx", None) or 1 << 30
    for pair in pairs:
        prompt = tokenize_prompt(model, build_prompt(model, pair.question, system_prompt))
        prompt = prompt[-max_prompt_tokens:]
        sides = []
        for response in (pair.matching, pair.not_matching):
            ids = tokenize_response(model, response)[:max_response_tokens]
            if not ids:
                raise BipoLensError(f"a response tokenises to nothing: {response!r}")
            if len(prompt) + len(ids) > context:
                raise BipoLensError(f"a pair is longer than the model's context ({context} tokens)")
            sides.append(Sequence(tuple(prompt + ids), len(prompt)))
        encoded.append((sides[0], sides[1]))
    return encoded


@dataclass
class TokenBatch:
    """Right-padded sequences and, flattened, every response token with the position predicting it."""

    tokens: Int[Tensor, "seq pos"]
    attention_mask: Int[Tensor, "seq pos"]
    target_rows: Int[Tensor, " n_targets"]
    target_positions: Int[Tensor, " n_targets"]  # position whose logits predict the target
    targets: Int[Tensor, " n_targets"]

    @property
    def n_sequences(self) -> int:
        return self.tokens.shape[0]


def make_batch(sequences: list[Sequence], pad_id: int, device: torch.device) -> TokenBatch:
    length = max(len(s.ids) for s in sequences)
    tokens = torch.full((len(sequences), length), pad_id, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    rows, positions, targets = [], [], []
    for row, seq in enumerate(sequences):
        tokens[row, : len(seq.ids)] = torch.tensor(seq.ids)
        mask[row, : len(seq.ids)] = 1
        for position in range(seq.prompt_len, len(seq.ids)):
            rows.append(row)
            positions.append(position - 1)
            targets.append(seq.ids[position])
    as_tensor = lambda xs: torch.tensor(xs, dtype=torch.long, device=device)  # noqa: E731
    return TokenBatch(tokens.to(device), mask.to(device), as_tensor(rows), as_tensor(positions), as_tensor(targets))
