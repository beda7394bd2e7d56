"""The generation engine: steered answers in batches, with transformers' own ``generate`` and KV cache.

It runs the bridge's raw Hugging Face twin (``model.lens_raw``: the same weight tensors, the same
residual basis; a vector added to decoder layer L's output is ``blocks.{L}.hook_resid_post``) and
steers it through :func:`bipo_lens.steering.steer_raw_layers`, the one steering mechanism. Why not
the bridge: TransformerBridge.generate keeps its own KV-cache plumbing, which broke silently when
transformers 5.24 renamed the layers' ``past_key_values`` argument to ``cache`` (the bridge's
attention stopped writing the cache, so every decoded token attended to itself alone and answers
became ``La-----``); transformers' own generate on its own modules cannot drift that way.

Rows are independent: each has its own prompt and its own steering (vectors and multipliers), so
questions x multipliers x vectors go through in one left-padded batch. Token strategies follow the
definition in :mod:`bipo_lens.steering` per row (positions count real tokens, so padding changes
nothing). Each row stops at the model's end-of-turn / end-of-sequence token.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Iterator, Sequence

import torch
from transformers import GenerationConfig

from bipo_lens.errors import BipoLensError
from bipo_lens.models import DEFAULT_SYSTEM_PROMPT, build_prompt, stop_token_ids, tokenize_prompt
from bipo_lens.steering import TokenStrategy, steer_raw_layers
from bipo_lens.tokens import round_up
from bipo_lens.vectors import SteeringVector

RowSteering = Sequence[tuple[SteeringVector, float]]  # what one row adds: (vector, multiplier) terms


@dataclass(frozen=True)
class Sampling:
    """Greedy at temperature 0 (the default); else nucleus sampling, reproducible per ``seed``."""

    temperature: float = 0.0
    top_p: float = 1.0
    seed: int = 0

    def __post_init__(self) -> None:
        if not (self.temperature >= 0 and 0 < self.top_p <= 1):
            raise BipoLensError(f"bad sampling: temperature {self.temperature} (>= 0), top_p {self.top_p} (0, 1]")


GREEDY = Sampling()


@torch.no_grad()
def generate_batch(
    model,
    prompts: Sequence[str | Sequence[int]],
    steering: Sequence[RowSteering],
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 48,
    sampling: Sampling = GREEDY,
    batch_size: int = 64,
    stop_at_eos: bool = True,
    on_token: Callable[[int, int], None] | None = None,
    compile: bool = False,
    stop_strings: Sequence[str] = (),
) -> list[str]:
    """One answer per row: ``prompts[i]`` (full prompt text, see :func:`build_prompt`, or its token
    ids) steered by ``steering[i]``. Rows run ``batch_size`` at a time, shortest prompts together.
    ``stop_at_eos=False`` generates exactly ``max_new_tokens`` per row (benchmarks); ``on_token(row,
    token_id)`` sees every new token of every row as it is decided (streaming; after a row's stop
    token its row receives padding). ``compile=True``: a static KV cache and transformers' compiled
    decode step (``torch.compile``, CUDA graphs on a GPU): the first call per batch shape pays the
    compilation, later ones decode without per-kernel launch overhead (GPU only; ignored elsewhere).
    ``stop_strings``: a row also ends where its text first contains one of them (transformers'
    ``StopStringCriteria``, which sees a string split over tokens); its answer ends before it."""
    if len(prompts) != len(steering):
        raise BipoLensError(f"{len(prompts)} prompts but {len(steering)} row steerings")
    _check_steering(model, steering)
    tokens = [tokenize_prompt(model, p) if isinstance(p, str) else list(p) for p in prompts]
    order = sorted(range(len(prompts)), key=lambda i: len(tokens[i]))
    answers: list[str] = [""] * len(prompts)
    for start in range(0, len(order), batch_size):
        chunk = order[start : start + batch_size]
        texts = _generate_chunk(model, [tokens[i] for i in chunk], [steering[i] for i in chunk], strategy,
                                max_new_tokens, sampling, seed_offset=start, stop_at_eos=stop_at_eos,
                                streamer=_RowStreamer(chunk, on_token) if on_token else None, compile=compile,
                                stop_strings=stop_strings)
        for i, text in zip(chunk, texts):
            answers[i] = text
    return answers


def _check_steering(model, steering: Sequence[RowSteering]) -> None:
    for vector in {id(v): v for row in steering for v, _ in row}.values():  # each distinct vector once
        vector.check_compatible(model)
    for row in steering:
        for _, multiplier in row:
            if not math.isfinite(float(multiplier)):
                raise BipoLensError(f"multiplier {multiplier} is not a finite number")


def _row_terms(steering: Sequence[RowSteering], device: torch.device) -> list[tuple[int, torch.Tensor, torch.Tensor]]:
    """One steering term per distinct vector: ``(layer, vector, its multiplier per row)``, 0 where a
    row does not use it (vectors no row uses are left out)."""
    vectors: dict[int, SteeringVector] = {}
    for row in steering:
        for vector, _ in row:
            vectors.setdefault(id(vector), vector)
    multipliers = {key: torch.zeros(len(steering)) for key in vectors}
    for row_index, row in enumerate(steering):
        for vector, multiplier in row:
            multipliers[id(vector)][row_index] += float(multiplier)
    return [(v.layer, v.vector, multipliers[key].to(device)) for key, v in vectors.items()
            if bool(multipliers[key].any())]


SCORING_LOGITS = 2**27  # logits in one scoring pass (512 MB in float32)


@dataclass(frozen=True)
class ScoredTokens:
    """One token sequence read by the steered model: for each token, its log-probability given the
    tokens before it (None for the first, which has nothing before it) and the ``top_k`` likeliest
    tokens at its place; then the same for the greedy next token after the last one."""

    tokens: list[int]
    logprobs: list[float | None]
    top: list[list[tuple[int, float]] | None]
    next_token: int
    next_logprob: float
    next_top: list[tuple[int, float]]


@torch.no_grad()
def score_tokens(model, rows: Sequence[Sequence[int]], steering: Sequence[RowSteering], top_k: int = 0,
                 strategy: TokenStrategy = TokenStrategy(), batch_size: int = 16) -> list[ScoredTokens]:
    """Log-probabilities of given token sequences under each row's steering: what an evaluation
    harness reads to score a choice (the sum over a continuation's tokens), from forward passes on
    the raw twin with the same steering as :func:`generate_batch` (every position of a sequence is
    prompt). Rows of similar length go together, up to ``batch_size`` of them and
    :data:`SCORING_LOGITS` logits a pass (the logits of every position are the largest tensor: a
    64-row batch of 600-token prompts would need 7.5 GB of them for a 49k vocabulary), padded on the
    right: under causal attention the padding comes after every real token and changes none of them,
    and positions count from 0 in every row."""
    if len(rows) != len(steering):
        raise BipoLensError(f"{len(rows)} token rows but {len(steering)} row steerings")
    if not all(rows):
        raise BipoLensError("an empty token sequence has nothing to score")
    _check_steering(model, steering)
    raw = model.lens_raw
    device = next(raw.parameters()).device
    order = sorted(range(len(rows)), key=lambda i: len(rows[i]))
    vocabulary = raw.get_output_embeddings().weight.shape[0]
    chunks: list[list[int]] = [[]]
    for i in order:  # shortest first: a chunk's last row is its widest
        if chunks[-1] and (len(chunks[-1]) >= batch_size or (len(chunks[-1]) + 1) * len(rows[i]) * vocabulary > SCORING_LOGITS):
            chunks.append([])
        chunks[-1].append(i)
    scored: list[ScoredTokens | None] = [None] * len(rows)
    for chunk in chunks:
        lengths = torch.tensor([len(rows[i]) for i in chunk])
        input_ids = torch.full((len(chunk), int(lengths.max())), pad_token_id(model), dtype=torch.long)
        for j, i in enumerate(chunk):
            input_ids[j, : len(rows[i])] = torch.tensor(list(rows[i]))
        attention_mask = (torch.arange(input_ids.shape[1])[None] < lengths[:, None]).long()
        with steer_raw_layers(model, _row_terms([steering[i] for i in chunk], device), strategy, lengths.to(device)):
            logits = raw(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device)).logits
        for j, i in enumerate(chunk):
            logp = logits[j, : len(rows[i])].float().log_softmax(-1)
            chosen = logp[:-1].gather(1, input_ids[j, 1 : len(rows[i]), None].to(device))[:, 0].tolist()
            best = logp.topk(max(top_k, 1), dim=-1)
            tops = [list(zip(t[:top_k], v[:top_k])) for t, v in zip(best.indices.tolist(), best.values.tolist())]
            scored[i] = ScoredTokens(list(rows[i]), [None, *chosen], [None, *tops[:-1]], best.indices[-1, 0].item(),
                                     best.values[-1, 0].item(), tops[-1])
    return scored


def pad_token_id(model) -> int:
    pad = model.tokenizer.pad_token_id
    return pad if pad is not None else model.tokenizer.eos_token_id


def left_pad(tokens: Sequence[Sequence[int]], pad: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(input_ids, attention_mask)``, padded on the left: every row's next token is in the same column."""
    width = max(len(t) for t in tokens)
    input_ids = torch.full((len(tokens), width), pad, dtype=torch.long)
    attention_mask = torch.zeros((len(tokens), width), dtype=torch.long)
    for row, ids in enumerate(tokens):
        input_ids[row, width - len(ids) :] = torch.tensor(list(ids), dtype=torch.long)
        attention_mask[row, width - len(ids) :] = 1
    return input_ids, attention_mask


CACHE_BUCKET = 256


def generation_config(model, max_new_tokens: int, sampling: Sampling = GREEDY, stop_at_eos: bool = True,
                      compile: bool = False, compile_all_devices: bool = False, prompt_width: int = 0,
                      stop_strings: Sequence[str] = ()):
    """transformers' settings for one engine call (the benchmark's plain baseline uses the same).

    ``compile``: a static cache and ``CompileConfig`` (reduce-overhead: CUDA graphs). transformers
    compiles the decode step on accelerators only; ``compile_all_devices`` forces it elsewhere (tests).
    The cache length is rounded up to a multiple of ``CACHE_BUCKET`` so that calls with slightly
    different prompt widths or token budgets reuse one compiled step instead of recompiling."""
    if max_new_tokens < 1:
        raise BipoLensError(f"--max-new-tokens must be at least 1, got {max_new_tokens}")
    from transformers import CompileConfig

    sample = sampling.temperature > 0
    compiled = {}
    if compile:
        config = CompileConfig(fullgraph=False, dynamic=False, mode="reduce-overhead")
        if compile_all_devices:
            config._compile_all_devices = True
        bucketed = round_up(prompt_width + max_new_tokens, CACHE_BUCKET)
        compiled = dict(cache_implementation="static", compile_config=config, max_cache_len=bucketed)
    return GenerationConfig(
        max_new_tokens=max_new_tokens, do_sample=sample, temperature=sampling.temperature if sample else None,
        top_p=sampling.top_p if sample else None, top_k=None, eos_token_id=stop_token_ids(model),
        pad_token_id=pad_token_id(model), min_new_tokens=None if stop_at_eos else max_new_tokens,
        stop_strings=list(stop_strings) or None, **compiled,
    )


class _RowStreamer:
    """transformers' streamer interface for a batch: each step's tokens go to ``on_token(row, id)``
    with the caller's row numbers (the first ``put`` is the prompt, which is skipped)."""

    def __init__(self, rows: list[int], on_token: Callable[[int, int], None]):
        self.rows, self.on_token, self.prompt_seen = rows, on_token, False

    def put(self, value: torch.Tensor) -> None:
        if not self.prompt_seen:
            self.prompt_seen = True
            return
        for row, token in zip(self.rows, value.reshape(-1).tolist()):
            self.on_token(row, token)

    def end(self) -> None:
        pass


def _generate_chunk(model, tokens: list[list[int]], steering: list[RowSteering], strategy: TokenStrategy,
                    max_new_tokens: int, sampling: Sampling, seed_offset: int, stop_at_eos: bool = True,
                    streamer=None, compile: bool = False, stop_strings: Sequence[str] = ()) -> list[str]:
    raw = model.lens_raw
    device = next(raw.parameters()).device
    pad = pad_token_id(model)
    input_ids, attention_mask = left_pad(tokens, pad)
    width = input_ids.shape[1]
    terms = _row_terms(steering, device)
    stops = stop_token_ids(model)
    config = generation_config(model, max_new_tokens, sampling, stop_at_eos, compile, prompt_width=width,
                               stop_strings=stop_strings)
    prompt_lengths = attention_mask.sum(1).to(device)
    with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
            steer_raw_layers(model, terms, strategy, prompt_lengths):
        torch.manual_seed(sampling.seed + seed_offset)
        output = raw.generate(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
                              generation_config=config, streamer=streamer,
                              tokenizer=model.tokenizer if stop_strings else None)
    answers = []
    for row in output[:, width:].tolist():
        cut = next((i for i, t in enumerate(row) if t in stops), len(row)) if stop_at_eos else len(row)
        answers.append(cut_at_stop(model.tokenizer.decode(row[:cut], skip_special_tokens=True), stop_strings).strip())
    return answers


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> str:
    """``text`` up to where one of ``stop_strings`` first begins (all of it where none occurs)."""
    return text[: min((i for i in (text.find(s) for s in stop_strings) if i >= 0), default=len(text))]


def generate(
    model,
    question: str,
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[float],
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
    sampling: Sampling = GREEDY,
) -> list[str]:
    """Answers to one question, one per multiplier (every vector scaled by it), in one batch."""
    return generate_grid(model, [question], vectors, multipliers, strategy, max_new_tokens, system_prompt,
                         sampling)[0]


def generate_grid(
    model,
    questions: Sequence[str],
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[float],
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
    sampling: Sampling = GREEDY,
    batch_size: int = 64,
) -> list[list[str]]:
    """``answers[q][m]``: every question under every multiplier (each scaling all ``vectors``), as
    one batched workload. The evaluation's shape: held-out questions x a multiplier sweep."""
    system = DEFAULT_SYSTEM_PROMPT if system_prompt is None else system_prompt
    prompts = [build_prompt(model, q, system) for q in questions]
    rows = [(p, [(v, m) for v in vectors]) for p in prompts for m in multipliers]
    flat = generate_batch(model, [p for p, _ in rows], [s for _, s in rows], strategy, max_new_tokens, sampling,
                          batch_size)
    k = len(multipliers)
    return [flat[i * k : (i + 1) * k] for i in range(len(questions))]


def generate_samples(
    model,
    questions: Sequence[str],
    vectors: Sequence[SteeringVector],
    multipliers: Sequence[float],
    n: int,
    sampling: Sampling,
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 48,
    system_prompt: str | None = None,
    batch_size: int = 64,
) -> list[list[list[str]]]:
    """``samples[q][m]``: ``n`` sampled answers per question and multiplier, all in one batched
    workload (each copy of a row draws its own tokens), so a result can report its spread. The
    same arguments and seed give the same samples."""
    if n < 1 or sampling.temperature <= 0:
        raise BipoLensError(f"n samples need n >= 1 and a temperature > 0 (got n {n}, temperature {sampling.temperature})")
    flat = generate_grid(model, [q for q in questions for _ in range(n)], vectors, multipliers, strategy,
                         max_new_tokens, system_prompt, sampling, batch_size)
    return [[[flat[q * n + k][m] for k in range(n)] for m in range(len(multipliers))] for q in range(len(questions))]


def generate_stream(
    model,
    prompt: str,
    steering: RowSteering,
    strategy: TokenStrategy = TokenStrategy(),
    max_new_tokens: int = 256,
    sampling: Sampling = GREEDY,
) -> Iterator[str]:
    """One steered answer as it is generated: text pieces, as transformers' streamer decodes them."""
    import threading

    from transformers import TextIteratorStreamer

    for vector, _ in steering:
        vector.check_compatible(model)
    raw = model.lens_raw
    device = next(raw.parameters()).device
    input_ids = torch.tensor([tokenize_prompt(model, prompt)], device=device)
    streamer = TextIteratorStreamer(model.tokenizer, skip_prompt=True, skip_special_tokens=True)
    terms = [(v.layer, v.vector, float(m)) for v, m in steering if m != 0]
    failure: list[BaseException] = []

    def run() -> None:
        try:
            with torch.no_grad(), torch.random.fork_rng(devices=[device] if device.type == "cuda" else []), \
                    steer_raw_layers(model, terms, strategy, torch.tensor([input_ids.shape[1]], device=device)):
                torch.manual_seed(sampling.seed)
                raw.generate(input_ids=input_ids, attention_mask=torch.ones_like(input_ids),
                             generation_config=generation_config(model, max_new_tokens, sampling), streamer=streamer)
        except BaseException as e:  # surfaced in the caller's thread
            failure.append(e)
            streamer.end()

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    yield from streamer
    worker.join()
    if failure:
        raise failure[0]
