"""BiPO (Cao et al. 2024, Algorithm 1) with a fast path and the naive reference path.

Each step draws ``d`` from {-1, +1} and minimises, over a batch of pairs,

    -log sigmoid(d * beta * [log pi(r_T | A_L + d v) / pi(r_T | A_L) - log pi(r_O | A_L + d v) / pi(r_O | A_L)])

where log-probabilities are summed over response tokens and the reference is the same model without
the vector. The vector is added at every position of ``blocks.{L}.hook_resid_post``.

The naive path (``FastPath.naive()``) is what the paper's implementation computes each step: a full
hooked forward of the steered model and a full forward of the reference, logits at every position.
The fast path computes the same numbers with less work; each saving is a switch of :class:`FastPath`.
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import einops
import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bipo_lens.errors import BipoLensError
from bipo_lens.models import check_layer, info, packing_allowed, run_from_layer, unembed
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.steering import add_steering, steer_tensors
from bipo_lens.training.activations import MAX_ROW_TOKENS, device_of, pair_residuals, response_deltas
from bipo_lens.training.checkpoint import TrainingState, load_checkpoint, save_checkpoint
from bipo_lens.training.data import Sequence, TokenBatch, encode_pairs, make_batch, make_packed_batch
from bipo_lens.vectors import SteeringVector

LOSSES = ("bipo", "activation_margin")


@dataclass(frozen=True)
class FastPath:
    """Switches for the savings over the naive loop; all on by default, all off is the naive path."""

    reference_once: bool = True  # reference log-probs never change: compute them once
    prefix_cache: bool = True  # blocks 0..L do not see the vector: run them once per pair
    response_logits_only: bool = True  # unembed only where a response token is predicted
    share_prompt: bool = True  # one row per pair: the prompt once, both responses after it

    @classmethod
    def naive(cls) -> "FastPath":
        return cls(False, False, False, False)

    @property
    def split(self) -> bool:
        """Run blocks after L on their own (every saving but ``reference_once`` needs this)."""
        return self.prefix_cache or self.response_logits_only or self.share_prompt


@dataclass(frozen=True)
class BipoConfig:
    layer: int
    epochs: int = 10
    lr: float = 5e-4
    beta: float = 0.1
    batch_size: int = 4
    weight_decay: float = 0.05
    warmup_steps: int = 100
    loss: str = "bipo"
    margin: float = 1.0  # activation_margin only
    max_response_tokens: int | None = 64
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": 0 < self.lr < math.inf,
            "beta": 0 < self.beta < math.inf, "weight_decay": 0 <= self.weight_decay < math.inf,
            "warmup_steps": self.warmup_steps >= 0, "margin": math.isfinite(self.margin),
            "max_response_tokens": self.max_response_tokens is None or self.max_response_tokens >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise BipoLensError(", ".join(f"invalid {name}: {getattr(self, name)!r}" for name in bad))
        if self.loss not in LOSSES:
            raise BipoLensError(f"unknown loss {self.loss!r}: use {', '.join(LOSSES)}")

    @classmethod
    def for_loss(cls, loss: str, **overrides) -> "BipoConfig":
        """Defaults of the chosen loss (the activation-margin variant's are wisent-guard's)."""
        if loss not in LOSSES:
            raise BipoLensError(f"unknown loss {loss!r}: use {', '.join(LOSSES)}")
        defaults = {"epochs": 100, "lr": 0.01, "weight_decay": 0.0} if loss == "activation_margin" else {}
        return cls(**{**defaults, "loss": loss, **{k: v for k, v in overrides.items() if v is not None}})


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


class _PairScorer:
    """Summed response log-probs of every sequence of a set of pairs, under ``d * v``."""

    def __init__(self, model, encoded: list[tuple[Sequence, Sequence]], layer: int, fast: FastPath,
                 cache_budget_bytes: int | None):
        self.model, self.layer, self.fast = model, layer, fast
        self.encoded = encoded
        self.sequences = [seq for pair in encoded for seq in pair]  # 2i: matching, 2i+1: not
        self.device = device_of(model)
        self.pad = model.tokenizer.pad_token_id or 0
        self.cached: list[Tensor] | None = None
        if fast.prefix_cache and self.cache_bytes() <= (cache_budget_bytes or float("inf")):
            self.cached = pair_residuals(model, encoded, layer)
        self.reference = self.logps(range(len(encoded)), None, 0.0).detach() if fast.reference_once else None

    def cache_bytes(self) -> int:
        element = torch.finfo(next(self.model.original_model.parameters()).dtype).bits // 8
        return sum(len(s.ids) for s in self.sequences) * info(self.model).d_model * element

    def reference_logps(self, pair_indices) -> Float[Tensor, "pairs 2"]:
        if self.reference is not None:
            return self.reference[list(pair_indices)]
        with torch.no_grad():
            return self.logps(pair_indices, None, 0.0)

    def logps(self, pair_indices, vector: Tensor | None, d: float) -> Float[Tensor, "pairs 2"]:
        """Per pair: (log p(matching), log p(not_matching)), each summed over response tokens."""
        indices = list(pair_indices)
        out = []
        chunk = 8 if vector is None else len(indices)  # reference passes: bounded memory
        for start in range(0, len(indices), chunk):
            part = indices[start : start + chunk]
            forward = self._split_forward if self.fast.split else self._hooked_forward
            batch, logprobs = forward(part, vector, d)
            per_slot = torch.zeros(batch.n_slots, device=self.device, dtype=logprobs.dtype)
            per_slot = per_slot.index_add(0, batch.target_slots, logprobs)
            out.append(einops.rearrange(per_slot, "(pairs side) -> pairs side", side=2))
        return torch.cat(out)

    def _hooked_forward(self, part: list[int], vector: Tensor | None, d: float) -> tuple[TokenBatch, Tensor]:
        """The naive path, as the paper's trl-based code computes it: a full forward through the
        steering hook, log-softmax at every position, then the response tokens' log-probs."""
        batch = make_batch([self.sequences[j] for j in _sides(part)], self.pad, self.device)
        if vector is None:
            logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        else:
            with steer_tensors(self.model, [(self.layer, vector, d)]):
                logits = self.model(batch.tokens, attention_mask=batch.attention_mask)
        logprobs = logits.log_softmax(-1)[batch.target_rows, batch.target_positions]
        return batch, logprobs.gather(-1, batch.targets[:, None])[:, 0]

    def _split_forward(self, part: list[int], vector: Tensor | None, d: float) -> tuple[TokenBatch, Tensor]:
        """Residual at layer L (cached, or recomputed without grad) + d v, then only the later blocks."""
        sequences = [self.sequences[j] for j in _sides(part)]
        pairs = [self.encoded[i] for i in part]
        if self.cached is not None:
            resids = [self.cached[j] for j in _sides(part)]
        else:
            resids = pair_residuals(self.model, pairs, self.layer)
        if self.fast.share_prompt and packing_allowed(self.model, MAX_ROW_TOKENS):
            batch = make_packed_batch(pairs, self.pad, self.device, MAX_ROW_TOKENS)
            segments = [torch.cat([rm[: len(m.ids)], rn[m.prompt_len :]])
                        for (m, _), rm, rn in zip(pairs, resids[0::2], resids[1::2])]
            rows = [torch.cat([segments[i] for i in members]) for members in batch.packing]
        else:
            batch, rows = make_batch(sequences, self.pad, self.device), resids
        resid = torch.nn.utils.rnn.pad_sequence(rows, batch_first=True)
        if vector is not None:
            resid = add_steering(resid, vector, d)
        hidden = run_from_layer(self.model, resid, self.layer, batch.attention_mask, batch.position_ids)
        if self.fast.response_logits_only:
            logits = unembed(self.model, hidden[batch.target_rows, batch.target_positions])
        else:
            logits = unembed(self.model, hidden)[batch.target_rows, batch.target_positions]
        return batch, logits.log_softmax(-1).gather(-1, batch.targets[:, None])[:, 0]


def _sides(pair_indices: list[int]) -> list[int]:
    """Sequence indices of the pairs, matching then not-matching: 2i, 2i+1."""
    return [2 * i + side for i in pair_indices for side in (0, 1)]


def train_bipo(
    model,
    pairs: list[PreferencePair],
    layer: int,
    config: BipoConfig | None = None,
    test_pairs: list[PreferencePair] | None = None,
    fast: FastPath = FastPath(),
    cache_budget_bytes: int | None = 2 << 30,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **overrides,
) -> SteeringVector:
    """Train a BiPO vector at ``blocks.{layer}.hook_resid_post``.

    ``config`` (or keyword overrides such as ``epochs=5, lr=5e-3``) defaults to the paper's
    hyper-parameters. The returned vector's ``history`` has one entry per epoch: mean loss, vector
    norm, seconds, and, with ``test_pairs``, held-out preference accuracy (the fraction of test pairs
    whose implicit reward under ``+v`` favours the matching response).

    With ``checkpoint_dir`` a checkpoint is written after every epoch and on Ctrl-C; ``resume``
    continues from it and ends with the vector an uninterrupted run would have given. A non-finite
    loss stops training with an error and leaves the last good checkpoint in place. Activations
    larger than ``cache_budget_bytes`` are recomputed each step instead of cached.
    """
    config = config or BipoConfig.for_loss(overrides.pop("loss", "bipo"), layer=layer, **overrides)
    check_layer(model, layer)
    if not pairs:
        raise BipoLensError("no training pairs")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = device_of(model)
    encoded = encode_pairs(model, pairs, config.max_response_tokens)
    vector = torch.nn.Parameter(torch.zeros(info(model).d_model, device=device))
    optimizer = torch.optim.AdamW([vector], lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = min(config.warmup_steps, max(1, total // 10))  # the paper's 100, clipped to short runs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total, warmup))

    if config.loss == "bipo":
        scorer = _PairScorer(model, encoded, layer, fast, cache_budget_bytes)
        test_scorer = (
            _PairScorer(model, encode_pairs(model, test_pairs, config.max_response_tokens), layer, fast,
                        cache_budget_bytes) if test_pairs else None
        )
        step_loss = lambda batch: _bipo_loss(scorer, batch, vector, config.beta, rng)  # noqa: E731
    else:
        deltas = response_deltas(model, encoded, layer)
        test_scorer = None
        step_loss = lambda batch: F.relu(config.margin - deltas[batch] @ vector).mean()  # noqa: E731

    identity = {**asdict(config), "data": fingerprint(pairs), "test_data": fingerprint(test_pairs or [])}
    state = None
    if checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir, identity)
        if state is not None and not resume:
            raise BipoLensError(f"{checkpoint_dir} holds a checkpoint of this run: pass --resume to continue it, "
                                "or use another --checkpoint-dir")
    history, first_epoch = [], 0
    if state is not None:
        vector.data.copy_(state.vector.to(device))
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        rng.setstate(state.random_state)
        history, first_epoch = list(state.history), state.epoch

    def snapshot(epoch: int, step: int, order: list[int], losses: list[float], random_state) -> TrainingState:
        return TrainingState(vector.detach().cpu().clone(), optimizer.state_dict(), scheduler.state_dict(),
                             random_state, epoch, step, list(order), list(losses), list(history), identity)

    bar = tqdm(total=total, initial=first_epoch * steps_per_epoch + (state.step_in_epoch if state else 0),
               desc=f"{config.loss} layer {layer}", disable=not progress, leave=False)
    for epoch in range(first_epoch, config.epochs):
        epoch_started = time.perf_counter()
        if state is not None and state.epoch == epoch and state.order:
            order, losses, first_step = list(state.order), list(state.losses), state.step_in_epoch
        else:
            order = list(range(len(pairs)))
            rng.shuffle(order)
            losses, first_step = [], 0
        for step in range(first_step, steps_per_epoch):
            random_state = rng.getstate()
            try:
                batch = order[step * config.batch_size : (step + 1) * config.batch_size]
                loss = step_loss(batch)
                if not torch.isfinite(loss):
                    raise BipoLensError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: try a lower "
                                        "learning rate" + (" (the last good checkpoint is kept)" if checkpoint_dir else ""))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                try:
                    optimizer.step()
                except RuntimeError as e:  # e.g. an update too large for float32
                    raise BipoLensError(f"optimiser step failed at epoch {epoch + 1}, step {step + 1} ({e}): "
                                        "try a lower learning rate") from None
                scheduler.step()
                if not torch.isfinite(vector).all():
                    raise BipoLensError(f"the vector became non-finite at epoch {epoch + 1}, step {step + 1}: try a "
                                        "lower learning rate" + (" (the last good checkpoint is kept)" if checkpoint_dir else ""))
            except KeyboardInterrupt:
                if checkpoint_dir is not None:
                    save_checkpoint(checkpoint_dir, snapshot(epoch, step, order, losses, random_state))
                raise
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", norm=f"{vector.norm().item():.3f}")
        record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "norm": vector.norm().item(),
                  "seconds": round(time.perf_counter() - epoch_started, 3)}
        if test_scorer is not None:
            record["test_accuracy"] = preference_accuracy(test_scorer, vector.detach())
        history.append(record)
        if checkpoint_dir is not None:
            save_checkpoint(checkpoint_dir, snapshot(epoch + 1, 0, [], [], rng.getstate()))
    bar.close()
    return SteeringVector(
        vector=vector.detach().cpu().clone(),
        layer=layer,
        model_id=info(model).model_id,
        method="bipo" if config.loss == "bipo" else "bipo-activation-margin",
        hyperparameters={**asdict(config), **({"fast_path": asdict(fast)} if config.loss == "bipo" else {})},
        data_fingerprint=fingerprint(pairs),
        history=history,
    )


def _bipo_loss(scorer: _PairScorer, batch: list[int], vector: Tensor, beta: float, rng: random.Random) -> Tensor:
    d = rng.choice((-1.0, 1.0))
    policy = scorer.logps(batch, vector, d)
    reference = scorer.reference_logps(batch)
    log_ratios = policy - reference  # (pairs, side)
    return -F.logsigmoid(d * beta * (log_ratios[:, 0] - log_ratios[:, 1])).mean()


@torch.no_grad()
def preference_accuracy(scorer: _PairScorer, vector: Tensor, batch_size: int = 8) -> float:
    indices = range(len(scorer.sequences) // 2)
    wins = 0
    for start in range(0, len(indices), batch_size):
        part = list(indices[start : start + batch_size])
        ratios = scorer.logps(part, vector, 1.0) - scorer.reference_logps(part)
        wins += int((ratios[:, 0] > ratios[:, 1]).sum())
    return wins / len(indices)
