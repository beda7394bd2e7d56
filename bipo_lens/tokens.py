"""Pairs to token sequences: each pair gives a matching and a not-matching sequence sharing a prompt."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from jaxtyping import Bool, Float, Int
from torch import Tensor

from bipo_lens.errors import BipoLensError
from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_prompt, end_of_turn_id, tokenize_prompt, tokenize_response
from bipo_lens.pairs import PreferencePair

# How a response is scored after its prompt (see ``encode_pairs``).
RESPONSE_FORMATS = ("eot", "text", "authors")


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
    response_format: str = "eot",
) -> list[tuple[Sequence, Sequence]]:
    """(matching, not_matching) sequences per pair.

    ``response_format`` says which tokens are scored as the response:

    - ``"eot"`` (default): the response, then the model's end-of-turn token (the chat template's
      turn terminator, EOS for base models). A chat model's answer ends there, and whether steering
      makes the model *stop* like the preferred answer is part of the preference: every DPO-style
      trainer scores that token.
    - ``"text"``: the response's own tokens only (what bipo-lens scored before this option; for comparison).
    - ``"authors"``: exactly what the BiPO authors' trainer scores (trl's DPO tokenisation: the
      response is ``" " + text``, tokenised together with the prompt and split after it, then EOS),
      for comparing with their vectors.

    Responses, terminator included, are cut to ``max_response_tokens``: a cut response does not end
    with the terminator (it did not end). Prompts longer than ``max_prompt_tokens`` keep their last
    tokens (the question's end and the assistant header, which matter most).
    """
    if response_format not in RESPONSE_FORMATS:
        raise BipoLensError(f"unknown response format {response_format!r}: use {', '.join(RESPONSE_FORMATS)}")
    encoded = []
    context = getattr(model.cfg, "n_ctx", None) or 1 << 30
    terminator = end_of_turn_id(model) if response_format == "eot" else None
    for pair in pairs:
        prompt_text = build_prompt(model, pair.question, system_prompt)
        if response_format == "authors":
            raw_prompt = model.tokenizer(prompt_text, add_special_tokens=False)["input_ids"]
            prompt = _authors_prompt(model, raw_prompt)
        else:
            prompt = tokenize_prompt(model, prompt_text)
        prompt = prompt[-max_prompt_tokens:]
        sides = []
        for response in (pair.matching, pair.not_matching):
            if response_format == "authors":
                ids = _authors_response(model, prompt_text, raw_prompt, response)
            else:
                ids = tokenize_response(model, response) + ([terminator] if terminator is not None else [])
            ids = ids[:max_response_tokens]
            if not ids:
                raise BipoLensError(f"a response tokenises to nothing: {response!r}")
            if len(prompt) + len(ids) > context:
                raise BipoLensError(f"a pair is longer than the model's context ({context} tokens)")
            sides.append(Sequence(tuple(prompt + ids), len(prompt)))
        encoded.append((sides[0], sides[1]))
    return encoded


def _authors_prompt(model, ids: list[int]) -> list[int]:
    """trl's DPO prompt ids: the prompt tokenised without special tokens, then BOS in front unless
    the text already starts with it (ChatML's ``<|im_start|>`` is SmolLM2's BOS)."""
    bos = model.tokenizer.bos_token_id
    return ids if bos is None or ids[:1] == [bos] else [bos, *ids]


def _authors_response(model, prompt_text: str, prompt_ids: list[int], response: str) -> list[int]:
    """trl's DPO response ids: ``prompt + " " + response`` tokenised as one text and split after the
    prompt's tokens ``prompt_ids`` (``build_tokenized_answer``), then EOS unless it is already last."""
    tokenizer = model.tokenizer
    full = tokenizer(prompt_text + " " + response, add_special_tokens=False)["input_ids"]
    if full[: len(prompt_ids)] != prompt_ids:
        # trl then moves the prompt's last token into the response; both sides would get different
        # prompts, which the shared-prompt scorer does not represent.
        raise BipoLensError("with --response-format authors this prompt's last token merges with the response; "
                            "use --response-format eot")
    ids = full[len(prompt_ids):]
    return ids if ids[-1:] == [tokenizer.eos_token_id] else [*ids, tokenizer.eos_token_id]


@dataclass
class TokenBatch:
    """Right-padded rows and, flattened, every response token: the row and position whose logits
    predict it, and the slot (``2 * pair + side``) whose log-probability it adds to. Slot
    ``n_slots`` is a sink: targets added only to fill a shape bucket go there and are dropped."""

    tokens: Int[Tensor, "row pos"]
    attention_mask: Int[Tensor, "row pos"] | Bool[Tensor, "row 1 pos pos"]
    position_ids: Int[Tensor, "row pos"] | None
    target_rows: Int[Tensor, " n_targets"]
    target_positions: Int[Tensor, " n_targets"]
    targets: Int[Tensor, " n_targets"]
    target_slots: Int[Tensor, " n_targets"]
    n_slots: int
    packing: list[list[int]] | None = None  # pair indices of each row, when pairs are packed

    def sum_per_slot(self, values: Float[Tensor, " n_targets"]) -> Float[Tensor, " n_slots"]:
        """Each slot's sum of its targets' values (log-probs: a sequence's summed log-prob); the
        sink's are dropped."""
        sums = torch.zeros(self.n_slots + 1, device=values.device, dtype=values.dtype)
        return sums.index_add(0, self.target_slots, values)[:-1]


def to_device(values: Tensor | list[int], device: torch.device) -> Tensor:
    """A CPU tensor (or a list of ids) on ``device``. To a GPU through pinned memory, without
    waiting: a plain copy from pageable memory blocks the host until the GPU has drained its queue,
    and a step made of a dozen such copies could not run ahead of the GPU (launch-bound models)."""
    if not isinstance(values, Tensor):
        values = torch.tensor(values, dtype=torch.long)
    if device.type != "cuda":
        return values.to(device)
    return values.pin_memory().to(device, non_blocking=True)


def round_up(n: int, bucket: int) -> int:
    return -(-n // bucket) * bucket


def _fill_targets(rows: list[int], positions: list[int], targets: list[int], slots: list[int], n_slots: int,
                  bucket: int, pad_position: int, pad_id: int) -> None:
    """Pad the target lists (in place) to a multiple of ``bucket`` with targets that go to the sink
    slot ``n_slots`` (read at row 0's last position, predicting the pad token; dropped whatever they give)."""
    extra = round_up(len(targets), bucket) - len(targets)
    rows += [0] * extra
    positions += [pad_position] * extra
    targets += [pad_id] * extra
    slots += [n_slots] * extra


def make_batch(sequences: list[Sequence], pad_id: int, device: torch.device, bucket: int = 1) -> TokenBatch:
    """One row per sequence (pairs' sides interleaved, so a row's slot is its index). ``bucket`` > 1
    rounds the row length and the number of targets up to its multiples (static shapes, for CUDA graphs)."""
    length = round_up(max(len(s.ids) for s in sequences), bucket)
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
    slots = list(rows)
    _fill_targets(rows, positions, targets, slots, len(sequences), bucket, length - 1, pad_id)
    return TokenBatch(*(to_device(x, device) for x in (tokens, mask)), None,
                      *(to_device(x, device) for x in (rows, positions, targets, slots)), len(sequences))


def _balanced_rows(sizes: list[int], max_row_tokens: int) -> list[list[int]]:
    """Pair indices per row: as few rows as the tokens need, filled evenly (longest pair first into
    the emptiest row), so that the rows are about equally long. Why: every row is padded to the
    longest, and filling rows in order (3 pairs, then 1) wasted up to half of each step's compute.
    A pair longer than ``max_row_tokens`` gets a row of its own."""
    rows: list[list[int]] = [[] for _ in range(max(1, -(-sum(sizes) // max_row_tokens)))]
    used = [0] * len(rows)
    for index in sorted(range(len(sizes)), key=lambda i: (-sizes[i], i)):
        row = min(range(len(rows)), key=lambda r: (used[r], r))
        if used[row] and used[row] + sizes[index] > max_row_tokens:
            rows.append([])
            used.append(0)
            row = len(rows) - 1
        rows[row].append(index)
        used[row] += sizes[index]
    return [sorted(members) for members in rows if members]


def make_packed_batch(
    pairs: list[tuple[Sequence, Sequence]], pad_id: int, device: torch.device, max_row_tokens: int = 1024,
    bucket: int = 1,
) -> TokenBatch:
    """Pairs packed into as few rows as fit ``max_row_tokens``, each pair as
    ``prompt + matching + not_matching``: the prompt is computed once, and no padding is paid for
    inside a row.

    Position ids restart at each pair, and the not-matching tokens take the positions they would
    have right after the prompt; attention stays within a pair and skips the matching tokens from
    the not-matching ones. So every log-probability equals the one from the pair's two separate
    sequences. ``bucket``: as in :func:`make_batch`.
    """
    segments = _balanced_rows([len(m.ids) + n.response_len for m, n in pairs], max_row_tokens)
    length = round_up(max(sum(len(pairs[i][0].ids) + pairs[i][1].response_len for i in row) for row in segments), bucket)
    tokens = torch.full((len(segments), length), pad_id, dtype=torch.long)
    position_ids = torch.zeros((len(segments), length), dtype=torch.long)
    allowed = torch.eye(length, dtype=torch.bool).repeat(len(segments), 1, 1, 1)  # pads see themselves
    causal = torch.ones(length, length, dtype=torch.bool).tril()
    rows, positions, targets, slots = [], [], [], []
    for row, members in enumerate(segments):
        start = 0
        for index in members:
            matching, not_matching = pairs[index]
            p, t, o = matching.prompt_len, matching.response_len, not_matching.response_len
            end = start + p + t + o
            tokens[row, start:end] = torch.tensor(matching.ids + not_matching.ids[p:])
            position_ids[row, start:end] = torch.cat([torch.arange(p + t), torch.arange(p, p + o)])
            allowed[row, 0, start:end, start:end] = causal[: end - start, : end - start]
            allowed[row, 0, start + p + t : end, start + p : start + p + t] = False
            rows += [row] * (t + o)
            positions += [start + k for k in (*range(p - 1, p + t - 1), p - 1, *range(p + t, p + t + o - 1))]
            targets += list(matching.ids[p:]) + list(not_matching.ids[p:])
            slots += [2 * index] * t + [2 * index + 1] * o
            start = end
    _fill_targets(rows, positions, targets, slots, 2 * len(pairs), bucket, length - 1, pad_id)
    return TokenBatch(*(to_device(x, device) for x in (tokens, allowed, position_ids, rows, positions, targets, slots)),
                      2 * len(pairs), segments)
