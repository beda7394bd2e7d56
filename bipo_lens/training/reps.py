"""RePS, reference-free preference steering (Wu et al. 2025, "Improved Representation Steering for
Language Models"), as the authors' code trains it (axbench's ``PreferenceModel`` with the
``scaled_simpo`` loss and the ``p_vector_dps`` configs): a baseline beside BiPO on the same pairs.

Each example gives two preference terms, each scored on its own rows (no shared prompt):

- **add**: the residual at ``blocks.{L}.hook_resid_post`` becomes ``h + (c + b) v``, ``c`` drawn from
  the steering factors {2, 4, ..., 20} separately for each sequence; winner = the matching response,
  loser = the not-matching one;
- **sub**: ``h - relu(h . v + b) / |v|^2 v`` ("null it out", :func:`bipo_lens.steering.null_out`);
  winner = the not-matching response, loser = the matching one.

Both act on every position but the first (the authors' ``exclude_bos``). Each term's loss is

    -log sigmoid(w * log pi(y_w) / |y_w| - log pi(y_l) / |y_l|),   w = max(log pi_ref(y_l) - log pi_ref(y_w), 1)

with log-probabilities summed over response tokens under the intervention, ``pi_ref`` the model
without it, and ``|y|`` the whole sequence's length, prompt included (the attention mask's sum, as
in the authors' code). No reference ratio inside the sigmoid (hence "reference-free"); the reference
only weighs the winner. ``v`` starts where ``torch.nn.Linear`` starts it (not at zero, or the sub
term's projection would divide by zero), ``b`` at 0; both trained with AdamW (lr 0.04, no weight
decay), a linear decay to 0 without warm-up, gradient norm clipped to 1, 18 epochs of batches of 6.

The saved vector is ``(c_mean + b) v`` with ``c_mean`` the mean steering factor (11): multiplier 1
is the addition at the centre of the factors it was trained at, and multipliers compare with the
other methods' on this workbench's -2..2 scale (``hyperparameters`` keep ``v``'s norm, ``b`` and
the scale).
"""

from __future__ import annotations

import math
import random
import time
from dataclasses import asdict, dataclass

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bipo_lens.activations import device_of
from bipo_lens.errors import BipoLensError
from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.scoring import FastPath, PairScorer
from bipo_lens.steering import add_steering, null_out
from bipo_lens.tokens import RESPONSE_FORMATS, encode_pairs
from bipo_lens.vectors import SteeringVector

STEERING_FACTORS = (2.0, 4.0, 6.0, 8.0, 10.0, 12.0, 14.0, 16.0, 18.0, 20.0)


@dataclass(frozen=True)
class RepsConfig:
    """The authors' ``p_vector_dps`` settings (gemma-2 configs of axbench's RePS sweep)."""

    layer: int
    epochs: int = 18
    lr: float = 0.04
    batch_size: int = 6
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    steering_factors: tuple[float, ...] = STEERING_FACTORS
    max_response_tokens: int | None = 64
    response_format: str = "eot"
    seed: int = 0

    def __post_init__(self) -> None:
        checks = {"epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": 0 < self.lr < math.inf,
                  "weight_decay": 0 <= self.weight_decay < math.inf, "max_grad_norm": self.max_grad_norm > 0,
                  "steering_factors": bool(self.steering_factors) and all(c > 0 for c in self.steering_factors),
                  "max_response_tokens": self.max_response_tokens is None or self.max_response_tokens >= 1}
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise BipoLensError(", ".join(f"invalid {name}: {getattr(self, name)!r}" for name in bad))
        if self.response_format not in RESPONSE_FORMATS:
            raise BipoLensError(f"unknown response format {self.response_format!r}: use {', '.join(RESPONSE_FORMATS)}")

    @property
    def mean_factor(self) -> float:
        return sum(self.steering_factors) / len(self.steering_factors)


def reps_objective(winner: Float[Tensor, " n"], loser: Float[Tensor, " n"], winner_len: Float[Tensor, " n"],
                   loser_len: Float[Tensor, " n"], ref_winner: Float[Tensor, " n"],
                   ref_loser: Float[Tensor, " n"]) -> Float[Tensor, " n"]:
    """The authors' ``scaled_simpo`` loss per term (``simpo_scaler`` 1, no margin)."""
    weight = torch.clamp(ref_loser - ref_winner, min=1.0)
    return -F.logsigmoid(weight / winner_len * winner - loser / loser_len)


def train_reps(model, pairs: list[PreferencePair], layer: int, config: RepsConfig | None = None,
               progress: bool = True, **overrides) -> SteeringVector:
    """Train a RePS vector at ``blocks.{layer}.hook_resid_post`` (``config`` or keyword overrides such
    as ``epochs=4``; the defaults are the authors'). ``history`` has one entry per epoch: mean loss,
    the saved vector's norm, ``b`` and seconds."""
    config = config or RepsConfig(layer=layer, **{k: v for k, v in overrides.items() if v is not None})
    if config.layer != layer:
        raise BipoLensError(f"layer {layer} given, but the config says layer {config.layer}")
    check_layer(model, layer)
    if not pairs:
        raise BipoLensError("no training pairs")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = device_of(model)
    encoded = encode_pairs(model, pairs, config.max_response_tokens, response_format=config.response_format)
    scorer = PairScorer(model, encoded, layer, FastPath(), cache_budget_bytes=None)
    reference = scorer.reference.flatten()  # unsteered log pi_ref of sequence 2i + side
    lengths = torch.tensor([float(len(s.ids)) for s in scorer.sequences], device=device)

    init = torch.nn.Linear(info(model).d_model, 1)  # the authors' PreferenceVectorIntervention.proj
    vector = torch.nn.Parameter(init.weight.detach()[0].to(device))
    bias = torch.nn.Parameter(torch.zeros((), device=device))
    optimizer = torch.optim.AdamW([vector, bias], lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: max(0.0, 1 - s / total))

    def not_first(resid: Tensor) -> Tensor:  # exclude_bos: every position but the first
        weights = torch.ones(resid.shape[:2], device=resid.device)
        weights[:, 0] = 0
        return weights

    def add(winners: list[int], losers: list[int]) -> Tensor:
        factors = torch.tensor([rng.choice(config.steering_factors) for _ in winners + losers], device=device)
        logps = scorer.sequence_logps(winners + losers,
                                      lambda h: add_steering(h, vector, factors + bias, not_first(h)))
        return terms(logps, winners, losers)

    def subtract(winners: list[int], losers: list[int]) -> Tensor:
        logps = scorer.sequence_logps(winners + losers, lambda h: null_out(h, vector, bias, not_first(h)))
        return terms(logps, winners, losers)

    def terms(logps: Tensor, winners: list[int], losers: list[int]) -> Tensor:
        n = len(winners)
        return reps_objective(logps[:n], logps[n:], lengths[winners], lengths[losers], reference[winners],
                              reference[losers])

    history = []
    bar = tqdm(total=total, desc=f"reps layer {layer}", disable=not progress, leave=False)
    for epoch in range(config.epochs):
        started = time.perf_counter()
        order = list(range(len(pairs)))
        rng.shuffle(order)
        losses = []
        for step in range(steps_per_epoch):
            batch = order[step * config.batch_size : (step + 1) * config.batch_size]
            matching, not_matching = [2 * i for i in batch], [2 * i + 1 for i in batch]
            optimizer.zero_grad()
            loss = torch.cat([add(matching, not_matching), subtract(not_matching, matching)]).mean()
            loss.backward()
            if not torch.isfinite(loss):
                raise BipoLensError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: try a lower learning rate")
            torch.nn.utils.clip_grad_norm_([vector, bias], config.max_grad_norm)
            optimizer.step()
            scheduler.step()
            losses.append(loss.item())
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.4f}", b=f"{bias.item():+.3f}")
        saved = _saved(vector, bias, config)
        history.append({"epoch": epoch + 1, "loss": sum(losses) / len(losses), "norm": saved.norm().item(),
                        "bias": bias.item(), "seconds": round(time.perf_counter() - started, 3)})
    bar.close()
    return SteeringVector(
        vector=_saved(vector, bias, config),
        layer=layer,
        model_id=info(model).model_id,
        method="reps",
        hyperparameters={**asdict(config), "pairs": len(pairs), "bias": bias.item(),
                         "unscaled_norm": vector.norm().item(), "scale": config.mean_factor + bias.item(),
                         "saved_as": "(mean steering factor + b) * v: multiplier 1 = the addition at the factors' centre"},
        data_fingerprint=fingerprint(pairs),
        history=history,
    )


def _saved(vector: Tensor, bias: Tensor, config: RepsConfig) -> Tensor:
    return ((config.mean_factor + bias) * vector).detach().float().cpu().clone()
