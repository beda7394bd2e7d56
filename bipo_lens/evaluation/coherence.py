"""What steering costs in fluency: perplexity under the unsteered model, and distinct-2."""

from __future__ import annotations

import math

import torch

from bipo_lens.models import build_prompt, tokenize_prompt, tokenize_response
from bipo_lens.activations import device_of
from bipo_lens.tokens import Sequence, make_batch


@torch.no_grad()
def perplexities(model, questions: list[str], answers: list[str], batch_size: int = 8) -> list[float | None]:
    """exp(-mean log p(answer token | prompt, earlier answer tokens)) under the unsteered model;
    None for an empty answer."""
    sequences = []
    for question, answer in zip(questions, answers):
        prompt = tokenize_prompt(model, build_prompt(model, question))
        response = tokenize_response(model, answer) if answer.strip() else []
        sequences.append(Sequence(tuple(prompt + response), len(prompt)))
    out: list[float | None] = [None] * len(sequences)
    usable = [i for i, s in enumerate(sequences) if s.response_len > 0]
    pad = model.tokenizer.pad_token_id or 0
    for start in range(0, len(usable), batch_size):
        part = usable[start : start + batch_size]
        batch = make_batch([sequences[i] for i in part], pad, device_of(model))
        logits = model(batch.tokens, attention_mask=batch.attention_mask)
        logprobs = logits[batch.target_rows, batch.target_positions].log_softmax(-1)
        token_lp = logprobs.gather(-1, batch.targets[:, None])[:, 0]
        sums = batch.sum_per_slot(token_lp.float()).cpu()
        for row, index in enumerate(part):
            out[index] = math.exp(-float(sums[row]) / sequences[index].response_len)
    return out


def distinct2(text: str) -> float | None:
    """Unique word bigrams over all word bigrams; low values mean repetition. None under 2 words."""
    words = text.split()
    bigrams = list(zip(words, words[1:]))
    return len(set(bigrams)) / len(bigrams) if bigrams else None
