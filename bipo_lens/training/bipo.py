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

import torch
import torch.nn.functional as F
from jaxtyping import Float
from torch import Tensor
from tqdm.auto import tqdm

from bipo_lens import distributed
from bipo_lens.errors import BipoLensError
from bipo_lens.models import check_layer, info
from bipo_lens.pairs import PreferencePair, fingerprint
from bipo_lens.activations import device_of, response_deltas
from bipo_lens.training.checkpoint import (HeldInterrupts, TrainingInterrupted, TrainingState, load_checkpoint,
                                          save_checkpoint)
from bipo_lens.tokens import RESPONSE_FORMATS, encode_pairs
from bipo_lens.scoring import FastPath, PairScorer
from bipo_lens.vectors import SteeringVector

LOSSES = ("bipo", "activation_margin")


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
    response_format: str = "eot"  # see tokens.encode_pairs
    seed: int = 0
    patience: int | None = None  # early stopping: epochs without a lower held-out loss (needs test pairs)

    def __post_init__(self) -> None:
        checks = {
            "epochs": self.epochs >= 1, "batch_size": self.batch_size >= 1, "lr": 0 < self.lr < math.inf,
            "beta": 0 < self.beta < math.inf, "weight_decay": 0 <= self.weight_decay < math.inf,
            "warmup_steps": self.warmup_steps >= 0, "margin": math.isfinite(self.margin),
            "max_response_tokens": self.max_response_tokens is None or self.max_response_tokens >= 1,
            "patience": self.patience is None or self.patience >= 1,
        }
        bad = [name for name, ok in checks.items() if not ok]
        if bad:
            raise BipoLensError(", ".join(f"invalid {name}: {getattr(self, name)!r}" for name in bad))
        if self.response_format not in RESPONSE_FORMATS:
            raise BipoLensError(f"unknown response format {self.response_format!r}: use {', '.join(RESPONSE_FORMATS)}")
        if self.loss not in LOSSES:
            raise BipoLensError(f"unknown loss {self.loss!r}: use {', '.join(LOSSES)}")

    @classmethod
    def for_loss(cls, loss: str, **overrides) -> "BipoConfig":
        """Defaults of the chosen loss (the activation-margin variant's are wisent-guard's)."""
        defaults = {"epochs": 100, "lr": 0.01, "weight_decay": 0.0} if loss == "activation_margin" else {}
        return cls(**{**defaults, "loss": loss, **{k: v for k, v in overrides.items() if v is not None}})


def cosine_with_warmup(step: int, total: int, warmup: int) -> float:
    """LR factor: linear warm-up, then cosine decay to 0 at ``total``."""
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, total - warmup)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def train_bipo(
    model,
    pairs: list[PreferencePair],
    layer: int,
    config: BipoConfig | None = None,
    test_pairs: list[PreferencePair] | None = None,
    fast: FastPath = FastPath(),
    cache_budget_bytes: int | None = 2 << 30,
    host_budget_bytes: int | None = None,
    progress: bool = True,
    checkpoint_dir: str | Path | None = None,
    resume: bool = False,
    **overrides,
) -> SteeringVector:
    """Train a BiPO vector at ``blocks.{layer}.hook_resid_post``.

    ``config`` (or keyword overrides such as ``epochs=5, lr=5e-3``) defaults to the paper's
    hyper-parameters. The returned vector's ``history`` has one entry per epoch: mean loss, vector
    norm, seconds, and, with ``test_pairs``, ``reward_accuracy`` (and with ``patience`` also
    ``held_out_loss``; see :func:`held_out_metrics`).

    With ``patience`` (and ``test_pairs``) training stops once the held-out loss has not fallen for
    that many epochs, and the vector of the epoch with the lowest held-out loss is returned (its
    ``hyperparameters`` name ``best_epoch`` and ``epochs_run``): a converged vector, not the last one.

    With ``checkpoint_dir`` a checkpoint is written after every epoch and on Ctrl-C (at the end of the
    step in progress: :class:`~bipo_lens.training.checkpoint.HeldInterrupts`); ``resume``
    continues from it and ends with the vector an uninterrupted run would have given. A non-finite
    loss stops training with an error and leaves the last good checkpoint in place. The pairs' layer-L
    activations are cached on the device up to ``cache_budget_bytes``; beyond it, on a GPU, in pinned
    CPU memory up to ``host_budget_bytes`` (default: half the free RAM), streamed per batch; beyond
    that they are recomputed each step (:func:`bipo_lens.scoring.cache_tier`).

    Under ``torchrun`` (``WORLD_SIZE`` > 1) each step's batch is split over the ranks: every rank
    draws the same order and the same ``d`` (one seed), scores its share, and the vector's gradient
    is summed over ranks, so N processes take the steps one process would (same vector up to float
    rounding). Rank 0 alone writes checkpoints, which resume with any number of ranks.
    """
    config = config or BipoConfig.for_loss(overrides.pop("loss", "bipo"), layer=layer, **overrides)
    if config.layer != layer:
        raise BipoLensError(f"layer {layer} given, but the config says layer {config.layer}")
    check_layer(model, layer)
    if not pairs:
        raise BipoLensError("no training pairs")
    if config.patience is not None and (config.loss != "bipo" or not test_pairs):
        raise BipoLensError("early stopping (patience) needs the bipo loss and held-out pairs (--test-fraction)")
    torch.manual_seed(config.seed)
    rng = random.Random(config.seed)
    device = device_of(model)
    distributed.init_from_env(device)
    world, rank = distributed.world_size(), distributed.rank()
    writes = checkpoint_dir is not None and distributed.is_main()
    # Before any forward pass: a checkpoint of another run, or one not asked to resume, is one line now.
    identity = {**asdict(config), "data": fingerprint(pairs), "test_data": fingerprint(test_pairs or [])}
    state = None
    if checkpoint_dir is not None:
        state = load_checkpoint(checkpoint_dir, identity)
        if state is not None and not resume:
            raise BipoLensError(f"{checkpoint_dir} holds a checkpoint of this run: pass --resume to continue it, "
                                "or use another --checkpoint-dir")
    encoded = encode_pairs(model, pairs, config.max_response_tokens, response_format=config.response_format)
    vector = torch.nn.Parameter(torch.zeros(info(model).d_model, device=device))
    optimizer = torch.optim.AdamW([vector], lr=config.lr, weight_decay=config.weight_decay)
    steps_per_epoch = math.ceil(len(pairs) / config.batch_size)
    total = steps_per_epoch * config.epochs
    warmup = min(config.warmup_steps, max(1, total // 10))  # the paper's 100, clipped to short runs
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda s: cosine_with_warmup(s, total, warmup))

    if config.loss == "bipo":
        scorer = PairScorer(model, encoded, layer, fast, cache_budget_bytes, host_budget_bytes)
        test_scorer = (
            PairScorer(model, encode_pairs(model, test_pairs, config.max_response_tokens, response_format=config.response_format), layer, fast,
                        cache_budget_bytes, host_budget_bytes) if test_pairs else None
        )
        step_loss = lambda batch: _bipo_loss(scorer, batch, vector, config.beta, rng, world, rank)  # noqa: E731
    else:
        deltas = response_deltas(model, encoded, layer).float()  # the vector is float32 whatever the model
        test_scorer = None

        def step_loss(batch: list[int]) -> Tensor:  # this rank's share of the batch's mean loss
            return F.relu(config.margin - deltas[batch[rank::world]] @ vector).sum() / len(batch)

    history, first_epoch, best = [], 0, None  # best: the lowest held-out loss so far (early stopping)
    if state is not None:
        vector.data.copy_(state.vector.to(device))
        optimizer.load_state_dict(state.optimizer)
        scheduler.load_state_dict(state.scheduler)
        rng.setstate(state.random_state)
        history, first_epoch, best = list(state.history), state.epoch, state.best

    def snapshot(epoch: int, step: int, order: list[int], losses: list[float], random_state) -> TrainingState:
        return TrainingState(vector.detach().cpu().clone(), optimizer.state_dict(), scheduler.state_dict(),
                             random_state, epoch, step, list(order), list(losses), list(history), identity, best)

    bar = tqdm(total=total, initial=first_epoch * steps_per_epoch + (state.step_in_epoch if state else 0),
               desc=f"{config.loss} layer {layer}", disable=not (progress and distributed.is_main()), leave=False)
    with HeldInterrupts(checkpoint_dir is not None, device) as interrupts:  # Ctrl-C waits for the step to end
        for epoch in range(first_epoch, config.epochs):
            epoch_started = time.perf_counter()
            if state is not None and state.epoch == epoch and state.order:
                order, losses, first_step = list(state.order), list(state.losses), state.step_in_epoch
            else:
                order = list(range(len(pairs)))
                rng.shuffle(order)
                losses, first_step = [], 0
            for step in range(first_step, steps_per_epoch):
                if interrupts.stop_here():  # at a step boundary: the checkpoint resumes to the same vector
                    state_now = snapshot(epoch, step, order, losses, rng.getstate())
                    raise TrainingInterrupted(save_checkpoint(checkpoint_dir, state_now) if writes else None)
                batch = order[step * config.batch_size : (step + 1) * config.batch_size]
                optimizer.zero_grad(set_to_none=False)
                share = step_loss(batch)  # this rank's part of the batch's mean loss (all of it alone)
                share.backward()
                loss = distributed.sum_over_ranks(share.detach().clone())
                distributed.sum_over_ranks(vector.grad)
                try:
                    optimizer.step()
                except RuntimeError as e:  # e.g. an update too large for float32
                    raise BipoLensError(f"optimiser step failed at epoch {epoch + 1}, step {step + 1} ({e}): "
                                        "try a lower learning rate") from None
                scheduler.step()
                # The step's one wait for the device: until here a GPU runs ahead of Python. A
                # non-finite loss also made the update non-finite, so it is reported first.
                finite = torch.isfinite(vector.detach()).all().float()
                loss_value, norm, finite = torch.stack([loss, vector.detach().norm(), finite]).tolist()
                kept = " (the last good checkpoint is kept)" if checkpoint_dir else ""
                if not math.isfinite(loss_value):
                    raise BipoLensError(f"non-finite loss at epoch {epoch + 1}, step {step + 1}: try a lower learning rate{kept}")
                if not finite:
                    raise BipoLensError(f"the vector became non-finite at epoch {epoch + 1}, step {step + 1}: try a "
                                        f"lower learning rate{kept}")
                losses.append(loss_value)
                bar.update(1)
                bar.set_postfix(loss=f"{loss_value:.4f}", norm=f"{norm:.3f}")
            record = {"epoch": epoch + 1, "loss": sum(losses) / len(losses), "norm": vector.norm().item(),
                      "seconds": round(time.perf_counter() - epoch_started, 3)}
            if test_scorer is not None:
                record.update(held_out_metrics(test_scorer, vector.detach(), config.beta, config.patience is not None))
            history.append(record)
            stop = False
            if config.patience is not None:
                if best is None or record["held_out_loss"] < best["loss"]:
                    best = {"vector": vector.detach().cpu().clone(), "loss": record["held_out_loss"], "epoch": epoch + 1}
                stop = epoch + 1 - best["epoch"] >= config.patience
            if writes:  # a stopped run's checkpoint is a finished one: --resume returns its best vector
                save_checkpoint(checkpoint_dir, snapshot(config.epochs if stop else epoch + 1, 0, [], [], rng.getstate()))
            if stop:
                break
    bar.close()
    stopping = {"best_epoch": best["epoch"], "epochs_run": len(history)} if best is not None else {}
    return SteeringVector(
        vector=best["vector"].clone() if best is not None else vector.detach().cpu().clone(),
        layer=layer,
        model_id=info(model).model_id,
        method="bipo" if config.loss == "bipo" else "bipo-activation-margin",
        hyperparameters={**asdict(config), "pairs": len(pairs), **stopping,
                         **({"fast_path": asdict(fast)} if config.loss == "bipo" else {})},
        data_fingerprint=fingerprint(pairs),
        history=history,
    )


def bipo_objective(log_ratios: Float[Tensor, "pairs 2"], d: float, beta: float) -> Float[Tensor, " pairs"]:
    """The paper's per-pair loss, -log sigmoid(d * beta * [log-ratio(matching) - log-ratio(not)]), from
    each side's log pi(r | A + d v) - log pi(r | A): what training minimises and early stopping watches."""
    return -F.logsigmoid(d * beta * (log_ratios[:, 0] - log_ratios[:, 1]))


def _bipo_loss(scorer: PairScorer, batch: list[int], vector: Tensor, beta: float, rng: random.Random,
               world: int = 1, rank: int = 0) -> Tensor:
    """This rank's share of the batch's mean BiPO loss: its pairs' losses summed over the batch size
    (summed over ranks, the mean over the whole batch). ``d`` is drawn on every rank alike."""
    d = rng.choice((-1.0, 1.0))
    share = batch[rank::world]
    if not share:  # more ranks than pairs in this (last) batch
        return vector.sum() * 0.0
    policy = scorer.logps(share, vector, d)
    reference = scorer.reference_logps(share)
    return bipo_objective(policy - reference, d, beta).sum() / len(batch)


@torch.no_grad()
def held_out_metrics(scorer: PairScorer, vector: Tensor, beta: float, with_loss: bool = True,
                     batch_size: int = 8) -> dict[str, float]:
    """On held-out pairs: ``reward_accuracy``, DPO's implicit-reward accuracy (trl's
    ``rewards/accuracies``): the fraction of pairs whose log-ratio to the reference under ``+v`` is
    larger for the matching response than for the not-matching one; lenient next to the
    evaluation's ``preference_accuracy`` (matching more likely than not-matching, absolutely), since
    both responses may lose probability. ``with_loss`` adds ``held_out_loss``: the BiPO loss averaged
    over both directions d = +1 and -1 (the objective's expectation over d; what early stopping
    watches). It costs a second pass, under ``-v``, so only early stopping asks for it."""
    count = len(scorer.sequences) // 2
    wins, loss = 0, 0.0
    for start in range(0, count, batch_size):
        part = list(range(start, min(count, start + batch_size)))
        reference = scorer.reference_logps(part)
        for d in (1.0, -1.0) if with_loss else (1.0,):
            ratios = scorer.logps(part, vector, d) - reference
            loss += float(bipo_objective(ratios, d, beta).sum()) / 2
            if d > 0:
                wins += int((ratios[:, 0] > ratios[:, 1]).sum())
    return {"held_out_loss": loss / count, "reward_accuracy": wins / count} if with_loss else \
        {"reward_accuracy": wins / count}
